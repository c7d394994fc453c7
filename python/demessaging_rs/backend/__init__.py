"""Backend modules: turn Python functions and classes into a DASF backend served by the Rust core."""

from __future__ import annotations

import warnings
from typing import Any, Type

from pydantic import BaseModel

from demessaging_rs.backend import utils as utils
from demessaging_rs.backend.class_ import BackendClass, ClassAPIModel as ClassAPIModel
from demessaging_rs.backend.function import BackendFunction, FunctionAPIModel as FunctionAPIModel, ReturnModel
from demessaging_rs.backend.module import BackendModule, ModuleAPIModel as ModuleAPIModel
from demessaging_rs.config import ModuleConfig, PulsarConfig
from demessaging_rs.exceptions import ConfigurationError
from demessaging_rs.utils import build_parameter_docs

__all__ = ["main", "BackendModule", "BackendFunction", "BackendClass", "ReturnModel"]


def main(module_name: str = "__main__", *args: str, **config_kws: Any) -> Type[BackendModule]:
    """Command line of a backend module: ``listen``, ``schema``, ``generate``, ``send-request``, ...

    Keyword arguments are :class:`~demessaging_rs.config.ModuleConfig` settings, e.g.
    ``main(messaging_config=dict(topic="my-topic"))``. Command-line options override them.
    """
    from demessaging_rs.cli import UNKNOWN_TOPIC, get_parser

    for key in list(PulsarConfig.model_fields):
        if key in config_kws:
            value = config_kws.pop(key)
            warnings.warn(
                f"The {key} parameter has been moved to the messaging_config: "
                f"use main(messaging_config=dict({key}={value!r}))",
                DeprecationWarning,
                stacklevel=2,
            )
            mc = config_kws.setdefault("messaging_config", {})
            if isinstance(mc, dict):
                mc[key] = value
            else:
                setattr(mc, key, value)

    if "config" in config_kws:
        default_config = config_kws.pop("config").model_copy(update=config_kws)
    else:
        mc = config_kws.setdefault("messaging_config", {})
        if isinstance(mc, dict):
            mc.setdefault("topic", UNKNOWN_TOPIC)
        default_config = ModuleConfig(**config_kws)

    parser = get_parser(module_name, default_config)
    ns = vars(parser.parse_args(list(args)) if args else parser.parse_args())
    command = ns.pop("command", None)
    method_kws = {key: ns.pop(key) for key in ns.pop("command_params", [])}
    method_name = ns.pop("method_name", command)
    module_name = ns.pop("module_name")

    try:
        model = BackendModule.create_model(module_name, config=ModuleConfig(**ns))
    except ConfigurationError as e:
        # e.g. a module without members: one line, not a traceback through our internals
        raise SystemExit(f"error: {e}") from None
    if command:
        result = getattr(model, method_name)(**method_kws)
        if isinstance(result, BaseModel):
            result = result.model_dump_json()
        if result is not None:
            print(result)
    return model



main.__doc__ = (main.__doc__ or "") + build_parameter_docs(ModuleConfig)
