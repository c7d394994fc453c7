"""The broker as users start it: `demessaging-rs broker` and `demessaging_rs.Broker`."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Tuple

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
        # Ctrl-C as in a terminal, even when this test runs where SIGINT is ignored (a background job)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
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
        stats_url = f"http://127.0.0.1:{port}/admin/v2/stats"
        with pytest.raises(urllib.error.HTTPError) as denied:  # topic names are not for everyone
            urllib.request.urlopen(stats_url, timeout=5)
        assert denied.value.code == 401
        req = urllib.request.Request(stats_url, headers={"Authorization": "Token s3cret"})
        stats = json.loads(urllib.request.urlopen(req, timeout=5).read())
        assert stats["topics"]["non-persistent://public/default/t"]["msgInCounter"] == 1  # listed while in use
        ws.close()
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


def _upgrade(port: int, path: str, token: str) -> Tuple[int, str]:
    """A websocket upgrade by hand, to read a refusal's body (websocket-client drops it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path, headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Authorization": f"Token {token}",
    })
    resp = conn.getresponse()
    try:
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_tokens_limited_to_topics_end_to_end(tmp_path):
    """A backend token and a client token from one token file: the DASF call works, and each token is
    refused (403, with the reason) where it does not belong; the stats need a token."""
    from demessaging_rs import BackendModule
    from demessaging_rs.config import ModuleConfig

    port = _free_port()
    tokens = tmp_path / "tokens"
    tokens.write_text(
        "# who may do what\n"
        "backend-t consume=greet produce=greet_*\n"
        "client-t produce=greet consume=greet_*\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "demessaging_rs", "broker", "--port", str(port), "--token-file", str(tokens)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    hello = Path(__file__).resolve().parent.parent / "bench" / "hello.py"
    backend = None
    try:
        _wait_line(proc, "listening on")
        base = f"ws://127.0.0.1:{port}/ws/v2"
        # the client token may not take the backend's requests, nor publish replies
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(f"{base}/consumer/non-persistent/public/default/greet/steal", timeout=5,
                                        header={"Authorization": "Token client-t"})
        assert refused.value.status_code == 403
        status, reason = _upgrade(port, "/ws/v2/consumer/non-persistent/public/default/greet/steal", "client-t")
        assert (status, reason) == (403, "this token may not consume from topic non-persistent://public/default/greet")
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(f"{base}/producer/non-persistent/public/default/other", timeout=5,
                                        header={"Authorization": "Token backend-t"})
        assert refused.value.status_code == 403
        # stats: 401 without a token, 200 with one
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/v2/stats", timeout=5)
        assert denied.value.code == 401
        req = urllib.request.Request(f"http://127.0.0.1:{port}/admin/v2/stats",
                                     headers={"Authorization": "Token client-t"})
        assert "topics" in json.loads(urllib.request.urlopen(req, timeout=5).read())
        # a real call, each side with its own token
        backend = subprocess.Popen(
            [sys.executable, str(hello), "-H", "127.0.0.1", "-p", str(port), "-t", "greet",
             "--header", '{"authorization": "Token backend-t"}', "listen"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(hello.parent),
        )
        sys.path.insert(0, str(hello.parent))
        try:
            import hello as hello_mod
        finally:
            sys.path.pop(0)
        cfg = ModuleConfig(messaging_config=dict(topic="greet", host="127.0.0.1", port=port,
                                                 header={"authorization": "Token client-t"}))
        Model = BackendModule.create_model("hello", members=[hello_mod.hello_world], config=cfg)
        deadline = time.monotonic() + 60
        while True:
            try:
                assert Model.send_request({"func_name": "hello_world", "name": "acl"}, timeout=1).root == "Hello, acl"
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        if backend is not None:
            backend.terminate()
            backend.wait(timeout=15)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)


def test_bad_token_file_lines_are_named(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# comment\ngood\nbad publish=x\n")
    out = subprocess.run([sys.executable, "-m", "demessaging_rs", "broker", "--port", "0", "--token-file", str(tokens)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "line 3: unknown role \"publish\"" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
