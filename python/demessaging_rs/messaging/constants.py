"""The string constants of the DASF wire protocol."""

from __future__ import annotations

from enum import Enum
from typing import Any, Type, TypeVar
from warnings import warn

__all__ = ["generate_enum_doc", "Status", "PropertyKeys", "MessageType", "PulsarConfigKeys"]

E = TypeVar("E", bound=Type[Enum])


def generate_enum_doc(class_: E) -> E:
    """Class decorator: list the members of an enum (name and value) at the end of its docstring."""
    lines = [f'- **{name}** (``"{member.value}"``)' for name, member in class_.__members__.items()]
    class_.__doc__ = (class_.__doc__ or "") + "\n\nThe following values are valid:\n\n" + "\n".join(lines)
    return class_


@generate_enum_doc
class Status(str, Enum):
    """Status of a reply."""

    SUCCESS = "success"
    ERROR = "error"
    RUNNING = "running"


@generate_enum_doc
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


@generate_enum_doc
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


class _PulsarConfigKeys:
    """Deprecated: the names of the messaging settings (use the fields of ``PulsarConfig``)."""

    _KEYS = {
        "HOST": "host",
        "PORT": "port",
        "PERSISTENT": "persistent",
        "TENANT": "tenant",
        "NAMESPACE": "namespace",
        "TOPIC": "topic",
        "MAX_WORKERS": "max_workers",
        "QUEUE_SIZE": "queue_size",
        "MAX_PAYLOAD_SIZE": "max_payload_size",
    }

    def __getattr__(self, name: str) -> Any:
        if name not in self._KEYS:
            raise AttributeError(name)
        warn("The PulsarConfigKeys class has been deprecated and will be removed soon!", DeprecationWarning, stacklevel=2)
        return self._KEYS[name]


PulsarConfigKeys = _PulsarConfigKeys()
