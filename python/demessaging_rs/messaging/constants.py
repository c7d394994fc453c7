"""The string constants of the DASF wire protocol."""

from __future__ import annotations

from enum import Enum

__all__ = ["Status", "PropertyKeys", "MessageType"]


class Status(str, Enum):
    """Status of a reply."""

    SUCCESS = "success"
    ERROR = "error"
    RUNNING = "running"


class PropertyKeys(str, Enum):
    """Keys of the message properties DASF uses."""

    REQUEST_CONTEXT = "requestContext"
    RESPONSE_TOPIC = "response_topic"
    SOURCE_TOPIC = "source_topic"
    REQUEST_MESSAGEID = "requestMessageId"
    MESSAGE_TYPE = "messageType"
    FRAGMENT = "fragment"
    NUM_FRAGMENTS = "num_fragments"
    STATUS = "status"


class MessageType(str, Enum):
    """DASF message types."""

    PING = "ping"
    PONG = "pong"
    REQUEST = "request"
    RESPONSE = "response"
    LOG = "log"
    INFO = "info"
    PROGRESS = "progress"
    API_INFO = "api_info"
