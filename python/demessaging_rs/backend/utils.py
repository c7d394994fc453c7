"""Turning signatures and docstrings into pydantic fields."""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
import unicodedata
import warnings
from itertools import chain
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Literal, Optional, Tuple, Union, get_args, get_origin

from deprogressapi import BaseReport
from pydantic import Field
from pydantic.functional_serializers import PlainSerializer
from typing_extensions import Annotated

if TYPE_CHECKING:
    import docstring_parser

    from demessaging_rs.config import ClassConfig, FunctionConfig


# id(signature) -> (signature, its parameter names without ``self``); the signature is kept so its id stays its own
_PARAM_NAMES: Dict[int, Tuple[inspect.Signature, Tuple[str, ...]]] = {}


def get_kws(sig: inspect.Signature, obj: Any) -> Dict[str, Any]:
    """The call arguments for `sig`, read from the fields of model `obj`."""
    entry = _PARAM_NAMES.get(id(sig))
    if entry is None or entry[0] is not sig:
        entry = _PARAM_NAMES[id(sig)] = (sig, tuple(name for name in sig.parameters if name != "self"))
    return {name: getattr(obj, name) for name in entry[1]}


def _is_progress_report(annotation: Any) -> bool:
    if get_origin(annotation):
        return any(inspect.isclass(a) and issubclass(a, BaseReport) for a in get_args(annotation))
    return inspect.isclass(annotation) and issubclass(annotation, BaseReport)


def get_fields(
    name: str,
    sig: inspect.Signature,
    docstring: "docstring_parser.Docstring",
    config: Union["FunctionConfig", "ClassConfig"],
) -> Dict[str, Tuple[Any, Any]]:
    """Model fields for a callable: a ``func_name`` literal plus one field per parameter."""
    fields: Dict[str, Tuple[Any, Any]] = {
        "func_name": (Literal[name], Field(description=f"The name of the function. Must be {name!r}")),
    }
    param_docs: Dict[str, Optional[str]] = {}
    for doc in docstring.params:
        param_docs.setdefault(doc.arg_name, doc.description)  # the first entry wins (a class's own docstring)
    for key, param in sig.parameters.items():
        if key == "self":
            continue
        kws: Dict[str, Any] = {}
        if param.default is not param.empty:
            kws["default"] = param.default
        if key in param_docs:
            kws["description"] = param_docs[key]
        kws.update(config.field_params.get(key, {}))

        if key in config.annotations:
            annotation = config.annotations[key]
        elif param.annotation is param.empty:
            warnings.warn(
                f"Missing signature for {key}, so no validation will be made for this parameter!", RuntimeWarning
            )
            annotation = Any
        else:
            annotation = param.annotation
        if key in config.serializers:
            if key not in config.annotations and config.validators.get(key):
                annotation = Any
            annotation = Annotated[annotation, PlainSerializer(config.serializers[key], return_type=str, when_used="json")]
        if param.annotation is not param.empty and _is_progress_report(param.annotation):
            config.reporter_args[key] = param.default if param.default is not param.empty else param.annotation()
            kws["json_schema_extra"] = {"is_reporter": True}
        fields[key] = (annotation, Field(**kws))
    return fields


def get_desc(docstring: "docstring_parser.Docstring") -> str:
    """Short and long description of a parsed docstring."""
    desc = docstring.short_description or ""
    if docstring.long_description:
        desc += "\n\n" if docstring.blank_after_short_description else "\n"
        desc += docstring.long_description
    return desc.strip()


def camelize(w: str) -> str:
    """Upper-case the first letter."""
    return w[:1].upper() + w[1:]


def snake_to_camel(*words: str) -> str:
    """``snake_to_camel("Func", "hello_world") == "FuncHelloWorld"``."""
    return "".join(camelize(w) for w in chain.from_iterable(word.split("_") for word in words))


def slugify(value: str, allow_unicode: bool = False) -> str:
    """A file-name safe version of `value`: lower case, runs of spaces and dashes as one dash, nothing but
    word characters and dashes; ASCII unless `allow_unicode`."""
    if allow_unicode:
        value = unicodedata.normalize("NFKC", str(value))
    else:
        value = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value.lower())
    return re.sub(r"[-\s]+", "-", value).strip("-_")


def _import_statements(mod: Any) -> List[Tuple[bool, str]]:
    """(is a ``from __future__`` import, statement) of every import in a module's source, in source order
    and each statement once."""
    import ast

    try:
        tree = ast.parse(inspect.getsource(mod))
    except (OSError, TypeError, SyntaxError):
        return []
    nodes = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    nodes.sort(key=lambda node: (node.lineno, node.col_offset))
    statements = dict.fromkeys(
        (isinstance(node, ast.ImportFrom) and node.module == "__future__", ast.unparse(node)) for node in nodes
    )
    return list(statements)


def get_module_imports(mod: Any) -> str:
    """The import statements in a module's source, in source order, for generated client stubs.

    As in the reference (which collects them with isort), imports anywhere in the module count, also
    those under ``try``/``if`` blocks and inside functions or classes; repeated statements are kept once.
    ``from __future__`` imports are left out: see :func:`get_future_imports`.
    """
    return "\n".join(statement for future, statement in _import_statements(mod) if not future)


def get_future_imports(mod: Any) -> str:
    """The ``from __future__`` imports of a module's source: a generated stub starts with them (after its
    docstring), so that annotations copied from the module mean there what they meant in the module."""
    return "\n".join(statement for future, statement in _import_statements(mod) if future)


class AsyncIoThread(threading.Thread):
    """A thread that runs one coroutine function to completion on an event loop of its own.

    After :meth:`join`, ``result`` holds its return value; an exception it raised is re-raised by
    :func:`run_async`.
    """

    def __init__(self, func: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        super().__init__(name=f"run_async-{getattr(func, '__name__', 'coroutine')}", daemon=True)
        self._func = func
        self._args = args
        self._kwargs = kwargs
        self.result: Any = None
        self.error: Union[BaseException, None] = None

    def run(self) -> None:
        try:
            self.result = asyncio.run(self._func(*self._args, **self._kwargs))
        except BaseException as e:  # handed to the waiting thread
            self.error = e


def run_async(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the coroutine function `func` and wait for its result, from sync code.

    Works in plain scripts (``asyncio.run``) and where an event loop already runs in this thread, e.g. in
    Jupyter (the coroutine then runs on a loop in a helper thread).
    """
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is None or not running.is_running():
        return asyncio.run(func(*args, **kwargs))
    thread = AsyncIoThread(func, args, kwargs)
    thread.start()
    thread.join()
    if thread.error is not None:
        raise thread.error
    return thread.result


class ImportMixin:
    """Mixin for ``isort.identify.Import`` whose ``statement()`` renders an import line correctly
    (``from x import y as z`` / ``import x as z``), for code that renders imports through isort."""

    module: str
    attribute: Any
    alias: Any
    cimport: bool

    def statement(self) -> str:
        keyword = "cimport" if self.cimport else "import"
        text = f"from {self.module} {keyword} {self.attribute}" if self.attribute else f"{keyword} {self.module}"
        return f"{text} as {self.alias}" if self.alias else text
