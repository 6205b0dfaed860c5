"""Build hook: generates the gRPC stubs of the registry, attribution and indexer services.

The stubs are generated with ``grpc_tools.protoc`` from the repository's ``proto/`` directory
(``../../proto`` from here; an sdist carries a copy in ``./proto``; ``$MODELOPS_PROTO_DIR``
overrides both) into ``modelops_results/_proto/``: into the build directory for a wheel, into
the source tree for an editable install (that copy is git-ignored). protoc writes absolute
imports (``from modelops.registry.v1 import registry_pb2``); they are rewritten to
``modelops_results._proto.modelops...`` so the stubs live entirely inside this package.

Everything else is declared in pyproject.toml.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
PACKAGE = "modelops_results"
STUB_PACKAGE = f"{PACKAGE}._proto"
PROTOS = [
    "modelops/registry/v1/registry.proto",
    "modelops/attribution/v1/attribution.proto",
    "modelops/indexer/v1/indexer.proto",
]


def proto_root() -> Path:
    """The directory holding ``modelops/*/v1/*.proto``."""
    candidates = []
    if os.environ.get("MODELOPS_PROTO_DIR"):
        candidates.append(Path(os.environ["MODELOPS_PROTO_DIR"]))
    candidates += [HERE.parent.parent / "proto", HERE / "proto"]
    for root in candidates:
        if all((root / proto).is_file() for proto in PROTOS):
            return root.resolve()
    raise SystemExit(
        "modelops-results: cannot find the .proto files (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); build from a checkout of the repository or set MODELOPS_PROTO_DIR"
    )


_IMPORT = re.compile(r"^(\s*)(from|import) modelops\.", re.M)


def generate_stubs(package_dir: Path) -> list[Path]:
    """Generates the stubs into ``package_dir/_proto/modelops/...``; returns the files written."""
    try:
        from grpc_tools import protoc
    except ImportError:
        raise SystemExit(
            "modelops-results: building needs grpcio-tools (pip install grpcio-tools, "
            "or let pip install it with build isolation)"
        ) from None
    root = proto_root()
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    out_root = package_dir / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(root / proto) for proto in PROTOS],
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"modelops-results: protoc failed on {root}")
        generated = Path(tmp) / "modelops"
        target = out_root / "modelops"
        if target.exists():
            shutil.rmtree(target)
        written = []
        for source in sorted(generated.rglob("*")):
            if not source.is_file():
                continue
            destination = target / source.relative_to(generated)
            destination.parent.mkdir(parents=True, exist_ok=True)
            text = _IMPORT.sub(rf"\1\2 {STUB_PACKAGE}.modelops.", source.read_text(encoding="utf-8"))
            destination.write_text(text, encoding="utf-8")
            written.append(destination)
    # Regular packages, so that the stubs are importable and packaged everywhere.
    for directory in [target, *sorted(p for p in target.rglob("*") if p.is_dir())]:
        init = directory / "__init__.py"
        init.write_text("")
        written.append(init)
    return written


class BuildPyWithStubs(build_py):
    """``build_py`` that also generates the gRPC stubs."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            # Editable installs import from src/: generate there (git-ignored).
            package_dir = HERE / "src" / PACKAGE
        else:
            package_dir = Path(self.build_lib) / PACKAGE
        self._stubs = generate_stubs(package_dir)
        self.announce(f"generated {len(self._stubs)} gRPC stub files under {package_dir / '_proto'}", level=2)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return list(super().get_outputs(include_bytecode)) + [str(p) for p in getattr(self, "_stubs", [])]


class SdistWithProtos(sdist):
    """``sdist`` that carries the .proto files, so the sdist builds outside the repository."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        root = proto_root()
        for proto in PROTOS:
            destination = Path(base_dir) / "proto" / proto
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / proto, destination)


def runtime_requirements() -> list[str]:
    """pyarrow, pandas, fsspec, and grpcio/protobuf at least as new as the generated code needs."""
    # fsspec: the provenance record writer (modelops_results.store); adlfs/s3fs are extras.
    requirements = ["pyarrow>=14", "pandas>=1.5", "fsspec>=2023.1"]
    grpcio, protobuf = "grpcio>=1.62", "protobuf>=4.25"
    try:
        from importlib.metadata import requires, version

        # Stubs from grpcio-tools X refuse to load under grpcio < X.
        grpcio = f"grpcio>={version('grpcio-tools')}"
        # And the protobuf gencode needs the runtime grpcio-tools itself requires.
        for requirement in requires("grpcio-tools") or []:
            match = re.match(r"protobuf\b[^;]*?>=\s*([0-9][^,;\s]*)", requirement)
            if match:
                protobuf = f"protobuf>={match.group(1)}"
    except Exception:  # grpcio-tools missing: generate_stubs will say so
        pass
    return requirements + [grpcio, protobuf]


setup(
    install_requires=runtime_requirements(),
    cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProtos},
)
