"""Messaging: constants of the wire protocol and the client used by generated stubs."""

from demessaging_rs.messaging.constants import MessageType, PropertyKeys, Status  # noqa: F401
