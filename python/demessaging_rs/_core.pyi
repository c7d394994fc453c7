"""Type stubs of the native core (``demessaging_rs._core``), kept by hand."""

from typing import Any, Awaitable, Callable, Dict, List, Literal, Optional, Tuple, Union, final, overload

__all__ = [
    "Backend",
    "Responder",
    "Broker",
    "Client",
    "configure_rust_logging",
    "finalize",
    "__version__",
    "build_profile",
]

__version__: str
build_profile: str

# (status, payload, properties) of a reply; a name of the stub only
_Reply = Tuple[str, bytes, Dict[str, str]]

def finalize() -> None:
    """The atexit hook (registered by ``import demessaging_rs``): from now on no thread of the core enters
    Python; waits, GIL released, at most 5 s for those inside to leave."""

def configure_rust_logging(level: int) -> None:
    """Pass records of the Rust core at `level` (a Python logging level) and above to Python ``logging``
    (INFO by default), and forget cached logger levels; called after the logging configuration changes."""

@final
class Broker:
    """The embedded broker; serving starts on construction (port 0 picks a free port)."""

    def __new__(
        cls,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        max_frame_size: Optional[int] = None,
        max_connections: Optional[int] = None,
        tokens: Optional[List[str]] = None,
        receiver_queue_size: Optional[int] = None,
        publish_hold: Optional[float] = None,
        threads: Optional[int] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
    ) -> Broker: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def url(self) -> str: ...
    @property
    def running(self) -> bool: ...
    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and wait (at most `timeout` seconds)."""
    def serve_forever(self) -> None:
        """Block until Ctrl-C, then stop."""

@final
class Client:
    """A multiplexed client of one backend topic; connects on first use and after a lost connection."""

    def __new__(cls, topic: str, connection: Dict[str, Any]) -> Client: ...
    @property
    def topic(self) -> str: ...
    def connect(self) -> None: ...
    @overload
    def call(
        self,
        message_type: str,
        payload: Union[str, bytes],
        timeout: float,
        label: str,
        on_progress: Optional[Callable[[bytes, Dict[str, str]], Any]] = None,
        properties: Literal[True] = True,
    ) -> _Reply: ...
    @overload
    def call(
        self,
        message_type: str,
        payload: Union[str, bytes],
        timeout: float,
        label: str,
        on_progress: Optional[Callable[[bytes, Dict[str, str]], Any]],
        properties: Literal[False],
    ) -> Tuple[str, bytes, None]:
        """Send a message and wait (GIL released) for the reply ``(status, payload, properties)``; with
        ``properties=False`` the third item is ``None``."""
    @overload
    def call_async(
        self,
        message_type: str,
        payload: Union[str, bytes],
        timeout: float,
        label: str,
        properties: Literal[True] = True,
    ) -> Awaitable[_Reply]: ...
    @overload
    def call_async(
        self, message_type: str, payload: Union[str, bytes], timeout: float, label: str, properties: Literal[False]
    ) -> Awaitable[Tuple[str, bytes, None]]: ...
    @overload
    def call_async(
        self, message_type: str, payload: Union[str, bytes], timeout: float, label: str, properties: bool
    ) -> Awaitable[Tuple[str, bytes, Optional[Dict[str, str]]]]:
        """Awaitable `call` (no progress callback); with ``properties=False`` the third item is ``None``."""
    def close(self) -> None: ...

@final
class Responder:
    """Sends extra messages (progress reports) to the caller of the running request."""

    @property
    def request_context(self) -> str: ...
    @property
    def response_topic(self) -> str: ...
    @property
    def message_id(self) -> str: ...
    def send(
        self,
        message_type: str,
        payload: Union[str, bytes],
        status: Optional[str] = None,
        properties: Optional[Dict[str, Any]] = None,
        wait: bool = True,
    ) -> None:
        """Send to the caller; with ``wait=False`` never block (queued behind what was sent before)."""

@final
class Backend:
    """Serves a topic; `handler(payload, responder) -> (ok, text or JSON bytes)` runs on worker threads
    (``None``: the handler answers through `responder` itself); `on_drain()` runs once at shutdown before
    replies close."""

    def __new__(
        cls,
        connection: Dict[str, Any],
        serve: Dict[str, Any],
        handler: Callable[[str, Responder], Optional[Tuple[bool, Union[str, bytes]]]],
        on_drain: Optional[Callable[[], Any]] = None,
    ) -> Backend: ...
    @property
    def subscription(self) -> str: ...
    @property
    def max_workers(self) -> int: ...
    @property
    def queue_size(self) -> int: ...
    def run(self, drain_timeout: float = 30.0) -> None:
        """Serve until :meth:`stop` or Ctrl-C (running requests finish first)."""
    def stop(self) -> None: ...
