"""Backend used by the tests: large payloads, errors and slow calls."""
import time

from demessaging_rs import main

__all__ = ["big", "echo", "fail", "add", "sleep"]


def big(n: int) -> str:
    """Return a string of `n` characters."""
    return "x" * n


def echo(data: str) -> str:
    """Return `data` unchanged."""
    return data


def fail(message: str) -> str:
    """Raise an error with `message`."""
    raise RuntimeError(message)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def sleep(seconds: float) -> float:
    """Sleep, then return the seconds slept."""
    time.sleep(seconds)
    return seconds


if __name__ == "__main__":
    main(messaging_config=dict(topic="big-topic"))
