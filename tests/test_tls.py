"""wss:// end to end: the embedded broker with a certificate of a test CA (made at run time with trustme),
a backend and clients that trust that CA (a CA file, or SSL_CERT_FILE), and the clear errors of everything
that does not fit (an untrusted certificate, a plain client on the TLS port, files that are missing or not
PEM). The broker keeps serving through all of it."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest
import trustme
import websocket

from conftest import ping_until_pong
from demessaging_rs import BackendModule, Broker
from demessaging_rs._core import Client
from demessaging_rs.config import ModuleConfig, PulsarConfig, WebsocketURLConfig
from demessaging_rs.exceptions import BrokerConnectionError

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "bench" / "hello.py"  # hello_world(name) and echo(data)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Tuple[Path, Path, Path]:
    """(ca.pem, cert.pem, key.pem) of a fresh test CA and a server certificate for 127.0.0.1."""
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(d / "cert.pem"), append=True)
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    return d / "ca.pem", d / "cert.pem", d / "key.pem"


@pytest.fixture
def tls_broker(pki) -> Iterator[Broker]:
    _ca, cert, key = pki
    b = Broker(host="127.0.0.1", port=0, tls_cert=cert, tls_key=key)
    try:
        yield b
    finally:
        b.stop()


def _tls_client(broker: Broker, topic: str, ca: Path) -> Client:
    return Client(topic, {"host": "127.0.0.1", "port": broker.port, "ssl": True, "ssl_ca_file": str(ca)})


@pytest.fixture
def tls_backend(tls_broker: Broker, pki, tmp_path) -> Iterator[str]:
    """hello_world served over wss by a backend started with --ssl --ssl-ca-file; yields its topic."""
    ca, _cert, _key = pki
    topic = "tls-hello"
    log = tmp_path / "backend.log"
    cmd = [sys.executable, str(HELLO), "-H", "127.0.0.1", "-p", str(tls_broker.port), "-t", topic,
           "--ssl", "--ssl-ca-file", str(ca), "listen"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=str(HELLO.parent))
    c = _tls_client(tls_broker, topic, ca)
    try:
        ping_until_pong(c, topic, proc, log=log)
        yield topic
    finally:
        c.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _model(config: ModuleConfig):
    sys.path.insert(0, str(HELLO.parent))
    try:
        import hello
    finally:
        sys.path.pop(0)
    return BackendModule.create_model("hello", members=[hello.hello_world, hello.echo], config=config)


def test_call_over_wss_with_host_port_and_with_urls(tls_broker, tls_backend, pki):
    ca, _cert, _key = pki
    port = tls_broker.port
    assert tls_broker.url == f"wss://127.0.0.1:{port}"
    cfg = ModuleConfig(messaging_config=PulsarConfig(topic=tls_backend, host="127.0.0.1", port=str(port),
                                                     ssl=True, ssl_ca_file=str(ca)))
    assert cfg.messaging_config.get_topic_url("t").startswith(f"wss://127.0.0.1:{port}/ws/v2/producer/")
    Model = _model(cfg)
    assert Model.send_request({"func_name": "hello_world", "name": "TLS"}).root == "Hello, TLS"

    base = f"wss://127.0.0.1:{port}/ws/v2"
    url_cfg = ModuleConfig(messaging_config=WebsocketURLConfig(
        topic=tls_backend,
        producer_url=f"{base}/producer/non-persistent/public/default",
        consumer_url=f"{base}/consumer/non-persistent/public/default",
        ssl_ca_file=str(ca),
    ))
    assert _model(url_cfg).send_request({"func_name": "hello_world", "name": "URL"}).root == "Hello, URL"


def test_send_request_cli_over_wss_and_ssl_cert_file_honoured(tls_broker, tls_backend, pki):
    ca, _cert, _key = pki
    base = [sys.executable, str(HELLO), "-H", "127.0.0.1", "-p", str(tls_broker.port), "-t", tls_backend, "--ssl"]
    # the CA given as SSL_CERT_FILE (as OpenSSL and Python's ssl read it), no CA option
    env = {**os.environ, "SSL_CERT_FILE": str(ca)}
    out = subprocess.run([*base, "send-request", "{func_name: hello_world, name: env}"], env=env,
                         capture_output=True, text=True, timeout=120, cwd=str(HELLO.parent))
    assert out.returncode == 0, out.stderr
    assert "Hello, env" in out.stdout
    # DE_BACKEND_SSL / DE_BACKEND_SSL_CA_FILE as environment instead of flags
    env = {**os.environ, "DE_BACKEND_SSL": "true", "DE_BACKEND_SSL_CA_FILE": str(ca)}
    cmd = [sys.executable, str(HELLO), "-H", "127.0.0.1", "-p", str(tls_broker.port), "-t", tls_backend,
           "send-request", "{func_name: hello_world, name: envvars}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=str(HELLO.parent))
    assert out.returncode == 0, out.stderr
    assert "Hello, envvars" in out.stdout


def test_untrusted_certificate_is_a_clear_error_and_insecure_mode_is_named(tls_broker, tls_backend, pki):
    port = tls_broker.port
    # the system roots only: they do not hold the test CA
    c = Client(tls_backend, {"host": "127.0.0.1", "port": port, "ssl": True})
    with pytest.raises(BrokerConnectionError) as err:
        c.call("request", b'{"func_name": "hello_world", "name": "x"}', 10.0, "hello_world")
    text = str(err.value)
    assert "certificate" in text and "--ssl-ca-file" in text, text
    c.close()
    insecure = Client(tls_backend, {"host": "127.0.0.1", "port": port, "ssl": True, "ssl_insecure_no_verify": True})
    status, body, _ = insecure.call("request", b'{"func_name": "hello_world", "name": "dev"}', 30.0, "hello_world")
    assert (status, json.loads(body)) == ("success", "Hello, dev")
    insecure.close()


def test_a_standard_client_speaks_to_the_tls_broker(tls_broker, pki):
    """websocket-client (what the reference uses) with Python's ssl and the CA: publish and get the ack."""
    ca, _cert, _key = pki
    url = f"wss://127.0.0.1:{tls_broker.port}/ws/v2/producer/non-persistent/public/default/std"
    ws = websocket.create_connection(url, timeout=10, sslopt={"ca_certs": str(ca)})
    ws.send(json.dumps({"payload": "aGk=", "properties": {}, "context": 1}))
    assert json.loads(ws.recv())["result"] == "ok"
    ws.close()
    # without the CA, Python's ssl refuses the certificate as well
    with pytest.raises(ssl.SSLCertVerificationError):
        websocket.create_connection(url, timeout=10, sslopt={"ca_certs": None, "cert_reqs": ssl.CERT_REQUIRED})


def test_strangers_on_the_tls_port_do_not_disturb_it(tls_broker, tls_backend, pki):
    ca, _cert, _key = pki
    port = tls_broker.port
    # a plain ws:// client: HTTP 400 that says to use wss://
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"ws://127.0.0.1:{port}/ws/v2/producer/non-persistent/public/default/x",
                                    timeout=10)
    assert refused.value.status_code == 400
    assert b"wss://" in (refused.value.resp_body or b"")
    # garbage that starts like a TLS record; a peer that connects and says nothing
    junk = socket.create_connection(("127.0.0.1", port), timeout=5)
    junk.sendall(b"\x16\x03\x01\x00\x05" + os.urandom(64))
    silent = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        c = _tls_client(tls_broker, tls_backend, ca)
        status, body, _ = c.call("request", b'{"func_name": "hello_world", "name": "still"}', 30.0, "hello_world")
        assert json.loads(body) == "Hello, still"
        c.close()
    finally:
        junk.close()
        silent.close()


def test_wss_client_on_a_plain_broker_fails_clearly(broker):
    c = Client("plain", {"host": "127.0.0.1", "port": broker.port, "ssl": True, "connect_timeout": 10})
    with pytest.raises(BrokerConnectionError) as err:
        c.call("ping", b"", 10.0, "ping")
    assert "TLS" in str(err.value)
    c.close()


@pytest.mark.parametrize("which", ["missing cert", "junk cert", "junk key", "key only"])
def test_broker_cli_refuses_bad_certificate_files(tmp_path, pki, which):
    _ca, cert, key = pki
    junk = tmp_path / "junk.pem"
    junk.write_text("not PEM at all\n")
    args = {
        "missing cert": ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(key)],
        "junk cert": ["--tls-cert", str(junk), "--tls-key", str(key)],
        "junk key": ["--tls-cert", str(cert), "--tls-key", str(junk)],
        "key only": ["--tls-key", str(key)],
    }[which]
    out = subprocess.run([sys.executable, "-m", "demessaging_rs", "broker", "--port", "0", *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    err = out.stderr.strip().splitlines()[-1]
    assert "Traceback" not in out.stderr
    expected = {
        "missing cert": "nope.pem",
        "junk cert": "holds no PEM certificate",
        "junk key": "private key",
        "key only": "--tls-cert and --tls-key go together",
    }[which]
    assert expected in err, out.stderr
