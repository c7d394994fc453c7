"""The embedded broker, usable as a context manager: ``with Broker(port=0) as b: b.port``."""

from __future__ import annotations

import os
from typing import Any, List, Optional, Union

from demessaging_rs import _core

__all__ = ["Broker"]


class Broker:
    """A message broker speaking Apache Pulsar's WebSocket API, served by the Rust core in this process.

    It starts serving on construction; ``port=0`` picks a free port (read it from :attr:`port`).
    ``threads=n`` runs it on `n` threads of its own; by default it shares the package's runtime.
    ``tls_cert`` and ``tls_key`` (PEM files: certificate chain and private key) make it serve ``wss://`` only.
    ``tokens`` are the lines of a token file: a token alone may do everything; ``TOKEN produce=PATTERNS
    consume=PATTERNS`` limits it to the topics matching the comma-separated globs (see the README).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        max_frame_size: Optional[int] = None,
        max_connections: Optional[int] = None,
        tokens: Optional[List[str]] = None,
        receiver_queue_size: Optional[int] = None,
        publish_hold: Optional[float] = None,
        threads: Optional[int] = None,
        tls_cert: Optional[Union[str, "os.PathLike[str]"]] = None,
        tls_key: Optional[Union[str, "os.PathLike[str]"]] = None,
    ) -> None:
        self._core = _core.Broker(
            host,
            port,
            max_frame_size=max_frame_size,
            max_connections=max_connections,
            tokens=tokens,
            receiver_queue_size=receiver_queue_size,
            publish_hold=publish_hold,
            threads=threads,
            tls_cert=None if tls_cert is None else os.fspath(tls_cert),
            tls_key=None if tls_key is None else os.fspath(tls_key),
        )

    @property
    def host(self) -> str:
        return self._core.host

    @property
    def port(self) -> int:
        return self._core.port

    @property
    def url(self) -> str:
        """``ws://host:port`` (``wss://`` with TLS)."""
        return self._core.url

    @property
    def running(self) -> bool:
        return self._core.running

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and stop serving."""
        self._core.stop(timeout)

    def serve_forever(self) -> None:
        """Block until Ctrl-C (or :meth:`stop` from another thread)."""
        self._core.serve_forever()

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
