"""A backend with `async def` members (they run on the backend's event loop) next to a sync one."""

import asyncio
import time
from pathlib import Path
from typing import List, Optional

from demessaging_rs import main

__all__ = ["nap", "afail", "forever", "stuck", "add", "Greeter"]


async def nap(seconds: float) -> float:
    """Await `seconds`, then return them."""
    await asyncio.sleep(seconds)
    return seconds


async def afail(message: str) -> str:
    """Raise with `message` after a first await."""
    await asyncio.sleep(0)
    raise RuntimeError(message)


async def forever(marker: Optional[str] = None) -> str:
    """Never return (after writing `marker`, a file path, to show that it runs)."""
    if marker:
        Path(marker).write_text("running")
    await asyncio.Event().wait()
    return "unreachable"


def stuck(marker: Optional[str] = None) -> str:
    """A sync member that does not return for an hour (after writing `marker`, as `forever`)."""
    if marker:
        Path(marker).write_text("running")
    time.sleep(3600)
    return "unreachable"


def add(a: int, b: int) -> int:
    """Add (a sync member on the worker threads)."""
    return a + b


class Greeter:
    """A class with an async method."""

    def __init__(self, name: str):
        self.name = name

    async def greet(self, times: int) -> List[str]:
        """Greet `times` times."""
        await asyncio.sleep(0.01)
        return [f"hi {self.name}"] * times


if __name__ == "__main__":
    main()
