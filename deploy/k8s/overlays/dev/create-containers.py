"""Creates the blob containers the dev overlay uses in Azurite, then exits (run as an init container).

object_store does not create containers, so something must before mops writes. Reads the same
AZURE_STORAGE_CONNECTION_STRING as mops, signs Create Container requests with the account key
(Shared Key), and treats "already exists" as success, so it can run at every pod start. Waits for
Azurite to answer for up to WAIT_SECONDS. Python standard library only.
"""

import base64
import hashlib
import hmac
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from email.utils import formatdate

API_VERSION = "2021-08-06"


def parse_connection_string(text):
    parts = {}
    for part in text.split(";"):
        if "=" in part:
            key, value = part.split("=", 1)
            parts[key.strip()] = value.strip()
    return parts


def create_container(endpoint, account, key, name):
    url = f"{endpoint.rstrip('/')}/{name}?restype=container"
    path = urllib.parse.urlsplit(url).path
    date = formatdate(usegmt=True)
    # urllib would add a form Content-Type to a request with a body; an explicit one is signed.
    content_type = "application/octet-stream"
    headers = {"x-ms-date": date, "x-ms-version": API_VERSION, "Content-Length": "0", "Content-Type": content_type}
    canonical_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(h for h in headers if h.startswith("x-ms-")))
    # Verb, Content-Encoding, Content-Language, Content-Length (empty when 0), Content-MD5, Content-Type,
    # Date, If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since, Range; then headers, resource.
    fields = ["PUT", "", "", "", "", content_type, "", "", "", "", "", ""]
    to_sign = "\n".join(fields) + "\n" + canonical_headers + f"/{account}{path}\nrestype:container"
    signature = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
    request = urllib.request.Request(url, data=b"", method="PUT", headers={**headers, "Authorization": f"SharedKey {account}:{signature}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return f"created ({response.status})"
    except urllib.error.HTTPError as e:
        if e.code == 409:
            return "exists"
        raise RuntimeError(f"creating container {name}: HTTP {e.code}: {e.read().decode(errors='replace')}") from e


def main():
    conn = parse_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    endpoint, account, key = conn["BlobEndpoint"], conn["AccountName"], conn["AccountKey"]
    names = os.environ.get("CONTAINERS", "results").split()
    deadline = time.monotonic() + float(os.environ.get("WAIT_SECONDS", "300"))
    for name in names:
        while True:
            try:
                print(f"container {name}: {create_container(endpoint, account, key, name)}", flush=True)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                if time.monotonic() > deadline:
                    sys.exit(f"Azurite at {endpoint} did not answer: {e}")
                print(f"waiting for Azurite at {endpoint}: {e}", flush=True)
                time.sleep(2)


if __name__ == "__main__":
    main()
