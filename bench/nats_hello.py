"""NATS hello_world responder for bench_calls.py: plain JSON request/reply with nats-py, no validation.

    python bench/nats_hello.py --url nats://127.0.0.1:4222 [--subject bench.hello]

Subscribes to the subject and answers each request ``{"func_name": "hello_world", "name": ...}`` with the
JSON-encoded return value via ``msg.respond``. Prints ``ready`` once the subscription is registered at the
server; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

import nats


def hello_world(name: str) -> str:
    return "Hello, " + name


async def serve(url: str, subject: str) -> None:
    nc = await nats.connect(url, name="bench-nats-hello")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def handle(msg) -> None:  # type: ignore[no-untyped-def]
        try:
            request = json.loads(msg.data)
            reply = json.dumps(hello_world(request["name"]))
        except Exception as e:  # noqa: BLE001 - a bad request gets an error reply, the responder keeps serving
            reply = json.dumps({"error": f"{type(e).__name__}: {e}"})
        await msg.respond(reply.encode())

    await nc.subscribe(subject, cb=handle)
    await nc.flush()
    print("ready", flush=True)
    await stop.wait()
    try:
        await nc.drain()
    except Exception:  # noqa: BLE001 - the server may already be gone
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="nats://127.0.0.1:4222")
    ap.add_argument("--subject", default="bench.hello")
    args = ap.parse_args()
    asyncio.run(serve(args.url, args.subject))


if __name__ == "__main__":
    main()
