"""Functions and classes for the per-function and per-class scenarios (not a backend module)."""

from typing import List

from demessaging_rs import configure
from scenario_types import ArbitraryTestModel, ArbitraryType


def func_sig(a: int) -> List[int]:
    """Put an integer into a list.

    Parameters
    ----------
    a : int
        An integer

    Returns
    -------
    list of int
        The list with a
    """
    return [a]


@configure(json_schema_extra={"testFunctionExtra": {"testFunction": "attribute"}})
def func_json_schema_extra(a: int) -> List[int]:
    """Like func_sig, with an extra entry in its schema.

    Parameters
    ----------
    a : int
        An integer

    Returns
    -------
    list of int
        The list with a
    """
    return [a]


def func_missing_doc(a: int) -> int:
    return a


def func_missing_sig(a):  # type: ignore[no-untyped-def]
    """Return what it gets, without any annotation.

    Parameters
    ----------
    a : int
        An integer

    Returns
    -------
    int
        An integer
    """
    return a


def func_invalid_sig(a: int) -> int:
    """Promise an integer, return a text.

    Parameters
    ----------
    a : int
        An integer

    Returns
    -------
    int
        An integer (but really a string)
    """
    return "not an integer"  # type: ignore[return-value]


def func_arbitrary_types(a: ArbitraryType) -> ArbitraryType:
    """Return the boxed integer unchanged.

    Parameters
    ----------
    a : ArbitraryType
        A boxed integer

    Returns
    -------
    ArbitraryType
        The same box
    """
    return a


def func_arbitrary_model(a: ArbitraryTestModel) -> ArbitraryTestModel:
    """Return the model unchanged.

    Parameters
    ----------
    a : ArbitraryTestModel
        A model

    Returns
    -------
    ArbitraryTestModel
        The same model
    """
    return a


@configure(json_schema_extra={"testClassExtra": {"testClass": "attribute"}})
class ClassJsonSchemaExtra:
    """A class with an extra entry in its schema.

    Parameters
    ----------
    a : int
        first integer
    """

    def __init__(self, a: int) -> None:
        self.a = a

    def add2a(self, c: int) -> int:
        """Add c to a."""
        return self.a + c


class ClassMethodJsonSchemaExtra:
    """A class whose method has an extra entry in its schema.

    Parameters
    ----------
    a : int
        first integer
    """

    def __init__(self, a: int) -> None:
        self.a = a

    @configure(json_schema_extra={"testMethodExtra": {"testMethod": "attribute"}})
    def add2a(self, c: int) -> int:
        """Add c to a."""
        return self.a + c
