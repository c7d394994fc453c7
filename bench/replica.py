"""Benchmark backend for bench/bench_replicas.py: a CPU-bound function and a trivial one."""
from demessaging_rs import main

__all__ = ["burn", "hello_world"]


def burn(rounds: int) -> int:
    """Pure-Python work that holds the GIL throughout (about 1 ms per 20,000 rounds here)."""
    total = 0
    for i in range(rounds):
        total += i * i % 7
    return total


def hello_world(name: str) -> str:
    return "Hello, " + name


if __name__ == "__main__":
    main(messaging_config=dict(topic="bench-replicas"))
