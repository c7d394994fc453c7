"""Configuration classes of demessaging-rs (same names and fields as ``demessaging.config``)."""

from demessaging_rs.config.api import configure, registry  # noqa: F401
from demessaging_rs.config.backend import BaseConfig, ClassConfig, FunctionConfig, ListenConfig, ModuleConfig  # noqa: F401
from demessaging_rs.config.logging import LoggingConfig  # noqa: F401
from demessaging_rs.config.messaging import BaseMessagingConfig, PulsarConfig, WebsocketURLConfig  # noqa: F401
from demessaging_rs.config.registry import ApiRegistry  # noqa: F401
