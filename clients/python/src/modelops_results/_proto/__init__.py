"""gRPC stubs for the registry, attribution and indexer services.

The modules under ``modelops_results/_proto/modelops/`` are generated from the repository's
``proto/`` directory by ``grpc_tools.protoc`` when the package is built (see ``setup.py``), with
their ``modelops.*`` imports rewritten to ``modelops_results._proto.modelops.*`` so they never
clash with another ``modelops`` package. They are not in git.
"""

try:
    from .modelops.attribution.v1 import attribution_pb2, attribution_pb2_grpc
    from .modelops.indexer.v1 import indexer_pb2, indexer_pb2_grpc
    from .modelops.registry.v1 import registry_pb2, registry_pb2_grpc
except ModuleNotFoundError as e:  # pragma: no cover - only in a source tree that was never built
    if not (e.name or "").startswith(__name__):
        raise
    raise ImportError(
        "modelops_results: the gRPC stubs are missing. They are generated from the repository's "
        "proto/ directory when the package is installed: run `pip install ./clients/python` (or "
        "`pip install -e ./clients/python`) instead of importing the source tree directly."
    ) from e

__all__ = [
    "attribution_pb2",
    "attribution_pb2_grpc",
    "indexer_pb2",
    "indexer_pb2_grpc",
    "registry_pb2",
    "registry_pb2_grpc",
]
