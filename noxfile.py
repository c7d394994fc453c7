"""Sessions: ``nox -s tests`` (what CI runs, with ``nox -s wheel``), ``nox -s lint``, ``nox -s wheel``,
``nox -s bench``.

The extension is built once per session as one abi3 wheel (stable ABI of CPython 3.9, so the same file
serves every supported Python) and installed from ``dist/``; pytest runs against that wheel on the Python
nox runs on and on the oldest and newest supported ones (3.9, 3.13) where they are installed.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = False

ROOT = Path(__file__).resolve().parent
DIST = ROOT / "dist"
#: the oldest and the newest Python the package supports (requires-python >= 3.9), besides nox's own
OTHER_PYTHONS = ["3.9", "3.13"]


def find_python(version: str) -> Optional[str]:
    """An interpreter of `version`: installed by pyenv, or on PATH as pythonX.Y (pyenv's shims only work for
    the selected versions, so they are not taken)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}")))
    if candidates:
        return candidates[-1]
    found = shutil.which(f"python{version}")
    return found if found and f"{os.sep}shims{os.sep}" not in found else None


def build_dist(session: nox.Session, sdist: bool = False) -> Path:
    """Build the abi3 wheel (and the sdist) into dist/; returns the wheel."""
    session.install("maturin>=1.7,<2")
    for old in DIST.glob("demessaging_rs-*"):
        old.unlink()
    session.run("maturin", "build", "--release", "--out", str(DIST), external=False)
    if sdist:
        session.run("maturin", "sdist", "--out", str(DIST), external=False)
    wheels = sorted(DIST.glob("demessaging_rs-*-abi3-*.whl"))
    if not wheels:
        session.error("maturin built no abi3 wheel")
    return wheels[-1]


def rust_lint(session: nox.Session) -> None:
    session.run("cargo", "fmt", "--all", "--check", external=True)
    session.run("cargo", "clippy", "--all-targets", "--", "-D", "warnings", external=True)
    session.run("cargo", "clippy", "--all-targets", "--features", "py", "--", "-D", "warnings", external=True)


def python_lint(session: nox.Session) -> None:
    """mypy --strict over the package and stubtest of the hand-kept _core.pyi (the package must be installed)."""
    session.install("mypy>=1.10", "types-PyYAML")
    session.run("mypy", "--strict", "python/demessaging_rs")
    session.run("python", "-m", "mypy.stubtest", "demessaging_rs._core")


@nox.session
def lint(session: nox.Session) -> None:
    """Rust formatting and clippy (with and without the Python bindings), mypy --strict and stubtest."""
    rust_lint(session)
    session.install(f"{build_dist(session)}[test]")  # mypy follows the optional imports too (xarray, websocket)
    python_lint(session)


def pytest_on(session: nox.Session, version: str, wheel: Path, args: List[str]) -> None:
    """pytest from the same wheel in a fresh virtualenv of Python `version` (skipped when not installed)."""
    python = find_python(version)
    if python is None:
        session.warn(f"Python {version} is not installed here: its test run is skipped")
        return
    venv = ROOT / ".nox" / f"tests-py{version}"
    shutil.rmtree(venv, ignore_errors=True)
    session.run(python, "-m", "venv", str(venv), external=True)
    bindir = venv / "bin"
    session.run(str(bindir / "python"), "-m", "pip", "install", "--quiet", f"{wheel}[test]", external=True)
    session.run(str(bindir / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Lint, Rust tests (no libpython), the abi3 wheel, then pytest against it on this Python, 3.9 and 3.13."""
    rust_lint(session)
    session.run("cargo", "test", "--quiet", external=True)
    wheel = build_dist(session)
    session.install(f"{wheel}[test]")
    python_lint(session)
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)
    for version in OTHER_PYTHONS:
        if sys.version_info[:2] != tuple(int(p) for p in version.split(".")):
            pytest_on(session, version, wheel, list(session.posargs))


@nox.session
def wheel(session: nox.Session) -> None:
    """Build the wheel and the sdist; install the wheel where no cargo is on PATH and run the demo and an
    import of every public module; install from the sdist alone (this one needs cargo)."""
    whl = build_dist(session, sdist=True)
    sdist = sorted(DIST.glob("demessaging_rs-*.tar.gz"))[-1]
    for f in (whl, sdist):
        session.log(f"{f.name}: {f.stat().st_size / 1e6:.1f} MB")
    venv = ROOT / ".nox" / "wheel-no-cargo"
    shutil.rmtree(venv, ignore_errors=True)
    session.run(sys.executable, "-m", "venv", str(venv), external=True)
    py = str(venv / "bin" / "python")
    no_cargo = {"PATH": os.pathsep.join([str(venv / "bin"), "/usr/bin", "/bin"])}
    session.run(py, "-m", "pip", "install", "--quiet", str(whl), env=no_cargo, external=True)
    session.run(py, "-c", "import shutil, sys; sys.exit(shutil.which('cargo') is not None)", env=no_cargo, external=True)
    session.run(str(venv / "bin" / "demessaging-rs"), "demo", "--calls", "20", env=no_cargo, external=True)
    session.run(py, str(ROOT / "tests" / "import_all.py"), env=no_cargo, external=True)
    # the sdist alone builds (it compiles the extension: cargo needed here)
    venv2 = ROOT / ".nox" / "wheel-from-sdist"
    shutil.rmtree(venv2, ignore_errors=True)
    session.run(sys.executable, "-m", "venv", str(venv2), external=True)
    py2 = str(venv2 / "bin" / "python")
    session.run(py2, "-m", "pip", "install", "--quiet", str(sdist), external=True)
    session.run(py2, "-c", "import demessaging_rs; print('sdist build:', demessaging_rs.__version__)", external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Side-by-side benchmark: ours, demessaging 0.6.4, NATS (nats-server + nats-py) and the relay floor
    (release build); prints Markdown tables, rewrites the README's, draws bench/bench_calls.png."""
    # the benchmark runs the reference in-process beside ours (the test environment never has it)
    session.install(".[test]", "demessaging==0.6.4", "nats-py", "matplotlib")
    session.run("python", "bench/bench_calls.py", *session.posargs)
