"""Logging: the configuration (names, levels, options) matches demessaging's, so log configs written for the
reference work unchanged; the CLI flags and ``DE_LOGGING_*`` variables act as the reference's do."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
import yaml
from conftest import EXAMPLES, client, reference_python

from demessaging_rs.cli import get_parser
from demessaging_rs.config import LoggingConfig, ModuleConfig
from demessaging_rs.config.logging import DEFAULT_CONFIG_FILE

OURS = "demessaging_rs"
REF = "demessaging"

# A log config written for the reference: it refers to the default's handlers by name, adds its own handler
# and configures the root logger. Without --merge-log-config it is incomplete (console is not defined).
USER_CONFIG = """
version: 1
disable_existing_loggers: false
formatters:
  short:
    format: "USER %(levelname)s %(name)s %(message)s"
handlers:
  handler:
    class: logging.StreamHandler
    level: INFO
    formatter: short
    stream: ext://sys.stderr
loggers:
  demessaging:
    handlers: [console, warning_console, handler]
    level: DEBUG
  root:
    handlers: [handler]
    level: WARNING
"""

# A complete config of its own (usable without merging).
STANDALONE_CONFIG = """
version: 1
disable_existing_loggers: false
formatters:
  bare:
    format: "STANDALONE %(levelname)s %(name)s %(message)s"
handlers:
  out:
    class: logging.StreamHandler
    level: DEBUG
    formatter: bare
    stream: ext://sys.stdout
loggers:
  demessaging:
    handlers: [out]
    propagate: false
    level: WARNING
"""

OVERRIDES = """
loggers:
  demessaging:
    level: 40
"""


@pytest.fixture
def user_files(tmp_path: Path) -> Dict[str, Path]:
    files = {"user.yaml": USER_CONFIG, "standalone.yaml": STANDALONE_CONFIG, "overrides.yaml": OVERRIDES}
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return {name: tmp_path / name for name in files}


def _strip_own(config: Dict) -> Dict:
    """`config` without our own logger tree, i.e. what the reference would produce."""
    out = json.loads(json.dumps(config))
    loggers = out.get("loggers", {})
    for name in list(loggers):
        if name == OURS or name.startswith(OURS + "."):
            del loggers[name]
    return out


# --------------------------------------------------------------------- LoggingConfig (the reference's scenarios)
def test_default_config():
    config = LoggingConfig().config_dict
    assert isinstance(config, dict)
    for key in ("version", "formatters", "handlers", "loggers"):
        assert key in config
    assert set(config["handlers"]) == {"console", "warning_console"}
    assert set(config["formatters"]) == {"simple", "full"}
    assert {OURS, REF, "websocket"} <= set(config["loggers"])
    ours = config["loggers"][OURS]
    assert ours == config["loggers"][REF]
    assert ours["level"] == "INFO" and ours["propagate"] is False
    assert ours["handlers"] == ["console", "warning_console"]
    assert config["handlers"]["console"]["stream"] == "ext://sys.stdout"
    assert config["handlers"]["warning_console"]["stream"] == "ext://sys.stderr"
    assert config["handlers"]["warning_console"]["level"] == "WARNING"


def test_log_level_overwrite():
    config = LoggingConfig(level=logging.DEBUG).config_dict
    assert config["loggers"]
    for name, logger in config["loggers"].items():
        assert logger["level"] == logging.DEBUG, name


def test_log_file(tmp_path: Path):
    logfile = tmp_path / "somefile.log"
    config = LoggingConfig(logfile=logfile).config_dict
    handler = config["handlers"]["file_handler"]
    assert handler["class"] == "logging.handlers.RotatingFileHandler"
    assert handler["filename"] == str(logfile)
    assert handler["formatter"] == "full" and handler["mode"] == "w" and handler["level"] == "DEBUG"
    for name, logger in config["loggers"].items():
        assert logger["handlers"].count("file_handler") == 1, name
    # the default config is not modified by building the dict
    assert "file_handler" not in LoggingConfig().config_dict["handlers"]


def test_other_log_config(user_files):
    config = LoggingConfig(config_file=user_files["user.yaml"]).config_dict
    assert "root" in config["loggers"]
    assert REF in config["loggers"]
    assert "console" not in config["handlers"]
    # the entry written for the reference also applies to our logger tree
    assert config["loggers"][OURS] == config["loggers"][REF]


def test_log_config_merge(user_files):
    config = LoggingConfig(config_file=user_files["user.yaml"], merge_config=True).config_dict
    assert "root" in config["loggers"]
    assert "console" in config["handlers"] and "handler" in config["handlers"]
    for name in (REF, OURS):
        handlers = config["loggers"][name]["handlers"]
        assert {"console", "warning_console", "handler"} <= set(handlers), name
        assert config["loggers"][name]["level"] == "DEBUG"
    assert config["loggers"]["websocket"]["level"] == "INFO"


def test_config_overrides():
    overrides = {"loggers": {REF: {"level": logging.DEBUG}}}
    config = LoggingConfig(config_overrides=overrides).config_dict
    assert config["loggers"][REF]["level"] == logging.DEBUG
    assert config["loggers"][OURS]["level"] == logging.DEBUG
    assert config["loggers"]["websocket"]["level"] == "INFO"
    assert overrides == {"loggers": {REF: {"level": logging.DEBUG}}}  # the user's dict is left alone


def test_explicit_own_logger_entry_wins(tmp_path: Path):
    path = tmp_path / "both.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "loggers": {REF: {"level": "ERROR"}, OURS: {"level": "DEBUG"}, REF + ".backend": {"level": "INFO"}},
            }
        )
    )
    loggers = LoggingConfig(config_file=path).config_dict["loggers"]
    assert loggers[OURS]["level"] == "DEBUG"
    assert loggers[OURS + ".backend"]["level"] == "INFO"


def test_empty_config_file(tmp_path: Path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        LoggingConfig(config_file=empty).config_dict


def test_environment_variables(monkeypatch, tmp_path: Path, user_files):
    monkeypatch.setenv("DE_LOGGING_LEVEL", "10")
    monkeypatch.setenv("DE_LOGGING_LOGFILE", str(tmp_path / "env.log"))
    monkeypatch.setenv("DE_LOGGING_CONFIG_FILE", str(user_files["user.yaml"]))
    monkeypatch.setenv("DE_LOGGING_MERGE_CONFIG", "true")
    monkeypatch.setenv("DE_LOGGING_CONFIG_OVERRIDES", json.dumps({"loggers": {"websocket": {"level": 50}}}))
    lc = LoggingConfig()
    assert lc.level == 10 and lc.logfile == tmp_path / "env.log" and lc.merge_config
    config = lc.config_dict
    assert config["handlers"]["file_handler"]["filename"] == str(tmp_path / "env.log")
    assert config["loggers"][OURS]["level"] == 10
    assert "handler" in config["loggers"][OURS]["handlers"]
    assert config["loggers"]["websocket"]["level"] == 50


def test_cli_defaults_come_from_the_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("DE_LOGGING_LEVEL", "10")
    monkeypatch.setenv("DE_LOGGING_LOGFILE", str(tmp_path / "env.log"))
    parser = get_parser(config=ModuleConfig(messaging_config={"topic": "t"}))
    ns = parser.parse_args(["schema"])
    assert ns.log_config["level"] == 10
    assert ns.log_config["logfile"] == tmp_path / "env.log"
    assert ns.log_config["config_file"] == DEFAULT_CONFIG_FILE
    ns = parser.parse_args(["--log-level", "30", "--log-overrides", '{"loggers": {"x": {"level": 10}}}', "schema"])
    assert ns.log_config["level"] == 30
    assert ns.log_config["config_overrides"] == {"loggers": {"x": {"level": 10}}}
    with pytest.raises(SystemExit):
        parser.parse_args(["--log-level", "15", "schema"])  # only the five standard levels


# --------------------------------------------------------------------- parity with the installed reference
def _reference_default_config() -> Tuple[Path, Dict]:
    out = subprocess.run(
        [reference_python(), "-c", "import demessaging.config.logging as m; print(m.DEFAULT_CONFIG_FILE)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip().splitlines()[-1])
    return path, yaml.safe_load(path.read_text())


def test_default_config_matches_reference_yaml():
    _, ref = _reference_default_config()
    ours = yaml.safe_load(DEFAULT_CONFIG_FILE.read_text())
    assert ours["version"] == ref["version"]
    assert ours["disable_existing_loggers"] == ref["disable_existing_loggers"]
    assert ours["formatters"] == ref["formatters"]
    assert ours["handlers"] == ref["handlers"]
    # every logger of the reference, configured the same way; ours like the reference's `demessaging`
    for name, entry in ref["loggers"].items():
        assert ours["loggers"].get(name) == entry, name
    assert ours["loggers"][OURS] == ref["loggers"][REF]
    assert set(ours["loggers"]) == set(ref["loggers"]) | {OURS}
    assert set(ours) == set(ref)


REF_CONFIG_DICTS = """
import json, sys
from demessaging.config import LoggingConfig
cases = json.loads(sys.argv[1])
out = []
for kws in cases:
    try:
        out.append(LoggingConfig(**kws).config_dict)
    except Exception as e:
        out.append({"error": type(e).__name__})
print(json.dumps(out))
"""


def test_config_dict_matches_reference(tmp_path: Path, user_files, run_python):
    logfile = str(tmp_path / "x.log")
    user = str(user_files["user.yaml"])
    cases: List[Dict[str, Any]] = [
        {},
        {"level": 10},
        {"level": 40},
        {"logfile": logfile},
        {"config_file": user},
        {"config_file": user, "merge_config": True},
        {"config_file": str(user_files["standalone.yaml"])},
        {"config_overrides": {"loggers": {"websocket": {"level": 30}}, "handlers": {"console": {"level": "INFO"}}}},
        {"config_file": user, "merge_config": True, "level": 10, "logfile": logfile,
         "config_overrides": {"root": {"level": "ERROR"}}},
    ]
    script = tmp_path / "ref_config_dicts.py"
    script.write_text(REF_CONFIG_DICTS)
    out = run_python(str(script), json.dumps(cases), python=reference_python(), timeout=120)
    assert out.returncode == 0, out.stderr
    ref_dicts = json.loads(out.stdout.strip().splitlines()[-1])
    for kws, ref in zip(cases, ref_dicts):
        assert "error" not in ref, (kws, ref)
        ours = json.loads(json.dumps(LoggingConfig(**kws).config_dict))
        assert _strip_own(ours) == ref, kws
        # our tree is configured as the reference's `demessaging` is
        assert ours["loggers"][OURS] == ours["loggers"][REF], kws


# --------------------------------------------------------------------- the command line, ours next to the reference
PROBE = '''
"""A backend module that reports the logging state after `main` configured it."""
import json
import logging
import logging.handlers
import os
import sys

from {pkg} import main

__all__ = ["hello_world"]


def hello_world() -> str:
    return "HelloWorld"


def describe(name):
    logger = logging.getLogger(name)
    handlers = []
    for h in logger.handlers:
        if type(h) is logging.NullHandler and h.name is None:
            continue  # added by a library on import (websocket-client), not by the logging config
        info = {{"name": h.name, "class": type(h).__name__, "level": h.level,
                "format": h.formatter._fmt if h.formatter else None}}
        stream = getattr(h, "stream", None)
        info["stream"] = {{id(sys.stdout): "stdout", id(sys.stderr): "stderr"}}.get(id(stream))
        if isinstance(h, logging.handlers.RotatingFileHandler):
            info.update(file=os.path.basename(h.baseFilename), mode=h.mode, maxBytes=h.maxBytes,
                        backupCount=h.backupCount)
        handlers.append(info)
    return {{"level": logger.level, "propagate": logger.propagate,
            "handlers": sorted(handlers, key=lambda h: str(h["name"]))}}


if __name__ == "__main__":
    main(messaging_config=dict(topic="probe-topic"))
    state = {{name: describe(name) for name in ("demessaging", "websocket", "root", "demessaging_rs")}}
    with open(os.environ["PROBE_OUT"], "w") as f:
        json.dump(state, f)
    probe = logging.getLogger("{pkg}.probe")
    probe.debug("probe-debug-record")
    probe.info("probe-info-record")
    probe.warning("probe-warning-record")
    logging.shutdown()
'''

_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - ")


def _probe_lines(text: str) -> List[str]:
    """The probe's log lines, without time stamps and with our package name read as the reference's."""
    return [_STAMP.sub("", line).replace(OURS, REF) for line in text.splitlines() if "probe-" in line]


def _run_probe(run_python, workdir: Path, pkg: str, args: List[str], env: Dict[str, str], python: Optional[str]):
    workdir.mkdir()
    files = {"user.yaml": USER_CONFIG, "standalone.yaml": STANDALONE_CONFIG, "overrides.yaml": OVERRIDES}
    for name, text in files.items():
        (workdir / name).write_text(textwrap.dedent(text))
    script = workdir / "probe.py"
    script.write_text(PROBE.format(pkg=pkg))
    state_file = workdir / "state.json"
    out = run_python(
        str(script), *args, cwd=workdir, python=python, env={"PROBE_OUT": str(state_file), **env}, timeout=120
    )
    state = json.loads(state_file.read_text()) if out.returncode == 0 else None
    logfile = workdir / "run.log"
    return out, state, (logfile.read_text() if logfile.exists() else None)


CLI_CASES = [
    pytest.param([], {}, id="default"),
    pytest.param(["--log-level", "10"], {}, id="log-level-debug"),
    pytest.param(["--log-level", "40"], {}, id="log-level-error"),
    pytest.param(["--log-file", "run.log"], {}, id="log-file"),
    pytest.param(["--log-config", "user.yaml", "--merge-log-config"], {}, id="merged-user-config"),
    pytest.param(["--log-config", "user.yaml"], {}, id="unmerged-incomplete-user-config"),
    pytest.param(["--log-config", "standalone.yaml"], {}, id="standalone-user-config"),
    pytest.param(["--log-overrides", '{"loggers": {"demessaging": {"level": 30}}}'], {}, id="overrides-json"),
    pytest.param(["--log-overrides", "overrides.yaml"], {}, id="overrides-file"),
    pytest.param(
        ["--log-config", "user.yaml", "--merge-log-config", "--log-level", "10", "--log-file", "run.log"],
        {},
        id="combined",
    ),
    pytest.param([], {"DE_LOGGING_LEVEL": "10"}, id="env-level"),
    pytest.param([], {"DE_LOGGING_LOGFILE": "run.log"}, id="env-logfile"),
    pytest.param([], {"DE_LOGGING_CONFIG_FILE": "standalone.yaml"}, id="env-config-file"),
    pytest.param([], {"DE_LOGGING_CONFIG_OVERRIDES": '{"loggers": {"websocket": {"level": 50}}}'}, id="env-overrides"),
]


@pytest.mark.parametrize("args,env", CLI_CASES)
def test_cli_logging_matches_reference(tmp_path: Path, run_python, args: List[str], env: Dict[str, str]):
    ours, our_state, our_log = _run_probe(run_python, tmp_path / "ours", OURS, args, env, None)
    ref, ref_state, ref_log = _run_probe(run_python, tmp_path / "ref", REF, args, env, reference_python())

    assert (ours.returncode == 0) == (ref.returncode == 0), (ours.stderr, ref.stderr)
    if ref.returncode != 0:
        return
    for name in ("demessaging", "websocket", "root"):
        assert our_state[name] == ref_state[name], name
    # our logger tree gets the reference's `demessaging` setup
    assert our_state[OURS] == our_state[REF]
    # the same records reach the same streams and files, formatted the same way
    assert _probe_lines(ours.stdout) == _probe_lines(ref.stdout)
    assert _probe_lines(ours.stderr) == _probe_lines(ref.stderr)
    assert (our_log is None) == (ref_log is None)
    if our_log is not None:
        assert _probe_lines(our_log) == _probe_lines(ref_log)
        assert "probe-info-record" in our_log


def test_default_streams(tmp_path: Path, run_python):
    """INFO on stdout via `console`, WARNING and above also on stderr via `warning_console`, no DEBUG."""
    out, state, _ = _run_probe(run_python, tmp_path / "ours", OURS, [], {}, None)
    assert out.returncode == 0, out.stderr
    assert _probe_lines(out.stdout) == [
        "INFO - [demessaging.probe]: probe-info-record",
        "WARNING - [demessaging.probe]: probe-warning-record",
    ]
    assert _probe_lines(out.stderr) == ["WARNING - [demessaging.probe]: probe-warning-record"]
    assert [h["name"] for h in state[OURS]["handlers"]] == ["console", "warning_console"]


# --------------------------------------------------------------------- a real backend command and listen
def test_reference_log_config_with_backend_command(tmp_path: Path, user_files, run_python):
    merged = run_python(
        str(EXAMPLES / "hello_world.py"), "--log-config", str(user_files["user.yaml"]), "--merge-log-config", "schema"
    )
    assert merged.returncode == 0, merged.stderr
    assert json.loads(merged.stdout)["title"] == "hello-world-topic"
    # as with the reference, the file alone is incomplete: it names handlers it does not define
    alone = run_python(str(EXAMPLES / "hello_world.py"), "--log-config", str(user_files["user.yaml"]), "schema")
    assert alone.returncode != 0
    assert "console" in alone.stderr


def test_listen_logs_to_file_and_not_per_call(tmp_path: Path, broker, backends):
    """Records of the Python layer and the Rust core reach --log-file; serving calls adds no INFO lines."""
    logfile = tmp_path / "backend.log"
    topic = "logging-listen"
    proc = backends.start(EXAMPLES / "hello_world.py", topic, "--log-file", str(logfile))
    console = Path(proc.log_path)  # type: ignore[attr-defined]

    def info_lines() -> List[str]:
        return [line for line in console.read_text().splitlines() if " - INFO - " in line]

    before = info_lines()
    assert any("[demessaging_rs.backend" in line and "listening on topic" in line for line in before), before
    c = client(broker, topic)
    try:
        for _ in range(5):
            status, body, _props = c.call("request", json.dumps({"func_name": "hello_world"}), 30.0, "test")
            assert status == "success", body
    finally:
        c.close()
    assert info_lines() == before
    backends.stop_all()
    text = logfile.read_text()
    assert "listening on topic" in text  # from the Rust core, through the bridge
    assert "serving topic" in text  # from the Python layer
    assert re.search(r" - INFO - \[demessaging_rs\.backend[.\w]*\]: listening on topic", text), text


def test_log_level_debug_reaches_the_rust_core(broker, backends):
    """--log-level 10 lets the core's debug records through to Python logging (INFO and up otherwise)."""
    from conftest import EXAMPLES, client

    quiet = backends.start(EXAMPLES / "hello_world.py", "rust-log-info")
    loud = backends.start(EXAMPLES / "hello_world.py", "rust-log-debug", "--log-level", "10")
    for topic in ("rust-log-info", "rust-log-debug"):
        c = client(broker, topic)
        try:
            c.call("pong", b"", 0.3, "pong")  # a backend ignores pongs (logged at debug)
        except Exception:
            pass
        c.call("ping", b"", 10.0, "ping")  # answered after the pong: its log line is written by then
        c.close()
    backends.stop_all()
    assert "ignoring pong message on rust-log-debug" in Path(loud.log_path).read_text()
    assert "ignoring pong message" not in Path(quiet.log_path).read_text()
