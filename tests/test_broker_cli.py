"""The broker as users start it: `demessaging-rs broker` and `demessaging_rs.Broker`."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import websocket

from demessaging_rs import Broker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_line(proc: subprocess.Popen, needle: str, limit: float = 30) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if needle in line:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"{needle!r} not printed")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_broker_serves_with_tokens_and_stops_cleanly(tmp_path, sig):
    port = _free_port()
    tokens = tmp_path / "tokens"
    tokens.write_text("# one token a line\ns3cret\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "demessaging_rs", "broker", "--port", str(port), "--token-file", str(tokens)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_line(proc, "listening on")
        url = f"ws://127.0.0.1:{port}/ws/v2/producer/non-persistent/public/default/t"
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, timeout=5)
        assert refused.value.status_code == 401
        ws = websocket.create_connection(url, timeout=5, header={"Authorization": "Token s3cret"})
        ws.send(json.dumps({"payload": "aGk=", "properties": {}, "context": 1}))
        assert json.loads(ws.recv())["result"] == "ok"
        ws.close()
        stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/v2/stats", timeout=5).read())
        assert stats["topics"]["non-persistent://public/default/t"]["msgInCounter"] == 1
    finally:
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "broker stopped" in out
    assert "Traceback" not in out


def test_python_broker_context_manager():
    with Broker(port=0) as b:
        assert b.running and b.port > 0
        ws = websocket.create_connection(f"{b.url}/ws/t/s", timeout=5)
        ws.close()
    assert not b.running
    with pytest.raises((websocket.WebSocketException, ConnectionRefusedError)):
        websocket.create_connection(f"ws://127.0.0.1:{b.port}/ws/t/s", timeout=2)


def test_port_in_use_is_a_clear_error():
    with Broker(port=0) as b:
        with pytest.raises(OSError, match="cannot listen"):
            Broker(port=b.port)
