"""Zero-edit mode: code written for the reference (`import demessaging`) runs unchanged under
`demessaging-rs run`, served and called by our core, and talks to the reference's client."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import reference_python, wait_for_pong
from demessaging_rs import BackendModule

PKG_ROOT = Path(__file__).resolve().parent / "zeroedit"
ENV = {"PYTHONPATH": str(PKG_ROOT)}


def start_backend(broker, backends, topic: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "demessaging_rs", "run", "-m", "zeroedit_pkg.backend",
           "-H", "127.0.0.1", "-p", str(broker.port), "-t", topic, "listen"]
    log = open(backends.tmp_path / f"{topic}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(backends.tmp_path),
                            env={**os.environ, **ENV})
    backends.procs.append(proc)
    try:
        wait_for_pong(broker, topic, proc)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{Path(log.name).read_text()}") from None
    return proc


def test_unchanged_backend_package_serves_our_client_and_the_reference_client(broker, backends, run_python):
    start_backend(broker, backends, "zero-edit")

    def shout(text: str) -> str:
        return ""

    mc = {"topic": "zero-edit", "host": "127.0.0.1", "port": broker.port, "call_timeout": 30}
    ours = BackendModule.create_model(members=[shout], messaging_config=mc)
    assert ours.send_request({"func_name": "shout", "text": "rust"}).root == "RUST!"

    # the same client script: under the reference (its own venv), then unchanged on ours via `run`
    client = PKG_ROOT / "zeroedit_pkg" / "client.py"
    ref = run_python(str(client), "zero-edit", str(broker.port), python=reference_python(), env=ENV, timeout=90)
    assert ref.returncode == 0, ref.stderr
    assert "MODULE demessaging\n" in ref.stdout and "RESULT HI!" in ref.stdout and "COUNTS {'a': 2, 'b': 1}" in ref.stdout
    mine = run_python("-m", "demessaging_rs", "run", str(client), "zero-edit", str(broker.port), env=ENV)
    assert mine.returncode == 0, mine.stderr
    assert "MODULE demessaging_rs\n" in mine.stdout and "RESULT HI!" in mine.stdout
    assert "COUNTS {'a': 2, 'b': 1}" in mine.stdout


def test_schema_of_the_unchanged_package_equals_the_reference(run_python):
    mine = run_python("-m", "demessaging_rs", "run", "-m", "zeroedit_pkg.backend", "-t", "t", "schema", env=ENV)
    assert mine.returncode == 0, mine.stderr
    ref = run_python("-m", "zeroedit_pkg.backend", "-t", "t", "schema", python=reference_python(), env=ENV)
    assert ref.returncode == 0, ref.stderr
    import json

    assert json.loads(mine.stdout) == json.loads(ref.stdout)


def test_run_of_a_missing_module_is_one_clear_line(run_python):
    out = run_python("-m", "demessaging_rs", "run", "-m", "zeroedit_pkg.nothing_here", "listen", env=ENV)
    assert out.returncode == 2
    assert out.stderr.strip() == "demessaging-rs run: no module named 'zeroedit_pkg.nothing_here'"
    out = run_python("-m", "demessaging_rs", "run", "-m", "no_such_package.backend", "listen", env=ENV)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("demessaging-rs run: no module named 'no_such_package.backend'")
    out = run_python("-m", "demessaging_rs", "run", "missing_script.py", env=ENV)
    assert out.returncode == 2 and out.stderr.strip() == "demessaging-rs run: no such file 'missing_script.py'"


def test_run_of_a_module_without_members_is_one_clear_line(run_python):
    out = run_python("-m", "demessaging_rs", "run", "-m", "zeroedit_pkg.empty", "-t", "t", "schema", env=ENV)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: Found no members for the given module __main__! Define __all__, public functions, or pass members."
    ]


def test_without_run_nothing_is_aliased(run_python):
    """Zero-edit mode is opt-in: plain python does not turn `demessaging` into ours."""
    out = run_python("-m", "zeroedit_pkg.backend", "-t", "t", "schema", env=ENV)
    assert out.returncode != 0
    assert "No module named 'demessaging'" in out.stderr
