"""Base of the classes that talk to a message broker over WebSockets.

The Rust core owns every connection demessaging-rs makes; this class keeps the reference's helpers for
code that opens sockets of its own (``create_websocketapp``/``open_socket`` use ``websocket-client``).
"""

from __future__ import annotations

import logging
import random
import string
from abc import ABC
from typing import TYPE_CHECKING, Any, Optional

from pydantic import validate_call

from demessaging_rs import config

if TYPE_CHECKING:
    import websocket

__all__ = ["get_random_letters", "WebsocketConnection"]

logger = logging.getLogger(__name__)


def get_random_letters(length: int) -> str:
    """`length` random ASCII letters (used for response topics)."""
    return "".join(random.choices(string.ascii_letters, k=length))


class WebsocketConnection(ABC):
    """Something connected to the broker described by a messaging configuration."""

    @validate_call
    def __init__(self, pulsar_config: config.BaseMessagingConfig) -> None:
        self.pulsar_config = pulsar_config

    def generate_response_topic(self, topic: Optional[str] = None) -> str:
        """A fresh topic name for replies: ``<topic>_<8 random letters>``."""
        return f"{topic or self.pulsar_config.topic or 'anonymous'}_{get_random_letters(8)}"

    # callbacks of websocket-client apps created by create_websocketapp
    def on_message(self, ws_app: "websocket.WebSocketApp", msg: Any) -> None:
        raise NotImplementedError

    def on_ping(self, ws_app: "websocket.WebSocketApp", payload: Any) -> None:
        logger.debug("ping from %s", ws_app.url)

    def on_pong(self, ws_app: "websocket.WebSocketApp", payload: Any) -> None:
        logger.debug("pong from %s", ws_app.url)

    def on_close(self, ws_app: "websocket.WebSocketApp", close_status_code: Any, close_msg: Any) -> None:
        logger.debug("connection to %s closed (code %s: %s)", ws_app.url, close_status_code, close_msg)

    def create_websocketapp(
        self, subscription: Optional[str] = None, topic: Optional[str] = None, **app_kws: Any
    ) -> "websocket.WebSocketApp":
        """A ``websocket.WebSocketApp`` for the producer (or, with `subscription`, consumer) URL of `topic`."""
        import websocket

        url = self.pulsar_config.get_topic_url(topic or self.pulsar_config.topic, subscription)
        for name in ("on_message", "on_ping", "on_pong", "on_close"):
            app_kws.setdefault(name, getattr(self, name))
        logger.debug("creating a websocket app for %s", url)
        return websocket.WebSocketApp(url, **app_kws)

    def open_socket(
        self, subscription: Optional[str] = None, topic: Optional[str] = None, **connection_kws: Any
    ) -> "websocket.WebSocket":
        """A connected blocking ``websocket.WebSocket`` to the producer (or consumer) URL of `topic`."""
        import websocket

        url = self.pulsar_config.get_topic_url(topic or self.pulsar_config.topic, subscription)
        sock: websocket.WebSocket = websocket.create_connection(url, **connection_kws)
        logger.debug("connected to %s", url)
        return sock
