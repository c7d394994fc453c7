"""The public asyncio API (`asend_request`, `acompute`, `generate --async`), the default queue semantics,
and a clean exit after many asyncio calls."""

from __future__ import annotations

import asyncio
import collections
import textwrap

import pytest

from conftest import BACKENDS, EXAMPLES
from demessaging_rs import BackendModule
from demessaging_rs.exceptions import CallTimeout, RemoteError
from test_hello_world import load

BIG = BACKENDS / "big.py"


def model(broker, topic: str, **mc):
    mod = load(BIG)
    config = {"topic": topic, "host": "127.0.0.1", "port": broker.port, "call_timeout": 60, **mc}
    return BackendModule.create_model(members=[mod.add, mod.sleep, mod.fail], messaging_config=config)


def test_1000_calls_in_flight_all_matched(broker, backends):
    backends.start(BIG, "aio-many")
    m = model(broker, "aio-many")

    async def main():
        return await asyncio.gather(*(m.asend_request({"func_name": "add", "a": i, "b": 7}) for i in range(1000)))

    assert [r.root for r in asyncio.run(main())] == [i + 7 for i in range(1000)]


def test_acompute_errors_and_per_call_timeout(broker, backends):
    backends.start(BIG, "aio-errors")
    m = model(broker, "aio-errors")

    async def main():
        assert (await m.model_validate({"func_name": "add", "a": 1, "b": 2}).acompute()).root == 3
        with pytest.raises(RemoteError, match="error executing request: boom"):
            await m.asend_request({"func_name": "fail", "message": "boom"})
        with pytest.raises(CallTimeout, match="aio-errors.*sleep") as info:
            await m.asend_request({"func_name": "sleep", "seconds": 2.0}, timeout=0.2)
        assert isinstance(info.value, TimeoutError)
        # the connection and the in-flight table are fine afterwards
        return await m.asend_request({"func_name": "add", "a": 40, "b": 2})

    assert asyncio.run(main()).root == 42


def test_cancelled_calls_are_forgotten_and_the_rest_still_match(broker, backends):
    backends.start(BIG, "aio-cancel")
    m = model(broker, "aio-cancel")

    async def main():
        slow = [asyncio.ensure_future(m.asend_request({"func_name": "sleep", "seconds": 0.5})) for _ in range(20)]
        await asyncio.sleep(0.05)
        for task in slow:
            task.cancel()
        cancelled = await asyncio.gather(*slow, return_exceptions=True)
        assert all(isinstance(c, asyncio.CancelledError) for c in cancelled)
        # cancellations near completion, many times
        outcomes = collections.Counter()
        for round_ in range(10):
            tasks = [asyncio.ensure_future(m.asend_request({"func_name": "add", "a": i, "b": 1})) for i in range(100)]
            await asyncio.sleep(0.0005 * round_)
            for t in tasks[::2]:
                t.cancel()
            for i, r in enumerate(await asyncio.gather(*tasks, return_exceptions=True)):
                if isinstance(r, asyncio.CancelledError):
                    outcomes["cancelled"] += 1
                else:
                    assert r.root == i + 1
                    outcomes["answered"] += 1
        assert outcomes["answered"] >= 500
        return await asyncio.gather(*(m.asend_request({"func_name": "add", "a": i, "b": 0}) for i in range(50)))

    assert [r.root for r in asyncio.run(main())] == list(range(50))


def test_default_queue_answers_2000_in_flight_with_2_workers(broker, backends):
    backends.start(BIG, "aio-default-queue", "--max-workers", "2")
    m = model(broker, "aio-default-queue")

    async def main():
        return await asyncio.gather(
            *(m.asend_request({"func_name": "add", "a": i, "b": 1}) for i in range(2000)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert [r if isinstance(r, Exception) else r.root for r in results] == [i + 1 for i in range(2000)]


def test_explicit_queue_size_rejects_overflow_with_the_reference_text(broker, backends):
    backends.start(BIG, "aio-small-queue", "--max-workers", "2", "--queue_size", "10")
    m = model(broker, "aio-small-queue")

    async def main():
        return await asyncio.gather(
            *(m.asend_request({"func_name": "sleep", "seconds": 0.05}) for _ in range(100)), return_exceptions=True
        )

    results = asyncio.run(main())
    rejected = [r for r in results if isinstance(r, RemoteError)]
    answered = [r for r in results if not isinstance(r, Exception)]
    assert rejected and answered and len(rejected) + len(answered) == 100
    assert {str(r) for r in rejected} == {"request rejected due to queue overflow, try again later"}


def test_generated_async_stub(broker, backends, run_python, tmp_path):
    backends.start(EXAMPLES / "hello_world_class.py", "aio-stub")
    args = ["-t", "aio-stub", "-H", "127.0.0.1", "-p", str(broker.port), "generate", "--async"]
    gen = run_python(str(EXAMPLES / "hello_world_class.py"), *args)
    assert gen.returncode == 0, gen.stderr
    assert "async def repeat_message" in gen.stdout
    (tmp_path / "aio_stub.py").write_text(gen.stdout)
    code = textwrap.dedent(
        """
        import asyncio, aio_stub
        async def main():
            h = aio_stub.HelloWorld('hi')
            return await asyncio.gather(h.repeat_message(2), h.shout())
        print('RESULT', asyncio.run(main()))
        """
    )
    call = run_python("-c", code, cwd=tmp_path, timeout=60)
    assert call.returncode == 0, call.stderr + gen.stdout
    assert "RESULT [['hi', 'hi'], 'HI']" in call.stdout


def test_exit_after_1000_asyncio_calls_is_always_clean(broker, backends, run_python, tmp_path):
    """Regression: a tokio thread completing a future while the interpreter finalizes aborted the process."""
    backends.start(EXAMPLES / "greet.py", "aio-exit")
    script = tmp_path / "many_then_exit.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio
            from demessaging_rs import BackendModule

            def hello_world(name: str) -> str:
                return ""

            mc = dict(topic="aio-exit", host="127.0.0.1", port={broker.port}, call_timeout=60)
            Model = BackendModule.create_model(members=[hello_world], messaging_config=mc)

            async def main():
                calls = [Model.asend_request({{"func_name": "hello_world", "name": str(i)}}) for i in range(1000)]
                done = await asyncio.gather(*calls)
                assert done[-1].root == "Hello World, 999"
                # and some still in flight when the script ends
                for i in range(100):
                    asyncio.ensure_future(Model.asend_request({{"func_name": "hello_world", "name": "late"}}))

            asyncio.run(main())
            """
        )
    )
    codes = collections.Counter(run_python(str(script), timeout=60).returncode for _ in range(50))
    assert codes == {0: 50}
