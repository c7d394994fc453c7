"""Exceptions raised by demessaging-rs.

All of them derive from :class:`DemessagingError` and from the builtin a caller would expect, so
``except TimeoutError`` or ``except ValueError`` keep working for code written against ``demessaging``.
"""

from __future__ import annotations

__all__ = [
    "DemessagingError",
    "ConfigurationError",
    "BrokerConnectionError",
    "CallTimeout",
    "RequestRejected",
    "InvalidReply",
    "RemoteError",
]


class DemessagingError(Exception):
    """Base class of every error raised by demessaging-rs."""


class ConfigurationError(DemessagingError, ValueError):
    """A setting (URL, header, message type, worker count, ...) cannot work."""


class BrokerConnectionError(DemessagingError, ConnectionError, ValueError):
    """The message broker could not be reached, or the connection was lost while waiting.

    Also a ``ValueError``: the reference raises one (``No websocket connection has been established!``)
    when it cannot connect."""


class CallTimeout(DemessagingError, TimeoutError):
    """A call got no response in time. The message names the topic and the function."""


class RequestRejected(DemessagingError, RuntimeError):
    """The message broker refused to accept the request."""


class InvalidReply(DemessagingError, ValueError):
    """The backend's reply could not be read (corrupt payload, incomplete fragments)."""


class RemoteError(DemessagingError, ValueError):
    """The backend answered with an error; the message is the backend's error text."""
