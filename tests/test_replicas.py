"""Replicas of one backend on one topic: the subscription they meet on, Shared (each request runs exactly once,
on one of them) and Failover (one serves, the next takes over when it dies). Backends are real processes
started through the CLI against the embedded broker; every wait is bounded."""

from __future__ import annotations

import logging
import re
from datetime import datetime
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest

from demessaging_rs import BackendModule, Broker
from demessaging_rs.config import ModuleConfig
from demessaging_rs.exceptions import CallTimeout, DemessagingError
from test_faults import _backend, _first_answer, _marks, _model, _stop, _wait_answering


def _double(x: int) -> int:
    return 2 * x


def _subscription(**messaging: object) -> str:
    """The subscription name a backend with this messaging config would use (nothing connects)."""
    cfg = ModuleConfig(messaging_config=dict(topic="names", host="127.0.0.1", port=1, **messaging))
    Model = BackendModule.create_model(__name__, members=[_double], config=cfg)
    return Model._backend().subscription


def test_replicas_meet_on_one_subscription_unless_exclusive():
    # Exclusive (the default) keeps the reference's name: local start time to the second
    before = datetime.now().replace(microsecond=0)
    for name in (_subscription(), _subscription(subscription_type="Exclusive")):
        assert re.fullmatch(r"backend-module-\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", name), name
        assert before <= datetime.fromisoformat(name[len("backend-module-"):]) <= datetime.now()
    # replicas started at different times must still share: a fixed name per type
    assert _subscription(subscription_type="Shared") == "backend-module-shared"
    assert _subscription(subscription_type="Failover") == "backend-module-failover"
    # an explicit name always wins
    assert _subscription(subscription_type="Shared", subscription="mine") == "mine"
    assert _subscription(subscription="mine") == "mine"


def test_an_unknown_subscription_type_is_a_clear_error():
    expected = r"unsupported subscription type \"Key_Shared\" \(Exclusive, Shared or Failover\)"
    with pytest.raises(DemessagingError, match=expected):
        _subscription(subscription_type="Key_Shared")


def _wait_listening(log: Path, n: int, limit: float = 60) -> None:
    """Until `n` backends logged their subscription (each says so once it is subscribed)."""
    deadline = time.monotonic() + limit
    while log.read_text().count("listening on topic") < n:
        assert time.monotonic() < deadline, f"not {n} backends subscribed within {limit} s:\n{log.read_text()}"
        time.sleep(0.05)


def test_shared_replicas_run_each_request_exactly_once(tmp_path, broker: Broker, monkeypatch):
    """3 replicas started with only DE_BACKEND_SUBSCRIPTION_TYPE=Shared (no subscription name) and 300 calls
    from 10 threads: every request runs once, on one replica; every replica serves some; every caller gets its
    own answer."""
    marks, log = tmp_path / "marks", tmp_path / "replicas.log"
    log.write_text("")
    monkeypatch.setenv("DE_BACKEND_SUBSCRIPTION_TYPE", "Shared")
    replicas = [_backend(broker.port, "spread", marks, log) for _ in range(3)]
    Model = _model(broker.port, "spread")
    try:
        _wait_listening(log, 3)
        assert log.read_text().count("(subscription backend-module-shared)") == 3, log.read_text()
        _wait_answering(Model, replicas, log)
        answers: Dict[str, List[object]] = {}
        lock = threading.Lock()

        def caller(k: int) -> None:
            for i in range(30):
                tag = f"c{k}-{i}"
                try:
                    got: object = Model.send_request({"func_name": "work", "tag": tag}, timeout=30).root
                except Exception as e:  # noqa: BLE001 - recorded and asserted below
                    got = e
                with lock:
                    answers.setdefault(tag, []).append(got)

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        assert len(answers) == 300
        wrong = {tag: got for tag, got in answers.items() if got != [tag]}
        assert not wrong, wrong
        ran = [(pid, tag) for pid, tag in _marks(marks) if tag != "ready-check"]
        twice = [tag for tag, n in Counter(tag for _pid, tag in ran).items() if n > 1]
        assert not twice, f"ran more than once: {twice}"
        assert sorted(tag for _pid, tag in ran) == sorted(answers)
        per_replica = Counter(pid for pid, _tag in ran)
        print(f"requests per replica: {sorted(per_replica.values())}")
        assert set(per_replica) == {p.pid for p in replicas}, per_replica
    finally:
        for p in replicas:
            _stop(p)


def test_shared_replicas_pass_over_one_busy_with_a_long_request(tmp_path, broker: Broker):
    """2 replicas with one worker each; one runs a 5 s request. Two threads then call short requests, 20 ms
    apart. The broker gives each request to the replica holding the fewest (a replica acks a request when its
    worker takes it), so one short request waits behind the long one, and the other thread's calls are all
    served by the free replica meanwhile. Plain round-robin would stall both threads there.

    NOTE: paced, so that every ack has reached the broker before the next call. Without a pause the free
    replica's reply can overtake its ack on a loaded machine (the worker writes the reply itself, the ack
    leaves through the connection's writer task); the busy replica then ties with it and may get a second
    request (measured: usually one thread's calls all served, but not always)."""
    marks, log = tmp_path / "marks", tmp_path / "busy.log"
    log.write_text("")
    replicas = [_backend(broker.port, "busy", marks, log, "--subscription-type", "Shared", "--max-workers", "1")
                for _ in range(2)]
    Model = _model(broker.port, "busy")
    try:
        _wait_listening(log, 2)
        _wait_answering(Model, replicas, log)

        def long_call() -> None:
            Model.send_request({"func_name": "work", "tag": "long", "seconds": 5.0}, timeout=60)
            with open(marks, "a") as f:
                f.write("0 long-done\n")

        def short_calls(k: int) -> None:
            for i in range(30):
                assert Model.send_request({"func_name": "work", "tag": f"s{k}-{i}"}, timeout=60).root == f"s{k}-{i}"
                time.sleep(0.02)

        long_thread = threading.Thread(target=long_call)
        long_thread.start()
        deadline = time.monotonic() + 30
        while "long" not in [tag for _pid, tag in _marks(marks)]:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        threads = [threading.Thread(target=short_calls, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in [*threads, long_thread]:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in [*threads, long_thread])
        ran = _marks(marks)
        order = [tag for _pid, tag in ran]
        busy = next(pid for pid, tag in ran if tag == "long")
        shorts = [(pid, tag) for pid, tag in ran if tag.startswith("s")]
        assert len(shorts) == 60
        during = [tag for tag in order[:order.index("long-done")] if tag.startswith("s")]
        behind_the_long_one = [tag for pid, tag in shorts if pid == busy and tag in during]
        print(f"short calls served while the long one ran: {len(during)} of 60")
        # the free replica served one thread's 30 calls (and the other's until one of them went to the busy one)
        assert len(during) >= 30, order
        # what the busy replica held waited for its worker: it starts once the long one ends (it may still
        # be marked before the long one's caller writes long-done)
        assert len(behind_the_long_one) <= 1, order
    finally:
        for p in replicas:
            _stop(p)


def test_shared_replicas_answer_requests_that_arrive_in_fragments(tmp_path, broker: Broker):
    """A 2 MB request travels in fragments; all of them reach the replica that got the first one (they share
    a message key), so it is answered, by one replica, while the calls still spread over both."""
    marks, log = tmp_path / "marks", tmp_path / "fragments.log"
    log.write_text("")
    replicas = [_backend(broker.port, "big-shared", marks, log, "--subscription-type", "Shared") for _ in range(2)]
    Model = _model(broker.port, "big-shared")
    try:
        _wait_listening(log, 2)
        _wait_answering(Model, replicas, log)
        for i in range(6):
            tag = f"big{i}-" + "x" * 2_000_000
            assert Model.send_request({"func_name": "work", "tag": tag}, timeout=30).root == tag
        ran = [(pid, tag[:5]) for pid, tag in _marks(marks) if tag.startswith("big")]
        assert sorted(tag for _pid, tag in ran) == [f"big{i}-" for i in range(6)], "each ran once"
        assert {pid for pid, _tag in ran} == {p.pid for p in replicas}, "both replicas served"
        assert "never completed" not in log.read_text()
    finally:
        for p in replicas:
            _stop(p)


def test_failover_replicas_one_serves_the_next_takes_over(tmp_path, broker: Broker):
    """2 replicas with --subscription-type Failover: the first one subscribed serves every request; once it is
    killed, the other answers."""
    marks, log = tmp_path / "marks", tmp_path / "failover.log"
    log.write_text("")
    first = _backend(broker.port, "standby", marks, log, "--subscription-type", "Failover")
    _wait_listening(log, 1)
    second = _backend(broker.port, "standby", marks, log, "--subscription-type", "Failover")
    Model = _model(broker.port, "standby")
    try:
        _wait_listening(log, 2)
        _wait_answering(Model, [first, second], log)
        for i in range(50):
            assert Model.send_request({"func_name": "work", "tag": f"a{i}"}, timeout=30).root == f"a{i}"
        assert {pid for pid, tag in _marks(marks) if tag.startswith("a")} == {first.pid}
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        # the broker sees the connection close and makes the other consumer active
        _first_answer(Model, "b", log, limit=30)
        for i in range(20):
            assert Model.send_request({"func_name": "work", "tag": f"c{i}"}, timeout=30).root == f"c{i}"
        assert {pid for pid, tag in _marks(marks) if tag[0] in "bc"} == {second.pid}
    finally:
        _stop(first)
        _stop(second)


SECOND_REPLY = "more than one backend ran it"


def _client_log(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    """The client's logger, captured (our logger tree does not propagate, as the reference's config)."""
    log = logging.getLogger("demessaging_rs.client")
    log.addHandler(caplog.handler)
    return log


def test_backends_on_subscriptions_of_their_own_all_run_every_request_and_the_client_says_so(
        tmp_path, broker: Broker, caplog):
    """Two backends on one topic the reference's way, each on a subscription of its own: both run every
    request. The caller takes the first reply and warns, once, that a second one arrived and what to do."""
    marks, log = tmp_path / "marks", tmp_path / "twice.log"
    log.write_text("")
    a = _backend(broker.port, "twice", marks, log, "--subscription", "one")
    b = _backend(broker.port, "twice", marks, log, "--subscription", "two")
    Model = _model(broker.port, "twice")
    client_log = _client_log(caplog)
    try:
        _wait_listening(log, 2)
        _wait_answering(Model, [a, b], log)
        for i in range(5):
            assert Model.send_request({"func_name": "work", "tag": f"t{i}"}, timeout=30).root == f"t{i}"
        deadline = time.monotonic() + 10
        while Counter(tag for _pid, tag in _marks(marks))["t4"] < 2 or SECOND_REPLY not in caplog.text:
            assert time.monotonic() < deadline, (caplog.text, _marks(marks))
            time.sleep(0.02)
        ran = Counter(tag for _pid, tag in _marks(marks) if tag != "ready-check")
        assert ran == {f"t{i}": 2 for i in range(5)}
        warnings = [r for r in caplog.records if SECOND_REPLY in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        assert "--subscription-type Shared" in warnings[0].getMessage()
    finally:
        client_log.removeHandler(caplog.handler)
        _stop(a)
        _stop(b)


def test_a_reply_after_the_callers_timeout_is_no_second_reply(tmp_path, broker: Broker, caplog):
    """One backend; a call times out before its reply comes. The late reply is dropped quietly: it is not
    taken for a second backend."""
    marks, log = tmp_path / "marks", tmp_path / "late.log"
    log.write_text("")
    backend = _backend(broker.port, "late", marks, log)
    Model = _model(broker.port, "late")
    client_log = _client_log(caplog)
    try:
        _wait_listening(log, 1)
        _wait_answering(Model, [backend], log)
        with pytest.raises(CallTimeout):
            Model.send_request({"func_name": "work", "tag": "slow", "seconds": 0.5}, timeout=0.1)
        assert Model.send_request({"func_name": "work", "tag": "after"}, timeout=30).root == "after"
        # the slow one started before "after" and sleeps 0.5 s: its reply has arrived a second later
        assert [tag for _pid, tag in _marks(marks)][-2:] == ["slow", "after"]
        time.sleep(1.0)
        assert SECOND_REPLY not in caplog.text
    finally:
        client_log.removeHandler(caplog.handler)
        _stop(backend)
