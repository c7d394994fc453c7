"""Sessions: ``nox -s tests`` (everything CI runs), ``nox -s lint``, ``nox -s bench``."""

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = False


@nox.session
def lint(session: nox.Session) -> None:
    """Rust formatting and clippy (with and without the Python bindings)."""
    session.run("cargo", "fmt", "--all", "--check", external=True)
    session.run("cargo", "clippy", "--all-targets", "--", "-D", "warnings", external=True)
    session.run("cargo", "clippy", "--all-targets", "--features", "py", "--", "-D", "warnings", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Lint, Rust tests (no libpython), then the package with its test extra and pytest."""
    lint(session)
    session.run("cargo", "test", "--quiet", external=True)
    session.install(".[test]")
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Side-by-side benchmark against demessaging 0.6.4 (release build); prints a Markdown table."""
    # the benchmark runs the reference in-process beside ours (the test environment never has it)
    session.install(".[test]", "demessaging==0.6.4")
    session.run("python", "bench/bench_calls.py", *session.posargs)
