"""Configuration of backend functions, classes and modules."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Type, Union

from deprogressapi import BaseReport
from pydantic import BaseModel, ConfigDict, Field, ImportString
from pydantic.functional_serializers import PlainSerializer
from typing_extensions import Annotated

from demessaging_rs.config.logging import LoggingConfig
from demessaging_rs.config.messaging import PulsarConfig, WebsocketURLConfig
from demessaging_rs.config.registry import ApiRegistry
from demessaging_rs.template import Template
from demessaging_rs.utils import append_parameter_docs, object_to_string

if TYPE_CHECKING:
    from demessaging_rs.backend.class_ import BackendClass
    from demessaging_rs.backend.function import BackendFunction

__all__ = ["BaseConfig", "FunctionConfig", "ClassConfig", "ListenConfig", "ModuleConfig"]

#: a callable given directly or as an import string; dumped as its import path
if TYPE_CHECKING:
    CallableRef = Union[ImportString[Any], Annotated[Callable[..., Any], PlainSerializer(object_to_string)]]
else:
    # the bare ImportString: pydantic builds another (equivalent) schema for ImportString[Any]
    CallableRef = Union[ImportString, Annotated[Callable[..., Any], PlainSerializer(object_to_string)]]


def _default_registry() -> ApiRegistry:
    import demessaging_rs.config

    return demessaging_rs.config.registry


@append_parameter_docs
class BaseConfig(BaseModel):
    """Settings every backend object has."""

    doc: str = Field("", description="Documentation of the object; taken from its docstring when empty.")

    registry: ApiRegistry = Field(
        default_factory=_default_registry, description="Imports and objects for generated client stubs."
    )

    template: Template = Field(
        Template(name="empty"),
        description="The template that renders this object in a generated client stub.",
    )

    def render(self, **context: Any) -> str:
        """Render the client-stub code of this object."""
        context["config"] = self
        return self.template.render(**context)


@append_parameter_docs
class FunctionConfig(BaseConfig):
    """Settings of a function (or method) served by a backend module."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    name: str = Field("", description="Name of the function in requests; defaults to its __name__.")

    signature: Optional[inspect.Signature] = Field(
        None, description="Call signature; taken from the function when empty."
    )

    validators: Dict[str, List[CallableRef]] = Field(
        default_factory=dict, description="Extra validators per argument: argument name to list of callables."
    )

    serializers: Dict[str, CallableRef] = Field(
        default_factory=dict, description="JSON serializer per argument: argument name to callable."
    )

    return_validators: Optional[List[CallableRef]] = Field(None, description="Extra validators of the return value.")

    return_serializer: Optional[CallableRef] = Field(None, description="JSON serializer of the return value.")

    field_params: Dict[str, Dict[str, Any]] = Field(
        default_factory=dict, description="Keyword arguments for pydantic.Field per argument."
    )

    returns: Dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the return Field.")

    return_annotation: Optional[Any] = Field(None, description="Overrides the return annotation.")

    annotations: Dict[str, Any] = Field(default_factory=dict, description="Overrides argument annotations.")

    template: Template = Field(
        Template(name="function.py"),
        description="The template that renders this function in a generated client stub.",
    )

    reporter_args: Dict[str, BaseReport] = Field(
        default_factory=dict, description="Arguments that receive a deprogressapi progress report."
    )

    json_schema_extra: Dict[str, Any] = Field(default_factory=dict, description="Merged into the JSON schema.")


@append_parameter_docs
class ClassConfig(BaseConfig):
    """Settings of a class served by a backend module."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    name: str = Field("", description="Name of the class in requests; defaults to its __name__.")

    init_doc: str = Field("", description="Documentation of the constructor; taken from __init__ when empty.")

    signature: Optional[inspect.Signature] = Field(
        None, description="Constructor signature; taken from __init__ when empty."
    )

    methods: List[str] = Field(default_factory=list, description="Methods served (default: all public ones).")

    validators: Dict[str, Any] = Field(default_factory=dict, description="Extra validators of constructor arguments.")

    serializers: Dict[str, Any] = Field(
        default_factory=dict, description="JSON serializers of constructor arguments."
    )

    field_params: Dict[str, Dict[str, Any]] = Field(
        default_factory=dict, description="Keyword arguments for pydantic.Field per constructor argument."
    )

    annotations: Dict[str, Any] = Field(default_factory=dict, description="Overrides constructor annotations.")

    template: Template = Field(
        Template(name="class_.py"),
        description="The template that renders this class in a generated client stub.",
    )

    reporter_args: Dict[str, BaseReport] = Field(
        default_factory=dict, description="Arguments that receive a deprogressapi progress report."
    )

    json_schema_extra: Dict[str, Any] = Field(default_factory=dict, description="Merged into the JSON schema.")


@append_parameter_docs
class ListenConfig(BaseConfig):
    """Options of the ``listen`` command."""

    dump_to: Optional[str] = None
    dump_tool: Optional[str] = None
    cmd: Optional[str] = None


@append_parameter_docs
class ModuleConfig(BaseConfig):
    """Settings of a backend module."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    if TYPE_CHECKING:
        members: List[Union[str, Callable[..., Any], Type[object], Type[BackendFunction], Type[BackendClass]]]

    messaging_config: Union[PulsarConfig, WebsocketURLConfig] = Field(
        description="How to reach the message broker."
    )

    listen_config: ListenConfig = Field(default_factory=ListenConfig)

    log_config: LoggingConfig = Field(LoggingConfig(), description="Logging settings.")

    debug: bool = Field(False, description="Send full tracebacks in error replies.")

    members: List[Union[str, Callable[..., Any], Type[object], Any]] = Field(  # type: ignore[no-redef]
        default_factory=list, description="The functions and classes this module serves."
    )

    imports: str = Field("", description="Import statements added to generated client stubs.")

    template: Template = Field(
        Template(name="module.py"),
        description="The template that renders the generated client stub.",
    )

    json_schema_extra: Dict[str, Any] = Field(default_factory=dict, description="Merged into the JSON schema.")

    @property
    def pulsar_config(self) -> Union[PulsarConfig, WebsocketURLConfig]:
        """Deprecated alias of :attr:`messaging_config`."""
        import warnings

        warnings.warn("pulsar_config is deprecated, use messaging_config", DeprecationWarning, stacklevel=2)
        return self.messaging_config
