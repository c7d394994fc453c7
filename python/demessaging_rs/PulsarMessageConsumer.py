"""Deprecated location of :class:`demessaging_rs.messaging.consumer.MessageConsumer`."""

from typing import Any
from warnings import warn

from demessaging_rs.messaging.consumer import MessageConsumer

warn(
    "The demessaging_rs.PulsarMessageConsumer module has been renamed to "
    "demessaging_rs.messaging.consumer and will be removed soon!",
    DeprecationWarning,
    stacklevel=2,
)


class PulsarMessageConsumer(MessageConsumer):
    """Deprecated alias of :class:`~demessaging_rs.messaging.consumer.MessageConsumer`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warn(
            "The `demessaging_rs.PulsarMessageConsumer.PulsarMessageConsumer` class has been replaced by the "
            "`demessaging_rs.messaging.consumer.MessageConsumer` class and will be removed soon!",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)
