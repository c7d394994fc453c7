"""Malformed requests get a readable error reply, the backend keeps serving, and nothing hangs."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
import time

import pytest
import websocket  # websocket-client, a test dependency

from conftest import BACKENDS, EXAMPLES, client


@pytest.fixture
def big_backend(broker, backends):
    backends.start(BACKENDS / "big.py", "bad-input")
    c = client(broker, "bad-input")
    yield c
    c.close()


def call(c, payload):
    status, body, props = c.call("request", payload, 10.0, "test")
    return status, body.decode("utf-8"), props


def assert_still_serving(c):
    status, body, _ = call(c, json.dumps({"func_name": "add", "a": 2, "b": 3}))
    assert (status, body) == ("success", "5")


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b"this is not json", "error validating request"),
        (b"\xff\xfe not utf-8", "error processing request: payload is not valid UTF-8"),
        (json.dumps({"func_name": "does_not_exist"}).encode(), "error validating request"),
        (json.dumps({"func_name": "add", "a": "one", "b": 2}).encode(), "error validating request"),
        (json.dumps({"func_name": "add", "a": 1}).encode(), "error validating request"),
    ],
    ids=["not-json", "not-utf8", "unknown-func", "wrong-type", "missing-arg"],
)
def test_bad_request_gets_error_reply(big_backend, payload, expected):
    status, body, props = call(big_backend, payload)
    assert status == "error"
    assert body.startswith(expected), body
    assert props["messageType"] == "response"
    assert_still_serving(big_backend)


def test_unknown_func_name_error_names_the_problem(big_backend):
    _, body, _ = call(big_backend, json.dumps({"func_name": "does_not_exist"}))
    assert "does_not_exist" in body or "func_name" in body


def _raw(broker, path):
    return websocket.create_connection(f"ws://127.0.0.1:{broker.port}{path}", timeout=10)


def _publish(prod, payload_b64, props, context="c"):
    prod.send(json.dumps({"payload": payload_b64, "properties": props, "context": context}))
    return json.loads(prod.recv())


def _reply(cons):
    msg = json.loads(cons.recv())
    cons.send(json.dumps({"messageId": msg["messageId"]}))
    return msg


def test_raw_malformed_messages(broker, big_backend):
    """Frames no DASF client would send, straight to the backend's topic."""
    cons = _raw(broker, "/ws/v2/consumer/non-persistent/public/default/raw-replies/sub")
    prod = _raw(broker, "/ws/v2/producer/non-persistent/public/default/bad-input")
    try:
        base = {"response_topic": "raw-replies", "messageType": "request"}

        # payload not base64: the broker refuses it with an error ack (as Pulsar's proxy does)
        ack = _publish(prod, "%%% not base64 %%%", {**base, "requestContext": "1"})
        assert ack["result"] != "ok" and "base64" in ack["errorMsg"]

        # fragments that are each valid but together not base64 reach the backend: error reply
        for i in range(2):
            ack = _publish(prod, "QQ==", {**base, "requestContext": "2", "fragment": i, "num_fragments": 2})
            assert ack["result"] == "ok"
        msg = _reply(cons)
        assert msg["properties"]["status"] == "error"
        assert msg["properties"]["requestContext"] == "2"
        assert "not valid base64" in base64.b64decode(msg["payload"]).decode()

        # unknown messageType: error reply
        ack = _publish(prod, "", {**base, "messageType": "bogus", "requestContext": "3"})
        msg = _reply(cons)
        assert msg["properties"]["status"] == "error" and msg["properties"]["requestContext"] == "3"
        assert "unsupported message type" in base64.b64decode(msg["payload"]).decode()

        # missing requestContext but a response topic: error reply naming the property
        _publish(prod, "", {"response_topic": "raw-replies", "messageType": "request"})
        msg = _reply(cons)
        assert "requestContext" in base64.b64decode(msg["payload"]).decode()

        # no response topic: nothing to answer to; the backend logs it and keeps serving
        ack = _publish(prod, "", {"messageType": "request", "requestContext": "5"})
        assert ack["result"] == "ok"
        # ping still answered, with integer context as the reference client sends it
        _publish(prod, "", {**base, "messageType": "ping", "requestContext": 6})
        msg = _reply(cons)
        assert msg["properties"]["messageType"] == "pong" and msg["properties"]["requestContext"] == "6"
    finally:
        cons.close()
        prod.close()
    assert_still_serving(big_backend)


def test_a_thousand_requests_that_never_complete_do_not_stop_the_backend(broker, big_backend):
    """First fragments of requests whose other fragments never come (a killed uploader's, a hostile
    producer's, each announcing 100000 pieces): as many as the broker lets a consumer hold unacked. The
    backend keeps serving, and holds no more than the pieces that came."""
    prod = _raw(broker, "/ws/v2/producer/non-persistent/public/default/bad-input")
    try:
        base = {"response_topic": "nobody-reads-this", "messageType": "request", "num_fragments": 100_000}
        for i in range(1000):
            prod.send(json.dumps({"payload": "QUJD", "properties": {**base, "requestContext": f"p{i}", "fragment": 0},
                                  "context": str(i)}))
        acks = [json.loads(prod.recv()) for _ in range(1000)]
        assert all(a["result"] == "ok" for a in acks)
    finally:
        prod.close()
    assert_still_serving(big_backend)


def test_the_core_keeps_serving_while_a_function_holds_the_gil_and_something_is_logged(broker, backends, tmp_path):
    """A record of the Rust core (here: a warning about a malformed message) waits for the GIL on a thread of
    its own: a ping is still answered at once while a member holds the GIL in one C call for 6 s (it was
    answered only when the call ended)."""
    import threading

    backends.start(BACKENDS / "big.py", "gil-held")
    c = client(broker, "gil-held")
    marker = tmp_path / "holding"
    held = threading.Thread(target=lambda: call(c, json.dumps({"func_name": "hold_gil", "seconds": 6,
                                                                "marker": str(marker)})))
    held.start()
    prod = _raw(broker, "/ws/v2/producer/non-persistent/public/default/gil-held")
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # no response topic: the backend can only log it
        assert _publish(prod, "", {"messageType": "request", "requestContext": "x"})["result"] == "ok"
        time.sleep(0.2)
        started = time.monotonic()
        status, _body, props = c.call("ping", b"", 30.0, "ping")
        took = time.monotonic() - started
        assert props["messageType"] == "pong"
        assert took < 3, f"the ping took {took:.1f} s while a member held the GIL"
    finally:
        prod.close()
        held.join(timeout=30)
    assert_still_serving(c)


def test_listen_without_broker_retries_with_a_clear_message(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nobody listens there
    log = tmp_path / "listen.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "hello_world.py"), "-H", "127.0.0.1", "-p", str(port), "listen"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and log.read_text().count("retrying") < 2:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.1)
            text = log.read_text()
            assert text.count("retrying") >= 2, text
            assert f"could not connect to ws://127.0.0.1:{port}" in text
            assert "Traceback" not in text
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=15)
    assert code == 0
    assert "Traceback" not in log.read_text()


def test_listen_refused_by_the_broker_exits_with_a_clear_message(tmp_path):
    from demessaging_rs import Broker

    with Broker(port=0, tokens=["s3cret"]) as b:
        out = subprocess.run(
            [sys.executable, str(EXAMPLES / "hello_world.py"), "-H", "127.0.0.1", "-p", str(b.port), "listen"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert "HTTP 401" in text and "cannot serve topic hello-world-topic" in text
    assert "Traceback" not in text


def test_broker_restart_backend_reconnects_and_client_recovers(tmp_path):
    """A broker that vanishes: calls fail with a clear error meanwhile, and everything resumes after."""
    from conftest import Backends
    from demessaging_rs import BackendModule, Broker
    from demessaging_rs.exceptions import BrokerConnectionError, CallTimeout
    from test_hello_world import load

    first = Broker(port=0)
    port = first.port
    backends = Backends(first, tmp_path)
    second = None
    try:
        backends.start(BACKENDS / "big.py", "restart-topic")
        mc = {"topic": "restart-topic", "host": "127.0.0.1", "port": port, "call_timeout": 5}
        model = BackendModule.create_model(members=[load(BACKENDS / "big.py").add], messaging_config=mc)
        assert model.send_request({"func_name": "add", "a": 1, "b": 1}).root == 2

        first.stop()
        with pytest.raises((BrokerConnectionError, CallTimeout)):
            model.send_request({"func_name": "add", "a": 1, "b": 2})

        second = Broker(port=port)
        deadline = time.monotonic() + 60
        while True:
            try:
                assert model.send_request({"func_name": "add", "a": 2, "b": 2}, timeout=1).root == 4
                break
            except (BrokerConnectionError, CallTimeout):
                assert time.monotonic() < deadline, "the backend did not come back"
                time.sleep(0.2)
        log = open(backends.procs[0].log_path).read()  # type: ignore[attr-defined]
        assert "reconnecting" in log and "Traceback" not in log
    finally:
        backends.stop_all()
        first.stop()
        if second is not None:
            second.stop()
