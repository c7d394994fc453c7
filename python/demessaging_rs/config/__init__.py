"""Configuration classes of demessaging-rs (same names and fields as ``demessaging.config``)."""

from demessaging_rs.config.api import configure as configure, registry as registry
from demessaging_rs.config.backend import (
    BaseConfig as BaseConfig,
    ClassConfig as ClassConfig,
    FunctionConfig as FunctionConfig,
    ListenConfig as ListenConfig,
    ModuleConfig as ModuleConfig,
)
from demessaging_rs.config.logging import LoggingConfig as LoggingConfig
from demessaging_rs.config.messaging import (
    BaseMessagingConfig as BaseMessagingConfig,
    PulsarConfig as PulsarConfig,
    WebsocketURLConfig as WebsocketURLConfig,
)
from demessaging_rs.config.registry import ApiRegistry as ApiRegistry
