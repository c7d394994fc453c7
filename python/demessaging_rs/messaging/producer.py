"""The client side of a backend topic: one multiplexed connection per messaging configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from demessaging_rs._core import Client

if TYPE_CHECKING:
    from demessaging_rs.config.messaging import BaseMessagingConfig

__all__ = ["MessageProducer"]


class MessageProducer:
    """Sends requests to the backend on ``config.topic`` and waits for the replies (in Rust, GIL released)."""

    def __init__(self, config: "BaseMessagingConfig", topic: Optional[str] = None) -> None:
        self.pulsar_config = config
        self.topic = topic or config.topic
        self._client = Client(self.topic, config.connection_settings())

    def connect(self) -> None:
        """Open the connections now instead of on the first call."""
        self._client.connect()

    def disconnect(self) -> None:
        """Close the connections; waiting calls fail."""
        self._client.close()

    def call(
        self,
        payload: str,
        timeout: Optional[float] = None,
        label: str = "request",
        message_type: str = "request",
        on_progress: Optional[Callable[[bytes, Dict[str, str]], Any]] = None,
    ) -> Tuple[str, bytes]:
        """Send one request; returns ``(status, payload)``."""
        status, body, _props = self.call_raw(payload, timeout, label, message_type, on_progress)
        return status, body

    def call_raw(
        self,
        payload: str,
        timeout: Optional[float] = None,
        label: str = "request",
        message_type: str = "request",
        on_progress: Optional[Callable[[bytes, Dict[str, str]], Any]] = None,
    ) -> Tuple[str, bytes, Dict[str, str]]:
        """Like :meth:`call`, but also returns the reply's properties."""
        limit = self.pulsar_config.call_timeout if timeout is None else timeout
        return self._client.call(message_type, payload, float(limit), label, on_progress)

    async def call_async(
        self, payload: str, timeout: Optional[float] = None, label: str = "request", message_type: str = "request"
    ) -> Tuple[str, bytes, Dict[str, str]]:
        """Awaitable :meth:`call_raw` for asyncio code."""
        limit = self.pulsar_config.call_timeout if timeout is None else timeout
        return await self._client.call_async(message_type, payload, float(limit), label)

    def ping(self, timeout: float = 5.0) -> bool:
        """Whether the backend answers a DASF ping within `timeout` seconds."""
        from demessaging_rs.exceptions import BrokerConnectionError, CallTimeout

        try:
            _status, _body, props = self._client.call("ping", b"", float(timeout), "ping")
        except (CallTimeout, BrokerConnectionError):
            return False
        return props.get("messageType") == "pong"
