"""Messaging: the wire protocol's constants, and the consumer and producer that run on the Rust core."""

from demessaging_rs.messaging.connection import WebsocketConnection as WebsocketConnection
from demessaging_rs.messaging.constants import (
    MessageType as MessageType,
    PropertyKeys as PropertyKeys,
    Status as Status,
)
from demessaging_rs.messaging.consumer import MessageConsumer as MessageConsumer
from demessaging_rs.messaging.producer import MessageProducer as MessageProducer
