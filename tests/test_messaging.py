"""The reference's messaging classes on our core: MessageConsumer with a raw `handle_request`, and the
awaitable MessageProducer.send_request with the reference's result dictionaries."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
from typing import Any, Dict

import pytest

from conftest import wait_for_pong
from demessaging_rs.backend.utils import run_async
from demessaging_rs.config import PulsarConfig
from demessaging_rs.messaging import MessageConsumer, MessageProducer
from demessaging_rs.messaging.constants import MessageType, Status


def b64(obj: Any) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


@pytest.fixture
def consumer(broker):
    config = PulsarConfig(topic="raw-consumer", host="127.0.0.1", port=broker.port, call_timeout=20)

    def handle_request(msg: Dict[str, Any]) -> None:
        request = json.loads(base64.b64decode(msg["payload"]))
        what = request.get("what")
        if what == "raise":
            raise RuntimeError("handler failed")
        if what == "silent":
            return
        if what == "progress":
            consumer.send_response(msg, {"step": 1}, msg_type=MessageType.PROGRESS,
                                   response_properties={"status": Status.RUNNING})
        consumer.send_response(msg, json.dumps({"echo": request, "context": consumer.extract_context(msg)}),
                               response_properties={"status": Status.SUCCESS})

    consumer = MessageConsumer(config, handle_request, module_info={"title": "raw"})
    thread = threading.Thread(target=consumer.wait_for_request, daemon=True)
    thread.start()
    wait_for_pong(broker, "raw-consumer")
    yield consumer
    consumer.disconnect()
    thread.join(timeout=15)
    assert not thread.is_alive()


def test_consumer_with_a_raw_handler(consumer):
    producer = MessageProducer(consumer.pulsar_config)
    status, body = producer.call(json.dumps({"what": "echo"}))
    reply = json.loads(body)
    assert status == "success" and reply["echo"] == {"what": "echo"} and reply["context"]

    progress = []
    status, body = producer.call(json.dumps({"what": "progress"}), on_progress=lambda p, props: progress.append((p, props)))
    assert status == "success"
    assert [json.loads(p) for p, _ in progress] == [{"step": 1}]
    assert progress[0][1]["messageType"] == "progress" and progress[0][1]["status"] == "running"

    # a handler that raises, or sends nothing: an error reply each, and it keeps serving
    status, body = producer.call(json.dumps({"what": "raise"}))
    assert (status, body.decode()) == ("error", "error executing request: handler failed")
    status, body = producer.call(json.dumps({"what": "silent"}))
    assert (status, body.decode()) == ("error", "error executing request: the backend sent no response")
    assert producer.call(json.dumps({"what": "again"}))[0] == "success"
    producer.disconnect()


def test_send_request_is_awaitable_with_the_reference_results(consumer):
    producer = MessageProducer(consumer.pulsar_config)
    assert producer.wait_for_connection(timeout=10) and producer.is_connected

    ok = asyncio.run(producer.send_request({"payload": b64({"what": "x"}), "properties": {}}))
    assert ok["status"] == "success" and json.loads(ok["msg"])["echo"] == {"what": "x"}

    err = run_async(producer.send_request, {"payload": b64({"what": "raise"})})
    assert err["status"] == "error" and err["error"] == "error executing request: handler failed"

    info = run_async(producer.send_request, {"payload": "", "properties": {"messageType": MessageType.INFO}})
    assert info == {"status": "success", "msg": json.dumps({"title": "raw"})}

    seen = []
    got = run_async(producer.send_request, {"payload": b64({"what": "progress"})}, on_progress=seen.append)
    assert got["status"] == "success" and seen == [{"step": 1}]

    bad = run_async(producer.send_request, {"payload": "not base64!"})
    assert bad["status"] == "error" and "not base64" in bad["error"]
    producer.disconnect()
    assert not producer.is_connected


def test_send_response_outside_a_request_is_refused_with_a_log(consumer, caplog):
    msg = {"messageId": "nope", "payload": "", "properties": {"response_topic": "t", "requestContext": "1",
                                                               "messageType": "request"}}
    log = logging.getLogger("demessaging_rs.messaging.consumer")
    log.addHandler(caplog.handler)  # our logger tree does not propagate (as the reference's logging config)
    try:
        consumer.send_response(msg, "late")
    finally:
        log.removeHandler(caplog.handler)
    assert "is not being handled" in caplog.text
    assert not MessageConsumer.is_valid_request({"properties": {"response_topic": "t", "requestContext": 1}})
    assert MessageConsumer.extract_context({"properties": {"requestContext": 7}}) == "7"


def test_an_abandoned_send_request_holds_neither_asyncio_run_nor_the_exit(broker, run_python, tmp_path):
    """As the reference's (a daemon thread per request): a call whose task was cancelled, or that a daemon
    thread still waits for, lets asyncio.run return and the process exit, long before call_timeout."""
    script = tmp_path / "abandon.py"
    script.write_text(f"""
import asyncio, base64, threading
from demessaging_rs.backend.utils import run_async
from demessaging_rs.config import PulsarConfig
from demessaging_rs.messaging import MessageProducer

producer = MessageProducer(PulsarConfig(topic="nobody-answers", host="127.0.0.1", port={broker.port}))
assert producer.wait_for_connection(timeout=10)
request = {{"payload": base64.b64encode(b"{{}}").decode(), "properties": {{}}}}

async def main():
    try:
        await asyncio.wait_for(producer.send_request(dict(request)), 0.5)
    except asyncio.TimeoutError:
        print("gave up", flush=True)

asyncio.run(main())
threading.Thread(target=run_async, args=(producer.send_request, dict(request)), daemon=True).start()
print("exiting", flush=True)
""")
    out = run_python(str(script), timeout=120)  # call_timeout is 600 s: a held exit would time out here
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["gave", "up", "exiting"]
