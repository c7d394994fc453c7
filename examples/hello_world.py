"""Hello world: the smallest DASF backend module, served through demessaging-rs.

Start a broker, serve this module, and call it::

    demessaging-rs broker --port 8080 &
    python examples/hello_world.py listen
    python examples/hello_world.py send-request '{"func_name": "hello_world"}'

Print its JSON schema with ``python examples/hello_world.py schema`` and write a client stub with
``python examples/hello_world.py generate > stub.py``.
"""
from demessaging_rs import main

__all__ = ["hello_world"]


def hello_world() -> str:
    return 'HelloWorld'


if __name__ == "__main__":
    main(messaging_config=dict(topic="hello-world-topic"))
