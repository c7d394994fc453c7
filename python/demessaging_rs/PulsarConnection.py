"""Deprecated location of :class:`demessaging_rs.messaging.connection.WebsocketConnection`."""

from typing import Any
from warnings import warn

from demessaging_rs.messaging.connection import WebsocketConnection

warn(
    "The demessaging_rs.PulsarConnection module has been renamed to "
    "demessaging_rs.messaging.connection and will be removed soon!",
    DeprecationWarning,
    stacklevel=2,
)


class PulsarConnection(WebsocketConnection):
    """Deprecated alias of :class:`~demessaging_rs.messaging.connection.WebsocketConnection`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warn(
            "The `demessaging_rs.PulsarConnection.PulsarConnection` class has been replaced by the "
            "`demessaging_rs.messaging.connection.WebsocketConnection` class and will be removed soon!",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)
