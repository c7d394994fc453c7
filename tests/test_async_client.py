"""The asyncio client: many calls in flight on one connection, and cancellation near completion."""

from __future__ import annotations

import asyncio
import json

from conftest import BACKENDS, client


def test_many_concurrent_async_calls(broker, backends):
    backends.start(BACKENDS / "big.py", "async-topic")
    c = client(broker, "async-topic")

    async def main():
        calls = [
            c.call_async("request", json.dumps({"func_name": "add", "a": i, "b": 1}), 30.0, "add") for i in range(500)
        ]
        return await asyncio.gather(*calls)

    try:
        results = asyncio.run(main())
        assert [(status, int(body)) for status, body, _ in results] == [("success", i + 1) for i in range(500)]
    finally:
        c.close()


def test_cancelling_calls_near_completion_leaves_the_client_usable(broker, backends):
    backends.start(BACKENDS / "big.py", "cancel-topic")
    c = client(broker, "cancel-topic")

    async def one(i, timeout):
        try:
            return await asyncio.wait_for(
                c.call_async("request", json.dumps({"func_name": "add", "a": i, "b": 0}), 30.0, "add"), timeout
            )
        except asyncio.TimeoutError:
            return None

    async def main():
        outcomes = []
        # timeouts spread around the round-trip time, so cancellations land before, during and after replies
        for round_ in range(10):
            outcomes += await asyncio.gather(*(one(i, 0.0002 * (i % 10)) for i in range(100)))
        after = await asyncio.gather(*(one(i, 10.0) for i in range(50)))
        return outcomes, after

    try:
        outcomes, after = asyncio.run(main())
        for o in outcomes:
            assert o is None or o[0] == "success"
        assert [int(body) for _, body, _ in after] == list(range(50)), "replies still matched to their calls"
    finally:
        c.close()
