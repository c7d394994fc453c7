"""Rendering of the jinja2 templates used by ``generate``."""

from __future__ import annotations

import pathlib
from dataclasses import field
from typing import Any, Dict

import jinja2
from pydantic.dataclasses import dataclass

TEMPLATE_FOLDER = pathlib.Path(__file__).parent / "templates"


@dataclass
class Template:
    """A named jinja2 template in `folder`."""

    name: str
    folder: pathlib.Path = TEMPLATE_FOLDER
    suffix: str = ".jinja2"
    context: Dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> pathlib.Path:
        return self.folder / f"{self.name}{self.suffix}"

    @property
    def renderer(self) -> jinja2.Template:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(self.folder), followlinks=True))
        return env.get_template(self.name + self.suffix)

    def render(self, **context: Any) -> str:
        context.update(self.context)
        context["set"] = set
        return self.renderer.render(**context)
