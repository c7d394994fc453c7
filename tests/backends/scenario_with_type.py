"""Backend with a type registered for the generated client stub."""

from demessaging_rs import main, registry

try:  # an optional dependency: generated stubs import it as well
    import scenario_types
except ImportError:  # pragma: no cover
    scenario_types = None

__all__ = ["describe", "double"]


@registry.register_type
class MyType:
    """A self-contained helper class that generated stubs carry along."""

    def __init__(self, a: int) -> None:
        self.a = a

    def add2a(self, b: int) -> int:
        return self.a + b


def describe(a: int) -> str:
    """Describe an integer.

    Parameters
    ----------
    a : int
        An integer

    Returns
    -------
    str
        Its description
    """
    return f"integer {a}"


def double(a: scenario_types.ArbitraryTestModel) -> scenario_types.ArbitraryTestModel:
    """Double the value of a model.

    Parameters
    ----------
    a : ArbitraryTestModel
        the model

    Returns
    -------
    ArbitraryTestModel
        the model with twice the value
    """
    return scenario_types.ArbitraryTestModel(value=2 * a.value)


if __name__ == "__main__":
    main(messaging_config=dict(topic="scenario-with-type"))
