"""Interop through the real dasf-broker-django (daphne, sqlite, in-memory channel layer) on a loopback port."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from conftest import BACKENDS, EXAMPLES, run_reference_client
from demessaging_rs import BackendModule
from demessaging_rs._core import Client
from demessaging_rs.exceptions import BrokerConnectionError, CallTimeout
from test_hello_world import load

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from dasf_django.harness import start_django_broker  # noqa: E402

TOPICS = ["greet-django", "big-django", "greet-django-ref"]


@pytest.fixture(scope="module")
def django():
    with start_django_broker(TOPICS, anonymous_can_create_topics=True) as broker:
        yield broker


def start_backend(backends, django, script, topic):
    import subprocess

    log = open(backends.tmp_path / f"{topic}.log", "w")
    cmd = [sys.executable, str(script), "-t", topic, "--websocket-url", django.url, "listen"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(script.parent))
    backends.procs.append(proc)
    c = Client(topic, {"websocket_url": django.url})
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, Path(log.name).read_text()
            try:
                if c.call("ping", b"", 1.0, "ping")[2].get("messageType") == "pong":
                    return proc
            except (CallTimeout, BrokerConnectionError):
                time.sleep(0.1)
        raise AssertionError("no pong through dasf-broker-django\n" + Path(log.name).read_text())
    finally:
        c.close()


def model(django, topic, *members):
    mc = {"topic": topic, "websocket_url": django.url, "call_timeout": 60}
    return BackendModule.create_model(members=list(members), messaging_config=mc)


def test_our_client_and_backend_through_dasf_broker_django(django, backends):
    start_backend(backends, django, EXAMPLES / "greet.py", "greet-django")
    m = model(django, "greet-django", load(EXAMPLES / "greet.py").hello_world)
    assert m.send_request({"func_name": "hello_world", "name": "Django"}).root == "Hello World, Django"


def test_two_megabytes_through_dasf_broker_django(django, backends):
    start_backend(backends, django, BACKENDS / "big.py", "big-django")
    mod = load(BACKENDS / "big.py")
    m = model(django, "big-django", mod.big)
    n = 2 * 1024 * 1024
    assert m.send_request({"func_name": "big", "n": n}).root == "x" * n


def test_reference_client_through_dasf_broker_django(django, backends, run_python, tmp_path):
    start_backend(backends, django, EXAMPLES / "greet.py", "greet-django-ref")
    messaging = f'topic="greet-django-ref", websocket_url="{django.url}"'
    assert "RESULT Hello World, Ref" in run_reference_client(run_python, tmp_path, messaging, "Ref")


@pytest.fixture(scope="module")
def django_tls(tmp_path_factory):
    """dasf-broker-django under daphne with a TLS endpoint and a certificate of a test CA."""
    import trustme

    d = tmp_path_factory.mktemp("django-pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    for i, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(d / "cert.pem"), append=i > 0)
    with start_django_broker(["greet-django-tls"], anonymous_can_create_topics=True,
                             tls=(str(d / "cert.pem"), str(d / "key.pem"))) as broker:
        broker.ca_file = str(d / "ca.pem")
        yield broker


def test_wss_through_dasf_broker_django(django_tls, backends):
    """A wss:// websocket URL (as behind an HTTPS reverse proxy): our backend and client, with the CA."""
    import subprocess

    url, ca = django_tls.url, django_tls.ca_file
    assert url.startswith("wss://")
    script, topic = EXAMPLES / "greet.py", "greet-django-tls"
    log = open(backends.tmp_path / f"{topic}.log", "w")
    cmd = [sys.executable, str(script), "-t", topic, "--websocket-url", url, "--ssl-ca-file", ca, "listen"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(script.parent))
    backends.procs.append(proc)
    mc = {"topic": topic, "websocket_url": url, "ssl_ca_file": ca, "call_timeout": 60}
    m = BackendModule.create_model(members=[load(script).hello_world], messaging_config=mc)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, Path(log.name).read_text()
        try:
            assert m.send_request({"func_name": "hello_world", "name": "TLS"}, timeout=2).root == "Hello World, TLS"
            break
        except (CallTimeout, BrokerConnectionError):
            if time.monotonic() > deadline:
                raise AssertionError("no answer over wss through dasf-broker-django\n" + Path(log.name).read_text())
            time.sleep(0.2)
    # without the CA: a certificate error that says what to do
    c = Client(topic, {"websocket_url": url})
    with pytest.raises(BrokerConnectionError, match="certificate"):
        c.call("ping", b"", 5.0, "ping")
    c.close()
