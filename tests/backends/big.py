"""Backend used by the tests: large payloads, errors and slow calls."""
import time

from demessaging_rs import main

__all__ = ["big", "echo", "fail", "add", "sleep", "hold_gil"]


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


def hold_gil(seconds: int, marker: str) -> int:
    """Write `marker` (a file path), then hold the GIL for `seconds` in one C call (libc's sleep through
    ctypes.PyDLL, which keeps the GIL), as a long computation in a C extension may."""
    import ctypes

    with open(marker, "w") as f:
        f.write("holding")
    ctypes.PyDLL(None).sleep(seconds)
    return seconds


if __name__ == "__main__":
    main(messaging_config=dict(topic="big-topic"))
