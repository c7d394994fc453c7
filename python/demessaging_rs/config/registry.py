"""The registry of imports and inlined source code for generated client stubs."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Dict, List, Optional, TypeVar

from pydantic import BaseModel, Field, field_validator

from demessaging_rs.utils import append_parameter_docs

T = TypeVar("T", bound=Callable[..., Any])


@append_parameter_docs
class ApiRegistry(BaseModel):
    """Imports and objects that generated client stubs need."""

    imports: Dict[str, str] = Field(
        default_factory=dict,
        description="Modules imported at the top of generated stubs, mapped to their alias ('' for none).",
    )

    objects: List[str] = Field(
        default_factory=list,
        description="Source code of classes and functions copied into generated stubs.",
    )

    @field_validator("imports")
    @classmethod
    def can_import_import(cls, imports: Dict[str, str]) -> Dict[str, str]:
        failures = []
        for module in imports:
            try:
                importlib.import_module(module)
            except ImportError as e:
                failures.append(str(e))
        if failures:
            raise ValueError("Could not import all modules!\n    " + "\n    ".join(failures))
        return imports

    def register_import(self, module: str, alias: Optional[str] = None) -> None:
        """Import `module` (as `alias`) in generated stubs."""
        self.imports[module] = alias or ""

    def register_type(self, obj: T) -> T:
        """Decorator: copy the source of a class or function into generated stubs."""
        self.objects.append(inspect.getsource(obj))
        return obj

    def hard_code(self, python_code: str) -> None:
        """Add module-level code to generated stubs."""
        self.objects.append(python_code)
