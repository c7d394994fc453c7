"""Start the real dasf-broker-django broker under daphne on 127.0.0.1.

Usage::

    from dasf_django.harness import start_django_broker   # with /work/main/bench on sys.path

    with start_django_broker(["my-topic"]) as broker:
        print(broker.url)        # ws://127.0.0.1:PORT/ws/  (WebsocketURLConfig.websocket_url)
        broker.add_topic("other-topic")

Each broker gets its own temp dir (sqlite db + daphne.log); ``stop()`` kills daphne
(whole process group) and removes the temp dir.  Requires
``pip install --pre dasf-broker-django daphne``.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_DIR = os.path.dirname(HERE)  # parent of the ``dasf_django`` package
PKG = os.path.basename(HERE)  # "dasf_django"
MANAGE = os.path.join(HERE, "manage.py")
HOST = "127.0.0.1"
MAX_STARTUP = 60.0

# routing.py: topic slug ``[-_\w]+``; subscription ``[-\.:\w]+``
_SLUG_RE = re.compile(r"^[-_\w]+$")

_live: "set[DjangoBroker]" = set()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class DjangoBroker:
    """A running daphne + dasf-broker-django instance (see :func:`start_django_broker`)."""

    def __init__(self, tmpdir: str, env: Dict[str, str]):
        self.tmpdir = tmpdir
        self.env = env
        self.port: int = 0
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = os.path.join(tmpdir, "daphne.log")
        self.startup_seconds: float = 0.0  # migrate + topics + daphne until port is open
        self.topics: List[str] = []
        # (certificate chain PEM, private key PEM): daphne serves wss:// (twisted's ssl endpoint)
        self.tls: Optional[Tuple[str, str]] = None

    # ------------------------------------------------------------------ urls
    @property
    def url(self) -> str:
        """Base websocket URL (``WebsocketURLConfig.websocket_url``), ends with ``/``."""
        return f"{'wss' if self.tls else 'ws'}://{HOST}:{self.port}/ws/"

    def producer_url(self, topic: str) -> str:
        return f"{self.url}{topic}"

    def consumer_url(self, topic: str, subscription: str) -> str:
        return f"{self.url}{topic}/{subscription}"

    # ---------------------------------------------------------------- manage
    def manage(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``manage.py <args>`` against this broker's database; returns stdout."""
        res = subprocess.run(
            [sys.executable, MANAGE, *args],
            cwd=BENCH_DIR,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        if res.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed ({res.returncode}):\n{res.stdout}")
        return res.stdout

    def add_topic(self, name: str) -> None:
        """Create a public topic that AnonymousUser may consume from (and anyone may publish to).

        Works while the server is running (the consumers query the db per message).
        """
        if not _SLUG_RE.match(name):
            raise ValueError(f"invalid topic slug for dasf-broker-django: {name!r}")
        self.manage("dasf_topic", "-n", "--anonymous", name)
        self.topics.append(name)

    # -------------------------------------------------------------- lifecycle
    def _spawn(self, port: int) -> None:
        self.port = port
        log = open(self.log_path, "ab")
        try:
            if self.tls:
                cert, key = self.tls
                listen = ["-e", f"ssl:port={port}:interface={HOST}:privateKey={key}:certKey={cert}"]
            else:
                listen = ["-b", HOST, "-p", str(port)]
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daphne", *listen, f"{PKG}.asgi:application"],
                cwd=BENCH_DIR,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group -> killpg in stop()
            )
        finally:
            log.close()

    def _wait_ready(self, timeout: float) -> None:
        """Bounded poll: daphne alive, logged "Listening on TCP address HOST:PORT", port accepts."""
        marker = f"Listening on TCP address {HOST}:{self.port}"
        deadline = time.monotonic() + min(timeout, MAX_STARTUP)
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"daphne exited early (rc={self.proc and self.proc.returncode}):\n{self.log()}")
            if marker in self.log() and _port_open(self.port):
                return
            time.sleep(0.05)
        raise TimeoutError(f"daphne not listening on {HOST}:{self.port} after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        """Kill daphne (SIGTERM, then SIGKILL) and remove the temp dir. Idempotent."""
        try:
            self._kill()
        finally:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            _live.discard(self)

    def __enter__(self) -> "DjangoBroker":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"DjangoBroker(url={self.url!r}, pid={self.proc and self.proc.pid})"


def start_django_broker(
    topics: List[str],
    port: Optional[int] = None,
    *,
    startup_timeout: float = MAX_STARTUP,
    anonymous_can_create_topics: bool = False,
    tls: Optional[Tuple[str, str]] = None,
) -> DjangoBroker:
    """Migrate a fresh sqlite db, create ``topics`` (public + anonymous), start daphne.

    ``port=None`` picks a free loopback port (retried on a bind race).
    ``anonymous_can_create_topics`` grants AnonymousUser the global
    ``dasf_broker.add_brokertopic`` permission, so that publishing to an unknown topic
    creates it (DASF_CREATE_TOPIC_ON_MESSAGE); without it the producer gets
    ``"User is not allowed to create topics."``.
    ``tls=(cert_pem, key_pem)`` serves ``wss://`` instead of ``ws://``.
    """
    t0 = time.monotonic()
    tmpdir = tempfile.mkdtemp(prefix="dasf_django_")
    env = dict(os.environ)
    env["DASF_DJANGO_DB"] = os.path.join(tmpdir, "db.sqlite3")
    env["DJANGO_SETTINGS_MODULE"] = f"{PKG}.settings"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (BENCH_DIR, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    broker = DjangoBroker(tmpdir, env)
    broker.tls = tls
    _live.add(broker)
    try:
        if port is not None and _port_open(port):
            raise RuntimeError(f"port {HOST}:{port} is already in use")
        for t in topics:
            if not _SLUG_RE.match(t):
                raise ValueError(f"invalid topic slug for dasf-broker-django: {t!r}")
        # one Django process for migrate + all `dasf_topic -n --anonymous` calls
        # (each separate manage.py run costs ~0.8 s of imports)
        broker.manage(
            "shell", "-c",
            "import sys, json\n"
            "from django.core.management import call_command\n"
            "call_command('migrate', interactive=False, verbosity=0)\n"
            f"for t in json.loads({json.dumps(json.dumps(list(topics)))}):\n"
            "    call_command('dasf_topic', t, new=True, anonymous=True)\n"
            + ("from django.contrib.auth.models import Permission\n"
               "from guardian.utils import get_anonymous_user\n"
               "get_anonymous_user().user_permissions.add(Permission.objects.get("
               "codename='add_brokertopic', content_type__app_label='dasf_broker'))\n"
               if anonymous_can_create_topics else ""),
        )
        broker.topics.extend(topics)
        attempts = 1 if port is not None else 3
        for attempt in range(attempts):
            broker._spawn(port if port is not None else _free_port())
            try:
                broker._wait_ready(max(1.0, startup_timeout - (time.monotonic() - t0)))
                break
            except RuntimeError:
                # a lost race for an auto-picked port -> try another one
                if attempt + 1 < attempts and "Address already in use" in broker.log():
                    broker._kill()
                    continue
                raise
        broker.startup_seconds = time.monotonic() - t0
        return broker
    except BaseException:
        broker.stop()
        raise


@atexit.register
def _stop_all() -> None:  # never leave a daphne behind
    for b in list(_live):
        b.stop()


if __name__ == "__main__":  # quick manual run: python harness.py topic1 topic2
    with start_django_broker(sys.argv[1:] or ["test-topic"]) as b:
        print(f"{b.url}  (started in {b.startup_seconds:.2f}s, tmp {b.tmpdir}); Ctrl-C to stop")
        try:
            while b.proc and b.proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
