"""Backend whose function and class take a registered pydantic model as argument."""

from typing import List

from pydantic import BaseModel

from demessaging_rs import main, registry

__all__ = ["total", "Accumulator"]


@registry.register_type
class Measurement(BaseModel):
    """One measured value."""

    value: int


def total(items: List[Measurement]) -> int:
    """Sum up measurements.

    Parameters
    ----------
    items : list of Measurement
        the measurements

    Returns
    -------
    int
        the sum of their values
    """
    return sum(item.value for item in items)


class Accumulator:
    """Measurements collected so far.

    Parameters
    ----------
    items : list of Measurement
        the measurements
    """

    def __init__(self, items: List[Measurement]) -> None:
        self.items = items

    def add(self, item: Measurement) -> int:
        """Sum of the collected measurements and one more.

        Parameters
        ----------
        item : Measurement
            the additional measurement

        Returns
        -------
        int
            the sum
        """
        return sum(i.value for i in self.items) + item.value


if __name__ == "__main__":
    main(messaging_config=dict(topic="scenario-basemodel"))
