"""Pydantic models for classes: a call names the constructor arguments and one method with its arguments."""

from __future__ import annotations

import inspect
from textwrap import dedent
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, List, Optional, Tuple, Type, Union

import docstring_parser
from pydantic import BaseModel, Field, create_model
from pydantic.json_schema import JsonSchemaValue

from demessaging_rs.backend import utils
from demessaging_rs.backend.function import (
    BackendFunction,
    BackendFunctionConfig,
    FunctionAPIModel,
    ReturnModel,
    validated_result,
)
from demessaging_rs.config import ClassConfig
from demessaging_rs.utils import SchemaExtraMixin, append_parameter_docs, merge_config  # noqa: F401

__all__ = ["BackendClassConfig", "ClassAPIModel", "BackendClass"]


@append_parameter_docs
class BackendClassConfig(ClassConfig):
    """Settings of a class, bound to the class itself."""

    models: Dict[str, Type[BackendFunction]] = Field(
        default_factory=dict, description="Method name to the model of that method."
    )

    Class: Type[object] = Field(description="The class that corresponds to this config.")

    class_name: str = Field(description="Name of the model class")

    @property
    def method_configs(self) -> List[BackendFunctionConfig]:
        """Configurations of the served methods."""
        return [m.backend_config for m in self.models.values()]

    def update_from_cls(self) -> None:
        """Fill empty name, docs and signature from the class."""
        cls = self.Class
        self.name = self.name or cls.__name__ or ""
        self.doc = self.doc or dedent(inspect.getdoc(cls) or "")
        self.init_doc = self.init_doc or dedent(inspect.getdoc(cls.__init__) or "")
        self.signature = self.signature or inspect.signature(cls.__init__)


class ClassAPIModel(BaseModel):
    """Description of a class in the module's API."""

    name: str = Field(description="The name of the class that is used as identifier in the RPC.")

    rpc_schema: JsonSchemaValue = Field(description="The JSON Schema for the constructor of the class.")

    methods: List[FunctionAPIModel] = Field(description="The list of methods that this class provides.")


@append_parameter_docs
class BackendClass(SchemaExtraMixin, BaseModel):
    """Base of the models generated for classes; create them with :meth:`create_model`."""

    backend_config: ClassVar[BackendClassConfig]

    if TYPE_CHECKING:
        function: BackendFunction

    @property
    def return_model(self) -> Type[BaseModel]:
        """Return model of the selected method."""
        return self.function.return_model

    def __call__(self) -> ReturnModel:
        kws = utils.get_kws(self.backend_config.signature, self)  # type: ignore[arg-type]
        method = self.function
        method_kws = utils.get_kws(method.backend_config.signature, method)  # type: ignore[arg-type]
        instance: Any = self.backend_config.Class(**kws)
        result = getattr(instance, method.func_name)(**method_kws)
        # a PendingResult for an ``async def`` method (see validated_result), as in BackendModule.__call__
        validated: ReturnModel = validated_result(result, method.return_model)
        return validated

    @classmethod
    def get_constructor_fields(
        cls, Class: Type[Any], config: ClassConfig, class_name: Optional[str]
    ) -> Tuple[Dict[str, Any], BackendClassConfig]:
        """Fields of the constructor (``class_name`` plus its parameters) and the bound config."""
        sig = inspect.signature(Class.__init__)
        docstring = docstring_parser.parse(Class.__doc__ or "")
        init_docstring = docstring_parser.parse(Class.__init__.__doc__ or "")
        docstring.params.extend(init_docstring.params)
        docstring.meta.extend(init_docstring.meta)
        bound = BackendClassConfig(
            Class=Class,
            class_name=class_name or utils.snake_to_camel("Class", Class.__name__),
            **config.model_copy(deep=True).model_dump(),
        )
        fields = utils.get_fields(Class.__name__, sig, docstring, bound)
        fields["class_name"] = fields.pop("func_name")
        return fields, bound

    @classmethod
    def create_model(
        cls,
        Class: Type[Any],
        config: Optional[ClassConfig] = None,
        methods: Optional[List[Union[Type[BackendFunction], Callable[..., Any], str]]] = None,
        class_name: Optional[str] = None,
        **kwargs: Any,
    ) -> Type["BackendClass"]:
        """Generate the model of `Class` and of each of its served methods."""
        if config is None:
            config = getattr(Class, "__pulsar_config__", None) or ClassConfig()
        fields, bound = cls.get_constructor_fields(Class, config, class_name)
        class_name = bound.class_name
        if "function" in fields:
            raise ValueError(f"`function` must not be an init parameter for {Class.__name__}!")

        if not methods:
            methods = list(bound.methods) or [
                name for name, _ in inspect.getmembers(Class, predicate=inspect.isfunction) if not name.startswith("_")
            ]
        if not methods:
            raise ValueError("No methods of the class have been specified!")

        for method in methods:
            if inspect.isclass(method) and issubclass(method, BackendFunction):
                name, method_model = method.backend_config.name, method
            else:
                func = method if callable(method) else getattr(Class, method)
                name = func.__name__
                method_model = BackendFunction.create_model(
                    func, class_name=utils.snake_to_camel("Meth", class_name, name)
                )
            bound.models.setdefault(name, method_model)
        bound.methods = list(bound.models)

        members = list(bound.models.values())
        union: Any = members[0]
        for m in members[1:]:
            union = Union[union, m]
        fields["function"] = (union, Field(description="The method to call."))
        kwargs.update(fields)

        model: Type[BackendClass] = create_model(
            class_name, __validators__=bound.validators, __module__=Class.__module__, __base__=cls, **kwargs
        )
        model.backend_config = bound
        bound.Class = Class
        bound.update_from_cls()
        model.__doc__ = utils.get_desc(docstring_parser.parse(Class.__doc__ or ""))
        return model

    @classmethod
    def _get_constructor_model(cls) -> Type[BaseModel]:
        config = cls.backend_config
        fields, _ = cls.get_constructor_fields(
            config.Class, ClassConfig(**config.model_dump(exclude={"Class", "models", "class_name"})), config.class_name
        )
        fields["__doc__"] = cls.__doc__
        return create_model(config.class_name, __module__=config.Class.__module__, **fields)

    @classmethod
    def get_api_info(cls) -> ClassAPIModel:
        """This class's entry in the module API."""
        return ClassAPIModel(
            name=cls.backend_config.name,
            rpc_schema=cls._get_constructor_model().model_json_schema(),
            methods=[m.get_api_info() for m in cls.backend_config.models.values()],
        )



ClassConfig.model_rebuild()
