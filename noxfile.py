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
    """Side-by-side benchmark: ours vs demessaging 0.6.4 vs NATS + nats-py vs the relay floor (release build).

    Prints Markdown tables, rewrites the README's calls table and docs/bench_calls.png. Call counts are flags,
    e.g. ``nox -s bench -- --calls 1000 --per-thread 500 --async-calls 10000``; nats-server comes from the
    Debian package (the benchmark apt-installs it as root when missing, or skips the NATS row with a note).
    """
    # the benchmark's client processes run the reference beside ours (the test environment never has it),
    # nats-py drives the NATS row, matplotlib draws the PNG
    session.install(".[test]", "demessaging==0.6.4", "nats-py", "matplotlib")
    session.run("python", "bench/bench_calls.py", *session.posargs)
