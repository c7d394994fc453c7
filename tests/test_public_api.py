"""Every public name of the reference (demessaging 0.6.4) exists at the same import path in ours.

The names are read from the reference's files in its own virtualenv (it is never installed here)."""

from __future__ import annotations

import ast
import importlib
import inspect
import importlib.machinery
import subprocess
import warnings
from pathlib import Path
from typing import Any, List, Tuple

import pytest

from conftest import reference_python


def reference_modules() -> List[Tuple[str, ast.Module]]:
    """(module name, parsed source) of every public module of the reference."""
    where = subprocess.run(
        [reference_python(), "-c", "import demessaging, os; print(os.path.dirname(demessaging.__file__))"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.strip()
    root = Path(where)
    modules = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts):
            continue  # private modules (_version, __main__)
        modules.append((".".join(parts), ast.parse(path.read_text())))
    return modules


MODULES = reference_modules()


def reference_names() -> List[str]:
    """Modules and public top-level names (definitions, assignments, re-exports) of the reference."""
    names = []
    for module, tree in MODULES:
        names.append(module)
        found = set()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found.add(node.name)
            elif isinstance(node, ast.Assign):
                found.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                found.add(node.target.id)
            elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("demessaging")):
                found.update(a.asname or a.name for a in node.names if a.name != "*")
        names += [f"{module}.{n}" for n in sorted(found) if not n.startswith("_") and n != "logger"]
    return names


def parameters(args: ast.arguments) -> List[str]:
    """Parameter names as written (``*args``, ``**kws`` with their stars)."""
    names = [a.arg for a in args.posonlyargs + args.args]
    names += [f"*{args.vararg.arg}"] if args.vararg else []
    names += [a.arg for a in args.kwonlyargs]
    return names + ([f"**{args.kwarg.arg}"] if args.kwarg else [])


def reference_callables() -> List[Tuple[str, List[str]]]:
    """Public functions and public methods of public classes: (dotted name, parameter names)."""
    found = []
    for module, tree in MODULES:
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                found.append((f"{module}.{node.name}", parameters(node.args)))
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                found += [
                    (f"{module}.{node.name}.{f.name}", parameters(f.args))
                    for f in node.body
                    if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and not f.name.startswith("_")
                ]
    return found


#: methods of the reference's websocket-client plumbing: our core owns the sockets, so there is nothing
#: for them to do (README, "Migrating from demessaging")
SOCKET_PLUMBING = {
    f"demessaging.messaging.consumer.MessageConsumer.{m}"
    for m in ("wait_for_websocket_connection", "open_producer_app", "close_websocket_app", "reset_close_timer",
              "on_producer_message", "handle_request_via_queue")
} | {f"demessaging.messaging.producer.MessageProducer.{m}" for m in ("on_in_message", "on_out_message")}


NAMES = reference_names()


def test_the_reference_is_not_installed_here():
    """Our API tests must fail when our API lacks something: the reference must not stand in for it."""
    assert importlib.machinery.PathFinder.find_spec("demessaging") is None


def test_the_reference_has_the_expected_surface():
    assert len(NAMES) > 150
    for name in ("demessaging.messaging.consumer.MessageConsumer", "demessaging.NetCDFDecoder.decode",
                 "demessaging.backend.utils.run_async", "demessaging.PulsarMessageConstants"):
        assert name in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_public_name_exists_in_ours(name):
    ours = "demessaging_rs" + name[len("demessaging"):]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the deprecated modules warn on import, as the reference's
        try:
            importlib.import_module(ours)
            return
        except ModuleNotFoundError as e:
            if e.name != ours:
                raise
        module, _, attr = ours.rpartition(".")
        assert hasattr(importlib.import_module(module), attr), f"{ours} is missing"


CALLABLES = [c for c in reference_callables() if c[0] not in SOCKET_PLUMBING]


def ours_of(name: str) -> Any:
    """Our object at the reference's dotted `name` (module, then attributes)."""
    parts = ("demessaging_rs" + name[len("demessaging"):]).split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = inspect.getattr_static(obj, attr)
        return obj
    raise AssertionError(name)


def test_the_reference_has_the_expected_callables():
    names = dict(CALLABLES)
    assert len(names) > 80
    assert names["demessaging.backend.utils.slugify"] == ["value", "allow_unicode"]
    assert names["demessaging.config.messaging.BaseMessagingConfig.validate_queue_size"] == ["self"]


@pytest.mark.parametrize("name,params", CALLABLES, ids=[c[0] for c in CALLABLES])
def test_public_callable_takes_the_reference_parameters(name, params):
    """Every public function and method of the reference exists in ours and takes the parameters of the
    reference's, by the same names and in the same order (ours may add optional ones after them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        obj = ours_of(name)
    if isinstance(obj, (classmethod, staticmethod)):
        obj = obj.__func__
    sig = inspect.signature(getattr(obj, "__func__", None) or getattr(obj, "fget", None) or obj)
    kinds = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    ours = [kinds.get(p.kind, "") + n for n, p in sig.parameters.items()]
    assert ours[: len(params)] == params, f"{name}: reference {params}, ours {ours}"


@pytest.mark.parametrize(
    "module,message",
    [
        ("PulsarMessageConstants", "demessaging_rs.PulsarMessageConstants module has been renamed"),
        ("PulsarConnection", "demessaging_rs.PulsarConnection module has been renamed"),
        ("PulsarMessageConsumer", "demessaging_rs.PulsarMessageConsumer module has been renamed"),
        ("PulsarMessageProducer", "demessaging_rs.PulsarMessageProducer module has been renamed"),
    ],
)
def test_deprecated_modules_warn_as_the_reference(module, message):
    import sys

    sys.modules.pop(f"demessaging_rs.{module}", None)
    with pytest.warns(DeprecationWarning, match=message):
        importlib.import_module(f"demessaging_rs.{module}")


def test_deprecated_classes_and_keys_warn():
    from demessaging_rs.config import PulsarConfig
    from demessaging_rs.messaging.constants import PulsarConfigKeys

    with pytest.warns(DeprecationWarning, match="PulsarConfigKeys class has been deprecated"):
        assert PulsarConfigKeys.MAX_PAYLOAD_SIZE == "max_payload_size"
    with pytest.raises(AttributeError):
        PulsarConfigKeys.NOPE  # noqa: B018
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from demessaging_rs.PulsarMessageProducer import PulsarMessageProducer
    with pytest.warns(DeprecationWarning, match="PulsarMessageProducer` class has been replaced"):
        producer = PulsarMessageProducer(PulsarConfig(topic="t"))
    assert producer.generate_response_topic().startswith("t_")


def test_enum_docs_list_the_values():
    from demessaging_rs.messaging.constants import MessageType, generate_enum_doc

    assert '- **API_INFO** (``"api_info"``)' in MessageType.__doc__
    assert generate_enum_doc.__name__ == "generate_enum_doc"


def test_run_async_in_and_outside_a_running_loop():
    import asyncio

    from demessaging_rs.backend.utils import run_async

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async def boom() -> None:
        raise KeyError("inner")

    assert run_async(double, 3) == 6

    async def inside() -> int:
        return run_async(double, 4)

    assert asyncio.run(inside()) == 8
    with pytest.raises(KeyError, match="inner"):
        asyncio.run(_call(run_async, boom))


async def _call(f, *args):
    return f(*args)
