"""``configure`` and the global ``registry``."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, TypeVar

from demessaging_rs.config.registry import ApiRegistry
from demessaging_rs.utils import merge_config

T = TypeVar("T", bound=Callable[..., Any])

#: What generated client stubs import and inline.
registry = ApiRegistry()


def configure(js: Optional[str] = None, merge: bool = True, **kwargs: Any) -> Callable[[T], T]:
    """Decorator attaching a :class:`FunctionConfig` (functions) or :class:`ClassConfig` (classes).

    Pass the settings as keyword arguments or as one JSON string `js`. With `merge` (default), settings
    of an earlier ``configure`` on the same object are kept and extended.
    """
    from demessaging_rs.config.backend import ClassConfig, FunctionConfig

    if js and kwargs:
        raise ValueError("You can either specify a JSON string or keyword arguments, not both!")

    def decorator(obj: T) -> T:
        kind = ClassConfig if inspect.isclass(obj) else FunctionConfig
        config = kind.model_validate_json(js) if js else kind(**kwargs)
        if merge and hasattr(obj, "__pulsar_config__"):
            config = kind(**merge_config(obj.__pulsar_config__.model_dump(), config.model_dump()))
        obj.__pulsar_config__ = config  # type: ignore[attr-defined]
        return obj

    return decorator
