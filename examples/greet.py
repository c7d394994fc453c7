"""A backend function with arguments and documentation.

Serve it and call it (with ``demessaging-rs broker`` running on port 8080)::

    python examples/greet.py listen
    python examples/greet.py send-request '{"func_name": "hello_world", "name": "Peter"}'
"""
from demessaging_rs import main

__all__ = ["hello_world"]


def hello_world(name: str) -> str:
    """Greet somebody.

    Parameters
    ----------
    name: str
        Who to greet.

    Returns
    -------
    str
        The greeting.
    """
    return "Hello World, " + name


if __name__ == "__main__":
    main(messaging_config=dict(topic="greet-topic"))
