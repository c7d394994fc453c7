"""A class as backend member: a call names the constructor arguments and one method.

Serve it and call it (with ``demessaging-rs broker`` running on port 8080)::

    python examples/hello_world_class.py listen
    python examples/hello_world_class.py send-request \\
        '{"class_name": "HelloWorld", "message": "hi", "function": {"func_name": "repeat_message", "repeat": 3}}'
"""
from typing import List

from demessaging_rs import main

__all__ = ["HelloWorld"]


class HelloWorld:
    """A class that repeats a message.

    Parameters
    ----------
    message: str
        The message to repeat.
    """

    def __init__(self, message: str):
        self.message = message

    def repeat_message(self, repeat: int) -> List[str]:
        """Repeat the message.

        Parameters
        ----------
        repeat: int
            How often.
        """
        return [self.message] * repeat

    def shout(self) -> str:
        """The message in capitals."""
        return self.message.upper()


if __name__ == "__main__":
    main(messaging_config=dict(topic="hello-world-class-topic"))
