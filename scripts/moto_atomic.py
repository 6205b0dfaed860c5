"""moto's S3 server with its conditional writes made atomic, as S3's are.

moto checks a PUT's or DELETE's If-Match / If-None-Match and then writes, holding nothing in
between. Served by threads, two conditional PUTs against the same ETag can both pass the check,
and one update is lost (seen as a lost increment in the registry's conformance test). Real S3
does not do that. This runs moto's own server with one lock around object writes and deletes,
so the tests of conditional writes test the project, not the emulator. Arguments are
moto_server's.
"""
import sys
import threading

from moto.s3.responses import S3Response

_lock = threading.Lock()


def _atomic(method):
    def run(self, *args, **kwargs):
        with _lock:
            return method(self, *args, **kwargs)

    return run


S3Response.put_object = _atomic(S3Response.put_object)
S3Response.delete_object = _atomic(S3Response.delete_object)

from moto.server import main  # noqa: E402  (after the patch, so the server serves it)

main(sys.argv[1:])
