"""Import hooks that let code written for ``demessaging`` meet ``demessaging_rs``.

Two finders on :data:`sys.meta_path`:

* :class:`FallbackFinder` (always installed, appended *last*): deprogressapi's ``BaseReport.submit()``
  runs ``from demessaging.PulsarMessageConstants import MessageType, PropertyKeys`` before it hands a
  progress report to the backend. When the reference package is installed, every finder before this one
  finds it and nothing here runs. When it is not, this finder supplies exactly that one module (our
  constants) under a placeholder ``demessaging`` package, which offers nothing else and says so.
* :class:`AliasFinder` (only in zero-edit mode, ``demessaging-rs run``, inserted *first*): every
  ``demessaging`` and ``demessaging.X`` import is answered with the module object of ``demessaging_rs`` and
  ``demessaging_rs.X``, so an unchanged backend or client that imports ``demessaging`` runs on our core.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any, Optional, Sequence

REFERENCE = "demessaging"
OURS = "demessaging_rs"

#: marks the placeholder ``demessaging`` package of :class:`FallbackFinder`
SHIM_FLAG = "__demessaging_rs_shim__"


class _ExistingModuleLoader(importlib.abc.Loader):
    """Loads a name by handing out a module that is imported under another name (the same object)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._spec: Any = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = importlib.import_module(self.target)
        self._spec = getattr(module, "__spec__", None)
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        # the import system stamped the alias spec on the module: give it back its own
        if self._spec is not None:
            module.__spec__ = self._spec


class _PlaceholderLoader(importlib.abc.Loader):
    """The ``demessaging`` placeholder: a package with no members of its own."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(REFERENCE)
        module.__path__ = []  # a package, so that its one submodule can be imported
        module.__doc__ = (
            "Placeholder installed by demessaging-rs: demessaging (the reference) is not installed. "
            "Only demessaging.PulsarMessageConstants exists here, for deprogressapi's progress reports."
        )
        setattr(module, SHIM_FLAG, True)

        def __getattr__(name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            raise AttributeError(
                f"demessaging.{name}: the demessaging package is not installed (demessaging-rs only provides "
                "demessaging.PulsarMessageConstants for deprogressapi). Import it from demessaging_rs, or run "
                "unchanged code with `demessaging-rs run`."
            )

        setattr(module, "__getattr__", __getattr__)  # module-level __getattr__ (PEP 562)
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class FallbackFinder(importlib.abc.MetaPathFinder):
    """Supplies ``demessaging.PulsarMessageConstants`` when no ``demessaging`` is installed (see module doc)."""

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]] = None, target: Optional[types.ModuleType] = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname == REFERENCE:
            return importlib.machinery.ModuleSpec(fullname, _PlaceholderLoader(), is_package=True)
        if fullname == REFERENCE + ".PulsarMessageConstants":
            parent = sys.modules.get(REFERENCE)
            if parent is not None and getattr(parent, SHIM_FLAG, False):
                return importlib.machinery.ModuleSpec(fullname, _ExistingModuleLoader(OURS + ".messaging.constants"))
        return None


class AliasFinder(importlib.abc.MetaPathFinder):
    """Zero-edit mode: ``demessaging[.X]`` is ``demessaging_rs[.X]`` (see module doc)."""

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]] = None, target: Optional[types.ModuleType] = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != REFERENCE and not fullname.startswith(REFERENCE + "."):
            return None
        ours = OURS + fullname[len(REFERENCE) :]
        if importlib.util.find_spec(ours) is None:
            return None  # not ours either: a clear ModuleNotFoundError for the name the user asked for
        return importlib.machinery.ModuleSpec(fullname, _ExistingModuleLoader(ours), is_package=fullname == REFERENCE)


def install_fallback() -> None:
    """Append the :class:`FallbackFinder` (once)."""
    if not any(isinstance(f, FallbackFinder) for f in sys.meta_path):
        sys.meta_path.append(FallbackFinder())


def enable_zero_edit() -> None:
    """Route every ``demessaging`` import to ``demessaging_rs`` from now on (``demessaging-rs run``)."""
    loaded = sys.modules.get(REFERENCE)
    if loaded is not None and not getattr(loaded, SHIM_FLAG, False) and loaded.__name__ != OURS:
        raise RuntimeError("zero-edit mode: the reference demessaging is already imported in this process")
    for name in [n for n in sys.modules if n == REFERENCE or n.startswith(REFERENCE + ".")]:
        del sys.modules[name]  # the placeholder, if a report was sent before
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())
