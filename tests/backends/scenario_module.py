"""Backend for the reference scenarios: plain and typed functions, a class, private members, __all__."""

from typing import List

import scenario_types
from demessaging_rs import main

__all__ = ["func_arbitrary_model", "func_basic", "func_arbitrary_type", "Class"]


def func_arbitrary_model(a: scenario_types.ArbitraryTestModel) -> scenario_types.ArbitraryTestModel:
    """Double the value of a model.

    Parameters
    ----------
    a : ArbitraryTestModel
        the model to double

    Returns
    -------
    ArbitraryTestModel
        a copy with twice the value
    """
    return scenario_types.ArbitraryTestModel(value=2 * a.value)


def func_basic(a: int) -> List[int]:
    """Wrap an integer into a list.

    Parameters
    ----------
    a : int
        the integer to wrap

    Returns
    -------
    list of int
        a list holding only `a`
    """
    return [a]


def func_arbitrary_type(a: scenario_types.ArbitraryType) -> scenario_types.ArbitraryType:
    """Increment a boxed integer.

    Parameters
    ----------
    a : ArbitraryType
        the boxed integer

    Returns
    -------
    ArbitraryType
        a new box holding a + 1
    """
    return scenario_types.ArbitraryType(a.a + 1)


def _private_func(a: int) -> int:
    """Not listed in __all__ and private: never served."""
    return a


def unlisted_func(a: int) -> int:
    """Public, but not listed in __all__: not served either."""
    return a


class Class:
    """Hold two integers and do sums with them.

    Parameters
    ----------
    a : int
        first integer
    b : int, optional
        second integer, by default 1
    """

    def __init__(self, a: int, b: int = 1) -> None:
        """Keep both integers on the instance."""
        self.a = a
        self.b = b

    def add2a(self, c: int) -> int:
        """Add a number to the first integer.

        Parameters
        ----------
        c : int
            the number to add

        Returns
        -------
        int
            a + c
        """
        return self.a + c

    def add2b(self, c: int) -> int:
        """Add a number to the second integer.

        Parameters
        ----------
        c : int
            the number to add

        Returns
        -------
        int
            b + c
        """
        return self.b + c

    def sum(self) -> int:
        """Sum of both integers.

        Returns
        -------
        int
            a + b
        """
        return self.a + self.b

    def _private_method(self) -> int:
        """Private: not callable through the backend."""
        return -1


if __name__ == "__main__":
    main(messaging_config=dict(topic="scenario-module"))
