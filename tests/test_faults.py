"""Faults as they happen: the broker killed and restarted under load, a backend killed mid-request, a replica
of a persistent Shared topic killed with requests queued. Every process is real (broker CLI, backends as
subprocesses); every wait is bounded."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from demessaging_rs import BackendModule, Broker
from demessaging_rs.config import ModuleConfig
from demessaging_rs.exceptions import BrokerConnectionError, CallTimeout

HERE = Path(__file__).resolve().parent
FAULTY = HERE / "backends" / "faulty.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_broker_cli(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "demessaging_rs", "broker", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if "listening" in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("broker did not start")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _backend(port: int, topic: str, marks: Path, log: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(FAULTY), "-H", "127.0.0.1", "-p", str(port), "-t", topic, *extra, "listen"]
    with open(log, "a") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=str(FAULTY.parent),
                                env={**os.environ, "FAULT_MARKS": str(marks)})


def _model(port: int, topic: str, **messaging) -> type:
    sys.path.insert(0, str(FAULTY.parent))
    try:
        import faulty
    finally:
        sys.path.pop(0)
    cfg = ModuleConfig(messaging_config=dict(topic=topic, host="127.0.0.1", port=port, **messaging))
    return BackendModule.create_model("faulty", members=[faulty.work], config=cfg)


def _wait_answering(Model: type, procs: List[subprocess.Popen], log: Path, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"backend exited with {p.returncode}:\n{log.read_text()}")
        try:
            Model.send_request({"func_name": "work", "tag": "ready-check"}, timeout=0.5)
            return
        except (CallTimeout, BrokerConnectionError):
            time.sleep(0.05)
    raise AssertionError(f"backend not answering within {limit} s:\n{log.read_text()}")


class _Rig:
    """A backend (faulty.py, on `topic`) and the broker it uses, a CLI process that a test may kill and start
    again on the same port; `stop()` ends both."""

    def __init__(self, tmp_path: Path, topic: str, *extra: str, call_timeout: float = 30) -> None:
        self.port = _free_port()
        self.marks, self.log = tmp_path / "marks", tmp_path / "backend.log"
        self.broker = _start_broker_cli(self.port)
        self.backend = _backend(self.port, topic, self.marks, self.log, *extra)
        self.Model = _model(self.port, topic, call_timeout=call_timeout)

    def kill_broker(self) -> None:
        self.broker.send_signal(signal.SIGKILL)
        self.broker.wait(timeout=10)

    def start_broker(self) -> None:
        self.broker = _start_broker_cli(self.port)

    def stop(self) -> None:
        _stop(self.backend)
        _stop(self.broker)


def _first_answer(Model: type, tag: str, log: Path, limit: float = 60) -> None:
    """Call `work(tag)` (1 s each try) until it is answered: after a broker restart or a failover."""
    deadline = time.monotonic() + limit
    while True:
        try:
            assert Model.send_request({"func_name": "work", "tag": tag}, timeout=1).root == tag
            return
        except (CallTimeout, BrokerConnectionError):
            assert time.monotonic() < deadline, log.read_text()


def _marks(path: Path) -> List[Tuple[int, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        pid, tag = line.split(" ", 1)
        out.append((int(pid), tag))
    return out


def test_broker_killed_and_restarted_under_load(tmp_path):
    """4 threads call while the broker is SIGKILLed and restarted 1.5 s later on the same port: calls during
    the outage fail at once, the first call after the restart succeeds within seconds (not after a call
    timeout), no call waits out its timeout, nothing runs twice."""
    port = _free_port()
    marks, log = tmp_path / "marks", tmp_path / "backend.log"
    broker = _start_broker_cli(port)
    backend = _backend(port, "restart", marks, log)
    Model = _model(port, "restart", call_timeout=30)
    try:
        _wait_answering(Model, [backend], log)
        events: List[Tuple[float, float, bool, str]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def caller(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                start = time.monotonic()
                try:
                    Model.send_request({"func_name": "work", "tag": f"t{n}-{i}"})
                    ok, err = True, ""
                except (CallTimeout, BrokerConnectionError) as e:
                    ok, err = False, type(e).__name__
                with lock:
                    events.append((start, time.monotonic(), ok, err))
                if not ok:
                    stop.wait(0.05)

        threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        broker.send_signal(signal.SIGKILL)
        broker.wait(timeout=10)
        time.sleep(1.5)
        broker = _start_broker_cli(port)
        restarted = time.monotonic()
        deadline = restarted + 20
        while time.monotonic() < deadline:
            with lock:
                if any(ok and start > restarted for start, _end, ok, _e in events):
                    break
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(timeout=40)
        assert not any(t.is_alive() for t in threads)

        after = [e for e in events if e[2] and e[0] > restarted]
        assert after, "no call succeeded after the restart"
        recovery = min(end for _s, end, _ok, _e in after) - restarted
        print(f"first success {recovery:.2f} s after the restart")
        assert recovery < 10, recovery  # the goal is < 3 s; generous for a loaded CI machine
        failures = Counter(err for _s, _e, ok, err in events if not ok)
        assert "CallTimeout" not in failures, failures  # nothing waited out its 30 s timeout
        assert failures["BrokerConnectionError"] > 0  # the outage was seen
        tags = [tag for _pid, tag in _marks(marks) if tag != "ready-check"]
        assert len(tags) == len(set(tags)), [t for t, n in Counter(tags).items() if n > 1]
    finally:
        _stop(backend)
        _stop(broker)


def test_a_saturated_backend_does_not_work_through_a_dead_brokers_backlog(tmp_path):
    """100 calls of 0.3 s wait for a backend of 2 workers when the broker is SIGKILLed and restarted: their
    callers fail at once, and the backend does not run the requests its dead connection still held (15 s of
    work) before it serves the next call."""
    rig = _Rig(tmp_path, "stale", "--max-workers", "2", call_timeout=60)
    Model, marks, log = rig.Model, rig.marks, rig.log
    try:
        _wait_answering(Model, [rig.backend], log)
        outcomes: List[object] = []

        def flood() -> None:
            async def calls() -> List[object]:
                tasks = [Model.asend_request({"func_name": "work", "tag": f"s{i}", "seconds": 0.3}) for i in range(100)]
                return await asyncio.gather(*tasks, return_exceptions=True)
            outcomes.extend(asyncio.run(calls()))

        caller = threading.Thread(target=flood)
        caller.start()
        deadline = time.monotonic() + 30
        while sum(tag.startswith("s") for _pid, tag in _marks(marks)) < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        rig.kill_broker()
        caller.join(timeout=30)
        assert not caller.is_alive() and len(outcomes) == 100
        assert all(isinstance(o, BrokerConnectionError) for o in outcomes if not hasattr(o, "root")), outcomes
        rig.start_broker()
        _first_answer(Model, "fresh", log)
        ran = [tag for _pid, tag in _marks(marks)]
        stale = [t for t in ran[: ran.index("fresh")] if t.startswith("s")]
        assert len(stale) < 30, f"{len(stale)} requests of the dead connection ran before the next call"
    finally:
        rig.stop()


def test_a_call_timeout_covers_reconnecting(tmp_path):
    """After a broker restart the client reconnects, and waits for the backend's pong before it publishes;
    with no backend coming back, a call of timeout 1 s still ends after about 1 s (it took 11 s: the pong
    wait of up to 10 s came on top), sync and asyncio."""
    rig = _Rig(tmp_path, "gone")
    Model = rig.Model
    try:
        _wait_answering(Model, [rig.backend], rig.log)
        _stop(rig.backend)
        for attempt in ("sync", "asyncio"):
            rig.kill_broker()
            rig.start_broker()
            started = time.monotonic()
            with pytest.raises(CallTimeout):
                if attempt == "sync":
                    Model.send_request({"func_name": "work", "tag": "x"}, timeout=1)
                else:
                    asyncio.run(Model.asend_request({"func_name": "work", "tag": "x"}, timeout=1))
            took = time.monotonic() - started
            assert took < 5, f"{attempt}: a call of timeout 1 s took {took:.1f} s"
    finally:
        rig.stop()


def test_backend_killed_mid_request_then_restarted(tmp_path, broker: Broker):
    marks, log = tmp_path / "marks", tmp_path / "backend.log"
    backend = _backend(broker.port, "midway", marks, log)
    Model = _model(broker.port, "midway")
    try:
        _wait_answering(Model, [backend], log)
        outcome: Dict[str, object] = {}

        def call() -> None:
            start = time.monotonic()
            try:
                outcome["result"] = Model.send_request({"func_name": "work", "tag": "long", "seconds": 30}, timeout=4)
            except CallTimeout as e:
                outcome["error"] = e
            outcome["took"] = time.monotonic() - start

        t = threading.Thread(target=call)
        t.start()
        deadline = time.monotonic() + 30
        while ("long" not in [tag for _p, tag in _marks(marks)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        backend.send_signal(signal.SIGKILL)
        backend.wait(timeout=10)
        t.join(timeout=30)
        assert isinstance(outcome.get("error"), CallTimeout), outcome
        assert "midway" in str(outcome["error"])
        backend = _backend(broker.port, "midway", marks, log)
        _wait_answering(Model, [backend], log)
        assert Model.send_request({"func_name": "work", "tag": "after"}).root == "after"
    finally:
        _stop(backend)


def test_killed_replica_hands_its_queued_requests_to_the_others(tmp_path, broker: Broker):
    """Two replicas share a persistent topic (Shared subscription, one worker each). One is SIGKILLed while
    its requests wait: those are acked only when a worker takes them, so the broker hands them to the other
    replica. Only the one it was running is lost (its caller times out); nothing runs twice."""
    marks, log = tmp_path / "marks", tmp_path / "replicas.log"
    extra = ("--persistent", "persistent", "--subscription-type", "Shared", "--subscription", "replicas",
             "--max-workers", "1")
    a = _backend(broker.port, "replicated", marks, log, *extra)
    b = _backend(broker.port, "replicated", marks, log, *extra)
    Model = _model(broker.port, "replicated", persistent="persistent")
    try:
        # both replicas subscribed: each logs its subscription; then one answers
        deadline = time.monotonic() + 60
        while log.read_text().count("listening on topic") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        _wait_answering(Model, [a, b], log)
        n = 8
        results: Dict[str, object] = {}

        def call(tag: str) -> None:
            try:
                results[tag] = Model.send_request({"func_name": "work", "tag": tag, "seconds": 0.4}, timeout=12).root
            except CallTimeout as e:
                results[tag] = e

        threads = [threading.Thread(target=call, args=(f"r{i}",)) for i in range(n)]
        for t in threads:
            t.start()
        # kill the replica once it has started a request (it then holds more, not started)
        deadline = time.monotonic() + 30
        while a.pid not in [pid for pid, tag in _marks(marks) if tag != "ready-check"] and time.monotonic() < deadline:
            time.sleep(0.01)
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=10)
        for t in threads:
            t.join(timeout=60)
        ran = [(pid, tag) for pid, tag in _marks(marks) if tag != "ready-check"]
        tags = [tag for _pid, tag in ran]
        assert len(tags) == len(set(tags)), f"ran twice: {ran}"
        lost = [tag for tag, r in results.items() if isinstance(r, CallTimeout)]
        answered = [tag for tag, r in results.items() if r == tag]
        ran_by_a = [tag for pid, tag in ran if pid == a.pid]
        print(f"answered {len(answered)}, lost {lost}, started by the killed replica {ran_by_a}")
        # only what the killed replica was running (one worker) is lost; it had been handed more
        assert len(answered) + len(lost) == n
        assert set(lost) <= set(ran_by_a) and len(lost) <= 1, (lost, ran_by_a)
        assert len(answered) >= n - 1
    finally:
        _stop(a)
        _stop(b)


def test_oversize_messages_get_clear_errors_and_serving_goes_on(tmp_path, broker: Broker):
    """`max_reassembly_size` on both ends (the default is ~192 MB): a request too large for the backend gets
    one error reply; a reply too large for the client is one clear error; both keep working."""
    from demessaging_rs.exceptions import InvalidReply, RemoteError

    hello = HERE.parent / "bench" / "hello.py"
    log = tmp_path / "backend.log"
    with open(log, "w") as out:
        backend = subprocess.Popen(
            [sys.executable, str(hello), "-H", "127.0.0.1", "-p", str(broker.port), "-t", "oversize",
             "--max-reassembly-size", "1000000", "listen"],
            stdout=out, stderr=subprocess.STDOUT, cwd=str(hello.parent))
    sys.path.insert(0, str(hello.parent))
    try:
        import hello as hello_mod
    finally:
        sys.path.pop(0)

    def model(**extra) -> type:
        cfg = ModuleConfig(messaging_config=dict(topic="oversize", host="127.0.0.1", port=broker.port, **extra))
        return BackendModule.create_model("hello", members=[hello_mod.hello_world, hello_mod.echo], config=cfg)

    try:
        big = model()
        deadline = time.monotonic() + 60
        while True:
            assert backend.poll() is None, log.read_text()
            try:
                big.send_request({"func_name": "hello_world", "name": "x"}, timeout=0.5)
                break
            except (CallTimeout, BrokerConnectionError):
                if time.monotonic() > deadline:
                    raise
        # 2 MB request to a backend that takes at most 1 MB: an error reply that says why
        with pytest.raises(RemoteError, match="exceeds the reassembly limit"):
            big.send_request({"func_name": "echo", "data": "x" * 2_000_000}, timeout=30)
        # a 0.9 MB request still fits; its 0.9 MB reply is too large for a client limited to 0.5 MB
        small = model(max_reassembly_size=500_000)
        with pytest.raises(InvalidReply, match="exceeds the reassembly limit"):
            small.send_request({"func_name": "echo", "data": "y" * 900_000}, timeout=30)
        assert small.send_request({"func_name": "hello_world", "name": "after"}).root == "Hello, after"
        assert big.send_request({"func_name": "echo", "data": "z" * 900_000}).root == "z" * 900_000
    finally:
        _stop(backend)
