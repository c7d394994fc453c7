"""Deprecated location of :class:`demessaging_rs.messaging.producer.MessageProducer`."""

from typing import Any
from warnings import warn

from demessaging_rs.messaging.producer import MessageProducer

warn(
    "The demessaging_rs.PulsarMessageProducer module has been renamed to "
    "demessaging_rs.messaging.producer and will be removed soon!",
    DeprecationWarning,
    stacklevel=2,
)


class PulsarMessageProducer(MessageProducer):
    """Deprecated alias of :class:`~demessaging_rs.messaging.producer.MessageProducer`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warn(
            "The `demessaging_rs.PulsarMessageProducer.PulsarMessageProducer` class has been replaced by the "
            "`demessaging_rs.messaging.producer.MessageProducer` class and will be removed soon!",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)
