"""Small helpers shared by the configuration and backend modules."""

from __future__ import annotations

import contextlib
import inspect
import signal
import textwrap
import threading
from typing import Any, Dict, Iterator, Type, cast

from pydantic import BaseModel


def object_to_string(obj: Any) -> str:
    """Dotted import path of a class or function (builtins by bare name)."""
    if obj.__module__ == "builtins":
        return cast(str, obj.__name__)
    return f"{obj.__module__}.{obj.__name__}"


def type_to_string(type_: Any) -> str:
    """Readable name of a type annotation."""
    return object_to_string(type_) if inspect.isclass(type_) else str(type_)


def build_parameter_docs(model: Type[BaseModel]) -> str:
    """A numpydoc ``Parameters`` section listing the fields of `model`."""
    lines = ["", "", "Parameters", "----------"]
    for name, info in model.model_fields.items():
        lines.append(f"{name} : {type_to_string(info.annotation)}")
        lines.append(textwrap.indent(str(info.description), "    "))
    return "\n".join(lines)


def append_parameter_docs(model: Type[BaseModel]) -> Type[BaseModel]:
    """Class decorator: document the fields of a model in its docstring."""
    model.__doc__ = (model.__doc__ or "") + build_parameter_docs(model)
    return model


def merge_config(base: Dict[Any, Any], to_merge: Dict[Any, Any]) -> Dict[Any, Any]:
    """Merge `to_merge` into `base` in place and return `base`.

    Nested dictionaries are merged recursively, strings and scalars replace, other iterables are
    concatenated.
    """
    for key, value in to_merge.items():
        if key not in base:
            base[key] = value
        elif isinstance(value, dict):
            merge_config(base[key], value)
        elif isinstance(value, str) or not _iterable(value):
            base[key] = value
        else:
            base[key] = [*base[key], *value]
    return base


def _iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


class SchemaExtraMixin:
    """For models with a ``backend_config``: merge its ``json_schema_extra`` into the JSON schema."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        schema: Dict[str, Any] = super().model_json_schema(*args, **kwargs)  # type: ignore[misc]
        extra = cls.backend_config.json_schema_extra  # type: ignore[attr-defined]
        if extra:
            schema = merge_config(schema, extra)
        return schema


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (main thread only), so a blocking serve loop
    shuts down the same way on ``kill`` as on Ctrl-C. The previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
