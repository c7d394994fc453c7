"""`async def` members run on one event loop the backend owns: many requests in flight, no thread each."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import pytest

from conftest import BACKENDS
from demessaging_rs import BackendModule
from demessaging_rs.exceptions import CallTimeout, RemoteError
from test_hello_world import load

ASYNC = BACKENDS / "asyncfuncs.py"


def model(broker, topic: str, call_timeout: float = 60):
    mod = load(ASYNC)
    mc = {"topic": topic, "host": "127.0.0.1", "port": broker.port, "call_timeout": call_timeout}
    members = [mod.nap, mod.afail, mod.forever, mod.stuck, mod.add, mod.Greeter]
    return BackendModule.create_model(members=members, messaging_config=mc)


def test_100_concurrent_awaiting_calls_overlap(broker, backends):
    backends.start(ASYNC, "async-overlap", "--max-workers", "2")
    m = model(broker, "async-overlap")

    async def main():
        t0 = time.monotonic()
        results = await asyncio.gather(*(m.asend_request({"func_name": "nap", "seconds": 0.5}) for _ in range(100)))
        return time.monotonic() - t0, [r.root for r in results]

    elapsed, results = asyncio.run(main())
    assert results == [0.5] * 100
    assert elapsed < 10, f"100 calls awaiting 0.5 s took {elapsed:.1f} s: they did not run concurrently"


def test_async_errors_classes_and_sync_members_side_by_side(broker, backends):
    backends.start(ASYNC, "async-mixed")
    m = model(broker, "async-mixed")
    with pytest.raises(RemoteError, match="error executing request: boom"):
        m.send_request({"func_name": "afail", "message": "boom"})
    assert m.send_request({"func_name": "add", "a": 2, "b": 3}).root == 5
    greet = {"class_name": "Greeter", "name": "Ada", "function": {"func_name": "greet", "times": 2}}
    assert m.send_request(greet).root == ["hi Ada", "hi Ada"]
    assert m.send_request({"func_name": "nap", "seconds": 0.01}).root == 0.01


def test_never_returning_member_request_timeout_or_caller_timeout(broker, backends):
    backends.start(ASYNC, "async-timeout", "--request-timeout", "0.3")
    m = model(broker, "async-timeout")
    with pytest.raises(RemoteError, match="no result within the request timeout of 0.3 s"):
        m.send_request({"func_name": "forever"})
    assert m.send_request({"func_name": "add", "a": 1, "b": 1}).root == 2

    backends.start(ASYNC, "async-no-timeout")
    m = model(broker, "async-no-timeout", call_timeout=0.5)
    with pytest.raises(CallTimeout, match="async-no-timeout.*forever"):
        m.send_request({"func_name": "forever"})
    assert m.send_request({"func_name": "add", "a": 1, "b": 2}).root == 3


@pytest.mark.parametrize("func", ["forever", "stuck"])
def test_shutdown_answers_requests_that_outlast_the_drain_timeout_with_an_error(broker, backends, tmp_path, func):
    """`async def` ones are cancelled on the loop, sync ones (a worker that cannot be stopped) get the same
    error reply when the drain timeout is over: no caller waits out its own timeout."""
    proc = backends.start(ASYNC, f"shutdown-{func}", "--drain-timeout", "1")
    m = model(broker, f"shutdown-{func}")
    outcome = {}
    marker = tmp_path / "forever-runs"

    def call():
        try:
            outcome["result"] = m.send_request({"func_name": func, "marker": str(marker)})
        except Exception as e:  # noqa: BLE001 - the test inspects it
            outcome["error"] = e

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:  # the request runs on the backend's loop
        time.sleep(0.02)
    assert marker.exists(), "the async request never started"
    proc.send_signal(signal.SIGTERM)
    caller.join(timeout=30)
    assert not caller.is_alive()
    assert isinstance(outcome.get("error"), RemoteError), outcome
    assert "cancelled, the backend is shutting down" in str(outcome["error"])
    assert proc.wait(timeout=30) == 0


def test_process_request_runs_an_async_member_locally():
    m = model(type("B", (), {"port": 1})(), "local")
    assert m.process_request({"func_name": "nap", "seconds": 0.01}).root == 0.01
