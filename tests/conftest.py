"""Fixtures: a real embedded broker on a free loopback port, backends in real subprocesses.

Every wait is bounded; every process and server started here is stopped at teardown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

from demessaging_rs import Broker
from demessaging_rs._core import Client
from demessaging_rs.exceptions import BrokerConnectionError, CallTimeout

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BACKENDS = Path(__file__).resolve().parent / "backends"

# The reference package (the interop oracle) lives in a virtualenv of its own, never in the environment
# that runs these tests: a test of our API must fail when our API lacks something, and an installed
# `demessaging` could stand in for it (e.g. deprogressapi's `import demessaging.PulsarMessageConstants`).
REFERENCE_REQUIREMENTS = ["demessaging==0.6.4", "xarray", "scipy"]
REFERENCE_VENV = Path(os.environ.get("DEMESSAGING_REFERENCE_VENV", ROOT / ".reference-venv"))


def reference_python() -> str:
    """The interpreter of the reference virtualenv, created (once, then reused) on first use."""
    python = REFERENCE_VENV / "bin" / "python"
    stamp = REFERENCE_VENV / ".requirements"
    wanted = "\n".join(REFERENCE_REQUIREMENTS)
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(REFERENCE_VENV)], check=True, timeout=300)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, *REFERENCE_REQUIREMENTS], check=True, timeout=900)
        stamp.write_text(wanted)
    return str(python)


@pytest.fixture(scope="session")
def ref_python() -> str:
    return reference_python()


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker(host="127.0.0.1", port=0)
    try:
        yield b
    finally:
        b.stop()


def client(broker: Broker, topic: str) -> Client:
    return Client(topic, {"host": "127.0.0.1", "port": broker.port})


def ping_until_pong(
    c: Client, topic: str, proc: Optional[subprocess.Popen] = None, limit: float = 60.0, log: Optional[Path] = None
) -> None:
    """Ping the backend on `topic` through `c` until it answers; fail early if `proc` exits (showing `log`)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = f":\n{log.read_text()}" if log is not None else ""
            raise AssertionError(f"backend exited early with code {proc.returncode}{tail}")
        try:
            _status, _body, props = c.call("ping", b"", 0.5, "ping")
            if props.get("messageType") == "pong":
                return
        except (CallTimeout, BrokerConnectionError):
            time.sleep(0.05)
    tail = f":\n{log.read_text()}" if log is not None else ""
    raise AssertionError(f"no pong from {topic} within {limit} s{tail}")


def wait_for_pong(broker: Broker, topic: str, proc: Optional[subprocess.Popen] = None, limit: float = 60.0) -> None:
    """Ping the backend on `topic` until it answers (PROTOCOL.md §4: non-persistent topics drop early requests)."""
    c = client(broker, topic)
    try:
        ping_until_pong(c, topic, proc, limit)
    finally:
        c.close()


def reference_copy(src: Path, dst_dir: Path) -> Path:
    """The same backend module, importing the reference package instead of ours."""
    dst = dst_dir / ("ref_" + src.name)
    dst.write_text(src.read_text().replace("demessaging_rs", "demessaging"))
    return dst


class Backends:
    def __init__(self, broker: Broker, tmp_path: Path) -> None:
        self.broker = broker
        self.tmp_path = tmp_path
        self.procs: List[subprocess.Popen] = []

    def start(
        self,
        script: Path,
        topic: str,
        *extra: str,
        wait: bool = True,
        env: Optional[dict] = None,
        python: Optional[str] = None,
    ) -> subprocess.Popen:
        """Run `script` ... listen; `python` defaults to ours, and to the reference venv for ``ref_*`` copies."""
        if python is None:
            python = reference_python() if script.name.startswith("ref_") else sys.executable
        log = open(self.tmp_path / f"{script.stem}-{topic}-{len(self.procs)}.log", "w")
        cmd = [python, str(script), "-H", "127.0.0.1", "-p", str(self.broker.port), "-t", topic, *extra, "listen"]
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(script.parent), env={**os.environ, **(env or {})}
        )
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        if wait:
            try:
                wait_for_pong(self.broker, topic, proc)
            except AssertionError as e:
                raise AssertionError(f"{e}\n--- backend log ---\n{Path(log.name).read_text()}") from None
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


@pytest.fixture
def backends(broker: Broker, tmp_path: Path) -> Iterator[Backends]:
    b = Backends(broker, tmp_path)
    try:
        yield b
    finally:
        b.stop_all()


@pytest.fixture
def run_python(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run our interpreter (or, with ``python=reference_python()``, the reference venv's) under a timeout."""

    def run(
        *args: str,
        timeout: float = 60,
        cwd: Optional[Path] = None,
        input: Optional[str] = None,
        python: Optional[str] = None,
        env: Optional[dict] = None,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [python or sys.executable, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(cwd or tmp_path),
            input=input,
            env={**os.environ, **(env or {})},
        )

    return run


def run_reference_client(run_python, tmp_path: Path, messaging: str, name: str, timeout: float = 90) -> str:
    """Call greet.py's hello_world(name) with the reference client in a subprocess (it has no timeout of
    its own, so the subprocess is bounded); returns the printed result. `messaging` is the Python source
    of the messaging_config keyword arguments."""
    import textwrap

    script = tmp_path / "ref_client.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import warnings
            warnings.simplefilter("ignore")
            from demessaging import BackendModule

            def hello_world(name: str) -> str:
                return ""

            Model = BackendModule.create_model(members=[hello_world], messaging_config=dict({messaging}))
            print("RESULT", Model.send_request({{"func_name": "hello_world", "name": {name!r}}}).root)
            """
        )
    )
    out = run_python(str(script), timeout=timeout, python=reference_python())
    assert out.returncode == 0, out.stderr
    return out.stdout
