"""Every public name of the reference (demessaging 0.6.4) exists at the same import path in ours.

The names are read from the reference's files in its own virtualenv (it is never installed here)."""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import subprocess
import warnings
from pathlib import Path
from typing import List

import pytest

from conftest import reference_python


def reference_names() -> List[str]:
    """Modules and public top-level names (definitions, assignments, re-exports) of the reference."""
    where = subprocess.run(
        [reference_python(), "-c", "import demessaging, os; print(os.path.dirname(demessaging.__file__))"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.strip()
    root = Path(where)
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts):
            continue  # private modules (_version, __main__)
        module = ".".join(parts)
        names.append(module)
        found = set()
        for node in ast.parse(path.read_text()).body:
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
