"""Progress reports (deprogressapi) end to end: backend → Rust core → caller, with only demessaging-rs installed."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from deprogressapi import ProgressReport

from conftest import BACKENDS, reference_python
from demessaging_rs import BackendModule
from demessaging_rs.exceptions import RemoteError
from test_hello_world import load

REPORTS = BACKENDS / "reports.py"


def model(broker, topic: str, *names: str):
    mod = load(REPORTS)
    mc = {"topic": topic, "host": "127.0.0.1", "port": broker.port, "call_timeout": 30}
    return BackendModule.create_model(members=[getattr(mod, n) for n in names], messaging_config=mc)


def test_callback_gets_every_report_in_order_then_the_result(broker, backends):
    backends.start(REPORTS, "progress")
    seen = []
    result = model(broker, "progress", "count_steps").send_request(
        {"func_name": "count_steps", "n": 2}, on_progress=seen.append
    )
    assert result.root == [0, 1]
    # `with reporter` (running) + per step: start (running) and end + the end of `with` (success)
    assert len(seen) == 6
    assert all(isinstance(r, ProgressReport) for r in seen)
    assert [r.status.value for r in seen] == ["running"] * 5 + ["success"]
    assert [len(r.children) for r in seen] == [0, 1, 1, 2, 2, 2]
    assert seen[0].step_message == "counting"
    assert [c.step_message for c in seen[-1].children] == ["step 0", "step 1"]
    assert all(c.status.value == "success" for c in seen[-1].children)


def test_reports_of_concurrent_calls_stay_with_their_call(broker, backends):
    from concurrent.futures import ThreadPoolExecutor

    backends.start(REPORTS, "progress-many")
    m = model(broker, "progress-many", "count_steps")

    def call(n: int):
        seen = []
        out = m.send_request({"func_name": "count_steps", "n": n}, on_progress=seen.append)
        return n, out.root, seen

    with ThreadPoolExecutor(8) as pool:
        for n, out, seen in pool.map(call, range(1, 17)):
            assert out == list(range(n))
            assert len(seen) == 2 + 2 * n
            assert len(seen[-1].children) == n and seen[-1].status.value == "success"


def test_a_report_that_raises_gives_an_error_reply_and_the_backend_keeps_serving(broker, backends):
    backends.start(REPORTS, "progress-broken")
    m = model(broker, "progress-broken", "broken_report", "plain")
    with pytest.raises(RemoteError, match="error executing request: this report cannot be submitted"):
        m.send_request({"func_name": "broken_report"})
    assert m.send_request({"func_name": "plain", "x": 41}).root == 42


def test_send_request_cli_shows_progress(broker, backends, run_python):
    backends.start(REPORTS, "progress-cli")
    args = ["-H", "127.0.0.1", "-p", str(broker.port), "-t", "progress-cli"]
    out = run_python(str(REPORTS), *args, "send-request", '{"func_name": "count_steps", "n": 3}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [0, 1, 2]
    lines = [line for line in out.stderr.splitlines() if line.startswith("progress")]
    assert lines[0] == "progress (running): counting"
    assert lines[1] == "progress (running) [0/1]: counting: step 0"
    assert lines[-1] == "progress (success) [3/3]: counting"
    assert len(lines) == 8, out.stderr


def test_reference_client_gets_the_reports_of_our_backend(broker, backends, run_python, tmp_path):
    backends.start(REPORTS, "progress-ref-client")
    script = tmp_path / "ref_progress_client.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import warnings
            warnings.simplefilter("ignore")
            from typing import List
            from deprogressapi import ProgressReport
            from demessaging import BackendModule

            def count_steps(n: int, reporter: ProgressReport = ProgressReport(step_message="counting")) -> List[int]:
                return []

            mc = dict(topic="progress-ref-client", host="127.0.0.1", port="{broker.port}")
            Model = BackendModule.create_model(members=[count_steps], messaging_config=mc)
            print("RESULT", Model.send_request({{"func_name": "count_steps", "n": 2}}).root)
            """
        )
    )
    out = run_python(str(script), python=reference_python(), timeout=90, env={"DASF_REPORT_SHOW_METHOD": "PRINT"})
    assert out.returncode == 0, out.stderr
    assert "RESULT [0, 1]" in out.stdout
    # the reference client prints each report it receives (JSON, indented)
    assert out.stdout.count('"step_message": "counting"') == 6, out.stdout
    assert out.stdout.index('"status": "running"') < out.stdout.rindex('"status": "success"')


def test_a_real_demessaging_is_used_not_shadowed(broker, backends, tmp_path):
    """With a `demessaging` on the path (here a stand-in that records its import), deprogressapi imports it,
    not our placeholder, and the reports still reach the caller."""
    fake = tmp_path / "site" / "demessaging"
    fake.mkdir(parents=True)
    marker = tmp_path / "imported"
    (fake / "__init__.py").write_text("")
    (fake / "PulsarMessageConstants.py").write_text(
        textwrap.dedent(
            f"""
            from enum import Enum
            open({str(marker)!r}, "w").write("real demessaging imported")

            class MessageType(str, Enum):
                PROGRESS = "progress"
                RESPONSE = "response"

            class PropertyKeys(str, Enum):
                STATUS = "status"
            """
        )
    )
    backends.start(REPORTS, "progress-side-by-side", env={"PYTHONPATH": str(fake.parent)})
    seen = []
    m = model(broker, "progress-side-by-side", "count_steps")
    assert m.send_request({"func_name": "count_steps", "n": 1}, on_progress=seen.append).root == [0]
    assert len(seen) == 4
    assert marker.read_text() == "real demessaging imported"


def test_placeholder_offers_only_the_constants():
    import importlib

    import demessaging  # the placeholder: the reference is not installed here

    assert getattr(demessaging, "__demessaging_rs_shim__", False)
    constants = importlib.import_module("demessaging.PulsarMessageConstants")
    assert constants.MessageType.PROGRESS == "progress" and constants.PropertyKeys.STATUS == "status"
    with pytest.raises(AttributeError, match="demessaging package is not installed"):
        demessaging.main  # noqa: B018
