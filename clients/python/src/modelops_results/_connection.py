"""Where the server is and how to authenticate: shared by the Flight and gRPC clients."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union
from urllib.parse import urlsplit

#: The endpoint used when neither an argument nor ``MOPS_ENDPOINT`` names one.
DEFAULT_ENDPOINT = "http://127.0.0.1:50051"
#: The port used when an endpoint names none (``mops serve``'s default).
DEFAULT_PORT = 50051

_PLAINTEXT_SCHEMES = {"http", "grpc", "grpc+tcp"}
_TLS_SCHEMES = {"https", "grpcs", "grpc+tls"}

PathOrBytes = Union[str, "os.PathLike[str]", bytes]


@dataclass(frozen=True)
class Endpoint:
    """A parsed server endpoint.

    Attributes:
        host: host name or IP address (IPv6 without brackets).
        port: TCP port.
        tls: whether to connect with TLS.
    """

    host: str
    port: int
    tls: bool

    @property
    def target(self) -> str:
        """``host:port`` (IPv6 hosts bracketed), as grpcio wants it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def flight_uri(self) -> str:
        """``grpc+tcp://host:port`` or ``grpc+tls://host:port``, as pyarrow.flight wants it."""
        return f"grpc+{'tls' if self.tls else 'tcp'}://{self.target}"


def parse_endpoint(endpoint: Optional[str], *, tls_hint: bool = False) -> Endpoint:
    """Parses an endpoint.

    Accepts ``http://host:port`` and ``grpc://host:port`` (``grpc+tcp://``) for plaintext,
    ``https://host:port`` and ``grpc+tls://host:port`` (``grpcs://``) for TLS, or a bare
    ``host:port`` (plaintext unless ``tls_hint``). ``None`` means ``$MOPS_ENDPOINT``, else
    ``http://127.0.0.1:50051``. A missing port is 50051.
    """
    if endpoint is None:
        endpoint = os.environ.get("MOPS_ENDPOINT") or DEFAULT_ENDPOINT
    text = endpoint.strip()
    if not text:
        raise ValueError("empty endpoint")
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme in _PLAINTEXT_SCHEMES:
            tls = False
        elif scheme in _TLS_SCHEMES:
            tls = True
        else:
            raise ValueError(
                f"endpoint {endpoint!r}: unsupported scheme {scheme!r} "
                "(use http://, https://, grpc://, grpc+tls:// or host:port)"
            )
        parts = urlsplit(text)
    else:
        tls = tls_hint
        parts = urlsplit("//" + text)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"endpoint {endpoint!r} must be scheme://host:port with no path")
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError(f"endpoint {endpoint!r}: {e}") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"endpoint {endpoint!r} names no host")
    return Endpoint(host=host, port=port or DEFAULT_PORT, tls=tls)


def resolve_token(token: Optional[str], token_file: Optional[Union[str, "os.PathLike[str]"]]) -> Optional[str]:
    """The bearer token: ``token``, else the contents of ``token_file``, else of the file named by
    ``$MOPS_AUTH_TOKEN_FILE``, else none. Files are read whole and stripped, as the server does."""
    if token is not None:
        token = token.strip()
        if not token:
            raise ValueError("empty token")
        return token
    path = token_file if token_file is not None else os.environ.get("MOPS_AUTH_TOKEN_FILE") or None
    if path is None:
        return None
    text = Path(path).read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"token file {os.fspath(path)} is empty")
    return text


def resolve_root_certs(tls_root_certs: Optional[PathOrBytes]) -> Optional[bytes]:
    """PEM root certificates: bytes as given, or read from a path; ``None`` means system roots."""
    if tls_root_certs is None:
        return None
    if isinstance(tls_root_certs, bytes):
        return tls_root_certs
    return Path(tls_root_certs).read_bytes()


def connection_settings(
    endpoint: Optional[str],
    token: Optional[str],
    token_file: Optional[Union[str, "os.PathLike[str]"]],
    tls_root_certs: Optional[PathOrBytes],
) -> tuple[Endpoint, Optional[str], Optional[bytes]]:
    """Parses and checks the common constructor arguments of both clients."""
    certs = resolve_root_certs(tls_root_certs)
    parsed = parse_endpoint(endpoint, tls_hint=certs is not None)
    if certs is not None and not parsed.tls:
        raise ValueError(f"tls_root_certs given but endpoint {parsed.target} is plaintext (use https:// or grpc+tls://)")
    return parsed, resolve_token(token, token_file), certs
