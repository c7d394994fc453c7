"""Pydantic models for functions: one model per function, validating a call and its return value."""

from __future__ import annotations

import inspect
import warnings
from textwrap import dedent
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, Optional, Type

import docstring_parser
from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model, field_validator
from pydantic.functional_serializers import PlainSerializer
from pydantic.json_schema import JsonSchemaValue
from typing_extensions import Annotated

from demessaging_rs.backend import utils
from demessaging_rs.config import FunctionConfig
from demessaging_rs.utils import SchemaExtraMixin, append_parameter_docs, merge_config  # noqa: F401

__all__ = [
    "ReturnModel",
    "PendingResult",
    "BackendFunctionConfig",
    "FunctionAPIModel",
    "BackendFunction",
    "get_return_model",
]

if TYPE_CHECKING:
    _RootModel = RootModel[Any]
else:
    _RootModel = RootModel  # not RootModel[Any]: that would be a parametrized subclass of RootModel


class ReturnModel(_RootModel):
    """Base of the models that validate return values."""

    model_config = ConfigDict(arbitrary_types_allowed=True)


class PendingResult:
    """What calling the model of an ``async def`` member gives: its awaitable and the model that validates
    the value it produces (``await pending.resolve()``)."""

    def __init__(self, awaitable: Any, return_model: Type[BaseModel]) -> None:
        self.awaitable = awaitable
        self.return_model = return_model

    async def resolve(self) -> ReturnModel:
        return self.return_model.model_validate(await self.awaitable)  # type: ignore[return-value]

    def close(self) -> None:
        """Discard the awaitable without running it."""
        close = getattr(self.awaitable, "close", None)
        if close is not None:
            close()


_NEVER_AWAITABLE = frozenset({str, int, float, bool, bytes, type(None), dict, list, tuple})


def validated_result(value: Any, return_model: Type[BaseModel]) -> Any:
    """`value` validated by `return_model`, or a :class:`PendingResult` when it is still to be awaited."""
    # NOTE: plain values skip inspect.isawaitable (an ABC check, about 1 µs per request)
    if type(value) not in _NEVER_AWAITABLE and inspect.isawaitable(value):
        return PendingResult(value, return_model)
    return return_model.__pydantic_validator__.validate_python(value)


@append_parameter_docs
class BackendFunctionConfig(FunctionConfig):
    """Settings of a function, bound to the function itself."""

    function: Any = Field(description="The function to call.")

    class_name: str = Field(description="Name of the model class")

    def update_from_function(self) -> None:
        """Fill empty name, doc and signature from the function."""
        func = self.function
        self.name = self.name or func.__name__ or ""
        self.doc = self.doc or dedent(inspect.getdoc(func) or "")
        self.signature = self.signature or inspect.signature(func)


class FunctionAPIModel(BaseModel):
    """Description of a function in the module's API."""

    name: str = Field(description="The name of the function that is used as identifier in the RPC.")

    rpc_schema: JsonSchemaValue = Field(description="The JSON Schema for the function.")

    return_schema: JsonSchemaValue = Field(description="The JSON Schema for the return value.")


def get_return_model(docstring: docstring_parser.Docstring, config: BackendFunctionConfig) -> Type[BaseModel]:
    """Build the root model that validates (and serializes) what ``config.function`` returns.

    The field description comes from the ``Returns`` section of `docstring` (one entry as is, several
    as a bullet list), ``config.returns`` adds Field arguments, ``config.return_annotation`` overrides the
    annotation, ``config.return_serializer``/``return_validators`` are attached. Without a return
    annotation the value is not validated and a RuntimeWarning is issued.
    """
    descriptions = [
        m.description for m in docstring.meta if isinstance(m, docstring_parser.DocstringReturns) and m.description
    ]
    if len(descriptions) == 1:
        description = descriptions[0].strip()
    else:
        description = "\n".join(f"- {d}" for d in descriptions).strip()

    field_kws: Dict[str, Any] = {"default": None}
    if description:
        field_kws["description"] = description
    field_kws.update(config.returns)

    sig = config.signature
    if config.return_annotation is not None:
        annotation = config.return_annotation
    elif sig is not None and sig.return_annotation is not sig.empty:
        annotation = Any if sig.return_annotation is None else sig.return_annotation
    else:
        warnings.warn(f"Missing return signature for {config.function.__name__}!", RuntimeWarning)
        annotation = Any
    if config.return_serializer is not None:
        if config.return_annotation is None and config.return_validators:
            annotation = Any
        annotation = Annotated[annotation, PlainSerializer(config.return_serializer, return_type=str, when_used="json")]

    kws: Dict[str, Any] = {"root": (annotation, Field(**field_kws)), "__base__": ReturnModel}
    if config.return_validators:
        kws["__validators__"] = {
            f"root_validator_{i}": field_validator("root")(func) for i, func in enumerate(config.return_validators, 1)
        }
    if "description" in field_kws:
        kws["__doc__"] = field_kws["description"]
    return create_model(config.class_name, **kws)


@append_parameter_docs
class BackendFunction(SchemaExtraMixin, BaseModel):
    """Base of the models generated for functions; create them with :meth:`create_model`."""

    model_config = ConfigDict(validate_assignment=True, arbitrary_types_allowed=True)

    backend_config: ClassVar[BackendFunctionConfig]

    return_model: ClassVar[Type[BaseModel]]

    if TYPE_CHECKING:
        func_name: str

    def __call__(self) -> ReturnModel:
        config = self.backend_config
        kws = utils.get_kws(config.signature, self)  # type: ignore[arg-type]
        for key in config.reporter_args:
            kws[key] = getattr(self, key)
        # a PendingResult for an ``async def`` function (see validated_result), as in BackendModule.__call__;
        # an annotated name rather than cast(): no extra call on the path of every request
        result: ReturnModel = validated_result(config.function(**kws), self.return_model)
        return result

    @classmethod
    def create_model(
        cls,
        func: Callable[..., Any],
        config: Optional[FunctionConfig] = None,
        class_name: Optional[str] = None,
        **kwargs: Any,
    ) -> Type["BackendFunction"]:
        """Generate the model of `func`: its fields are ``func_name`` and the function's parameters."""
        sig = inspect.signature(func)
        docstring = docstring_parser.parse(func.__doc__ or "")
        if config is None:
            config = getattr(func, "__pulsar_config__", None) or FunctionConfig()
        name = func.__name__
        class_name = class_name or utils.snake_to_camel("Func", name)

        validators = dict(config.validators)
        config.validators.clear()
        bound = BackendFunctionConfig(function=func, class_name=class_name, **config.model_copy(deep=True).model_dump())
        bound.validators = validators
        config.validators.update(validators)
        bound.update_from_function()

        kwargs.update(utils.get_fields(name, sig, docstring, bound))
        field_validators = {
            f"{field}_validator_{i}": field_validator(field)(fn)
            for field, fns in bound.validators.items()
            for i, fn in enumerate(fns, 1)
        }
        model: Type[BackendFunction] = create_model(
            class_name, __validators__=field_validators, __base__=cls, __module__=func.__module__, **kwargs
        )
        model.return_model = get_return_model(docstring, bound)
        model.backend_config = bound
        model.__doc__ = utils.get_desc(docstring)
        return model

    @classmethod
    def get_api_info(cls) -> FunctionAPIModel:
        """This function's entry in the module API."""
        return FunctionAPIModel(
            name=cls.backend_config.name,
            rpc_schema=cls.model_json_schema(),
            return_schema=cls.return_model.model_json_schema(),
        )


BackendFunctionConfig.model_rebuild()
