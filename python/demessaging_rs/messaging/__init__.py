"""Messaging: the wire protocol's constants, and the consumer and producer that run on the Rust core."""

from demessaging_rs.messaging.connection import WebsocketConnection  # noqa: F401
from demessaging_rs.messaging.constants import MessageType, PropertyKeys, Status  # noqa: F401
from demessaging_rs.messaging.consumer import MessageConsumer  # noqa: F401
from demessaging_rs.messaging.producer import MessageProducer  # noqa: F401
