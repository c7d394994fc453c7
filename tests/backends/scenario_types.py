"""Types shared by the scenario backends: a non-pydantic class with its own validation, and a model."""

from typing import Any

from pydantic import BaseModel, Field
from pydantic_core import core_schema


class ArbitraryType:
    """A box around an integer; requests carry the bare integer, replies send it back the same way."""

    def __init__(self, a: int) -> None:
        self.a = a

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ArbitraryType) and other.a == self.a

    def __repr__(self) -> str:
        return f"ArbitraryType({self.a!r})"

    @classmethod
    def _coerce(cls, value: Any) -> "ArbitraryType":
        if isinstance(value, cls):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        raise ValueError(f"expected an integer or an ArbitraryType, got {value!r}")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._coerce, serialization=core_schema.plain_serializer_function_ser_schema(lambda box: box.a)
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict:
        # deliberately untyped in the schema: only the validator above knows what it accepts
        return {"description": "an integer, boxed on the backend"}


class ArbitraryTestModel(BaseModel):
    """A small pydantic model used as argument and return type."""

    value: int = Field(description="any integer")
