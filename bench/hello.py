"""Benchmark backend: hello_world and echo (the reference runs a copy importing `demessaging`)."""
from demessaging_rs import main

__all__ = ["hello_world", "echo"]


def hello_world(name: str) -> str:
    return "Hello, " + name


def echo(data: str) -> str:
    return data


if __name__ == "__main__":
    main(messaging_config=dict(topic="bench-hello"))
