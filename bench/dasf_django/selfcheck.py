#!/usr/bin/env python3
"""Self-check: real dasf-broker-django under daphne, driven with websocket-client.

Run:  python3 /work/main/bench/dasf_django/selfcheck.py      (exit code 0 == all good)
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import websocket  # noqa: E402  (pip install websocket-client)

from dasf_django.harness import start_django_broker  # noqa: E402

TIMEOUT = 10
failures: list[str] = []


def check(cond: bool, what: str) -> None:
    print(("PASS " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def recv_json(ws) -> dict:
    return json.loads(ws.recv())


def recv_non_info(ws) -> dict:
    """Next message that is not the broker's own api_info/ping request."""
    while True:
        msg = recv_json(ws)
        if msg.get("properties", {}).get("messageType") not in ("api_info", "ping"):
            return msg
        print("  (consumer got broker-generated message:", json.dumps(msg), ")")


def roundtrip(broker, topic: str, sub: str, message: dict, consumer_query: str = ""):
    cons = websocket.create_connection(broker.consumer_url(topic, sub) + consumer_query, timeout=TIMEOUT)
    prod = websocket.create_connection(broker.producer_url(topic), timeout=TIMEOUT)
    try:
        t = time.perf_counter()
        prod.send(json.dumps(message))
        ack = recv_json(prod)
        delivered = recv_non_info(cons)
        dt = time.perf_counter() - t
        # acknowledge like a DASF consumer does
        cons.send(json.dumps({"messageId": delivered.get("messageId")}))
        return ack, delivered, dt
    finally:
        prod.close()
        cons.close()


def main() -> int:
    topics = ["selfcheck-topic", "selfcheck-int"]
    with start_django_broker(topics) as broker:
        print(f"broker {broker.url} up in {broker.startup_seconds:.2f}s (pid {broker.proc.pid})")

        # 1. string context / properties
        msg = {"payload": "aGk=", "properties": {"a": "b"}, "context": "1"}
        ack, got, dt = roundtrip(broker, topics[0], "sub1", msg)
        print("ack      :", json.dumps(ack))
        print("delivered:", json.dumps(got))
        check(ack.get("result") == "ok", "producer ack result == 'ok'")
        check(ack.get("context") == "1", "ack echoes context '1'")
        check(got.get("payload") == "aGk=" and got.get("properties") == {"a": "b"}
              and got.get("context") == "1", "consumer got payload/properties/context unchanged")
        check(got.get("messageId") == ack.get("messageId"), "delivered messageId == ack messageId")
        print(f"  round trip {dt * 1000:.1f} ms")

        # 2. integers for context and a property value
        msg = {"payload": "aGk=", "properties": {"a": 3}, "context": 5}
        ack, got, _ = roundtrip(broker, topics[1], "sub2", msg, consumer_query="?subscriptionType=Shared")
        print("int ack      :", json.dumps(ack))
        print("int delivered:", json.dumps(got))
        check(ack.get("result") == "ok", "int message acked ok (consumer URL with ?query works)")
        check(type(ack.get("context")) is int and ack["context"] == 5, "ack context stays int 5")
        check(type(got.get("context")) is int and got["context"] == 5, "delivered context stays int 5")
        check(type(got["properties"].get("a")) is int and got["properties"]["a"] == 3,
              "delivered property value stays int 3")

        # 3. topic created at runtime with add_topic()
        broker.add_topic("selfcheck-late")
        ack, got, _ = roundtrip(broker, "selfcheck-late", "s", {"payload": "eA==", "properties": {}})
        check(ack.get("result") == "ok" and got.get("payload") == "eA==", "add_topic() on running broker works")

        # 4. unknown topic (anonymous may not create topics by default)
        prod = websocket.create_connection(broker.producer_url("no-such-topic"), timeout=TIMEOUT)
        prod.send(json.dumps({"payload": "", "properties": {}, "context": 1}))
        ack = recv_json(prod)
        prod.close()
        print("unknown-topic ack:", json.dumps(ack))
        check(ack.get("result") != "ok", "publishing to a non-existing topic is refused")

        proc, tmp = broker.proc, broker.tmpdir
    check(proc.poll() is not None, "daphne terminated by stop()")
    check(not os.path.exists(tmp), "temp dir removed by stop()")

    print("OK" if not failures else f"{len(failures)} FAILURE(S): {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
