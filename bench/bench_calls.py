"""Side-by-side call benchmark, one run on one machine, same hello_world workload for every system:

* demessaging 0.6.4 (the reference) through our embedded broker,
* demessaging-rs through our embedded broker,
* NATS (`nats-server`, Debian package) with a nats-py responder in Python (plain JSON, no validation),
* and the transport floor: 4 loopback websocket hops through a bare Rust relay (`dasf-loadgen roundtrip`).

The broker, each backend/responder and each system's client run in processes of their own (the client side is
bench/bench_clients.py). Per system: sequential calls (p50, p99, calls/s), 8 threads calling at once (calls/s;
for NATS each thread has its own asyncio loop and connection), and 1000 calls kept in flight on one asyncio
loop (calls/s; the reference has no asyncio API), with the CPU µs per call of client, broker and backend read
from /proc/<pid>/stat around the threaded and the in-flight phases; those two phases run three times per system
(--repeat) and the median run counts. The reference's, our and the Rust-only backends stay up together on one
broker, and their threaded runs alternate (ref, ours, Rust-only, ref, ...), so that a slow spell of the shared
machine does not fall on one system only. Then large-payload echoes (ours vs the reference). Prints Markdown
tables with ratios,
writes bench/results.md, rewrites the README between the `<!-- bench:calls -->` markers and draws
bench/bench_calls.png (when matplotlib is installed).

    python bench/bench_calls.py [--calls 2000] [--threads 8] [--per-thread 1000] [--async-calls 20000]
                                [--in-flight 1000] [--floor-messages 2000] [--repeat 3] [--native-broker] [--no-nats]
                                [--no-nats-install] [--no-echo] [--no-readme]

BENCH_BROKER_ARGS (e.g. "--threads 2") is appended to the `demessaging-rs broker` command line; NATS_SERVER
names a nats-server binary. Without nats-server on PATH the benchmark tries `apt-get install -y nats-server`
(as root; --no-nats-install prevents it) and otherwise skips the NATS row with a note.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from bench_clients import cpu_seconds, median_run

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = ROOT / "target" / "release"
PNG = ROOT / "bench" / "bench_calls.png"

REF = "demessaging 0.6.4 (reference) + our broker"
OURS = "demessaging-rs + our broker"
RUST_TOPIC = "bench-rust-only"
RUST_ONLY = "the library's Rust client and backend, no Python (dasf-loadgen calls/backend) + our broker"
ECHO_COLS = ["echo 100 KB", "echo 400 KB", "echo 1 MB", "echo 2 MB", "echo 20 MB", "echo 100 MB"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {limit:.0f} s")


def start(cmd: List[str], log: Path, **kw: Any) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=kw.pop("stdout", open(log, "w")), stderr=subprocess.STDOUT, cwd=str(HERE), **kw)


def stop(procs: List[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=15)


T0 = time.monotonic()


def note(msg: str) -> None:
    print(f"[bench {time.monotonic() - T0:5.1f} s] {msg}", flush=True)


# ------------------------------------------------------------------------------------------- transport floor
def build_loadgen() -> Optional[Path]:
    exe = BIN / "dasf-loadgen"
    if shutil.which("cargo"):
        r = subprocess.run(["cargo", "build", "--release", "--bin", "dasf-loadgen", "--quiet"], cwd=ROOT)
        if r.returncode != 0:
            note("cargo build --release --bin dasf-loadgen failed")
    return exe if exe.exists() else None


def roundtrip(exe: Path, base: str, messages: int, tag: str) -> Dict[str, Any]:
    out = subprocess.run([str(exe), "roundtrip", "--base", base, "--messages", str(messages), "--tag", tag],
                         capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip()[-300:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def relay_floor(exe: Path, messages: int) -> Dict[str, Any]:
    """4-hop round trip through the bare relay (`dasf-loadgen relay`), no broker semantics, no Python."""
    relay = subprocess.Popen([str(exe), "relay", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(relay.stdout.readline())["port"]  # type: ignore[union-attr]
        return roundtrip(exe, f"ws://127.0.0.1:{port}/ws", messages, "floor")
    finally:
        relay.terminate()
        relay.wait(timeout=15)


def start_rust_backend(exe: Path, port: int, tmp: Path) -> subprocess.Popen:
    """The library's backend with a Rust hello_world handler (`dasf-loadgen backend`), up when this returns."""
    backend = subprocess.Popen([str(exe), "backend", "--port", str(port), "--topic", RUST_TOPIC],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=open(tmp / "rust-only-backend.log", "w"), text=True)
    backend.stdout.readline()  # type: ignore[union-attr]
    return backend


def rust_only_run(exe: Path, port: int, pids: Dict[str, int], args: argparse.Namespace) -> Dict[str, Any]:
    """One run of the threaded workload without Python: the library's blocking client (`dasf-loadgen calls`,
    plain threads) against the backend of `start_rust_backend`, through our broker."""
    before = (cpu_seconds(pids["broker"]), cpu_seconds(pids["backend"]))
    out = subprocess.run([str(exe), "calls", "--port", str(port), "--topic", RUST_TOPIC, "--threads",
                          str(args.threads), "--per-thread", str(args.per_thread * 2)], capture_output=True,
                         text=True, timeout=300)
    after = (cpu_seconds(pids["broker"]), cpu_seconds(pids["backend"]))
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip()[-500:])
    res = json.loads(out.stdout.strip().splitlines()[-1])
    # the broker and backend figures include the client's warm-up (a tenth of the calls): counted in
    warm = res["calls"] + args.threads * (args.per_thread * 2 // 10 + 1)
    cpu = {"client": res["client_cpu_us"], "broker": (after[0] - before[0]) / warm * 1e6,
           "backend": (after[1] - before[1]) / warm * 1e6}
    return {"rate": res["rate"], "cpu": cpu}


# --------------------------------------------------------------------------------------------------- systems
def run_client(system: str, target: str, pids: Dict[str, int], args: argparse.Namespace, phases: str,
               log: Path, repeat: Optional[int] = None) -> Dict[str, Any]:
    cmd = [sys.executable, str(HERE / "bench_clients.py"), system, "--target", target, "--phases", phases,
           "--calls", str(args.calls), "--threads", str(args.threads), "--per-thread", str(args.per_thread),
           "--async-calls", str(args.async_calls), "--in-flight", str(args.in_flight),
           "--repeat", str(args.repeat if repeat is None else repeat)]
    cmd += [f"--pid={name}={pid}" for name, pid in pids.items()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(HERE))
    with log.open("a") as f:
        f.write(out.stdout + out.stderr)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("BENCH-RESULT "):
            return json.loads(line[len("BENCH-RESULT "):])
    raise RuntimeError(f"{system} client failed (exit {out.returncode}), see {log}:\n{out.stderr[-2000:]}")


def wait_backend(port: int, topic: str, limit: float = 60) -> None:
    """Every DASF backend answers ping: probe with our client, then close the probe's connections."""
    from demessaging_rs import BackendModule

    def hello_world(name: str) -> str:
        return ""

    probe = BackendModule.create_model(members=[hello_world],
                                       messaging_config={"host": "127.0.0.1", "port": str(port), "topic": topic})
    producer = probe.backend_config.messaging_config.producer
    deadline = time.monotonic() + limit
    try:
        while not producer.ping(timeout=0.5):
            if time.monotonic() > deadline:
                raise SystemExit(f"backend {topic} did not come up")
    finally:
        producer.disconnect()


def start_dasf_backend(system: str, backend: Path, port: int, tmp: Path, procs: List[subprocess.Popen]) -> str:
    """A hello_world backend of `system` on topic bench-{system} (its process added to `procs` at once, to be
    stopped whatever happens), answering when this returns; its client target."""
    topic = f"bench-{system}"
    conn = ["-H", "127.0.0.1", "-p", str(port), "-t", topic, "--log-level", "30"]
    procs.append(start([sys.executable, str(backend), *conn, "listen"], tmp / f"{system}-backend.log"))
    wait_backend(port, topic)
    note(f"{system}: backend up")
    return f"127.0.0.1:{port}/{topic}"


def run_dasf_systems(port: int, broker_pid: int, loadgen: Optional[Path], args: argparse.Namespace, tmp: Path,
                     notes: List[str]) -> Dict[str, Dict[str, Any]]:
    """The reference, ours and the Rust-only path through one broker, every backend up throughout. The threaded
    runs alternate between the systems (ref, ours, Rust-only, ref, ...): a slow spell of the shared machine
    then hits all of them rather than one system's runs."""
    ref_backend = tmp / "ref_hello.py"
    ref_backend.write_text((HERE / "hello.py").read_text().replace("demessaging_rs", "demessaging"))
    procs: List[subprocess.Popen] = []
    try:
        targets, pids = {}, {}
        for system, name, backend in (("ref", REF, ref_backend), ("ours", OURS, HERE / "hello.py")):
            targets[name] = start_dasf_backend(system, backend, port, tmp, procs)
            pids[name] = {"broker": broker_pid, "backend": procs[-1].pid}
        if loadgen:
            procs.append(start_rust_backend(loadgen, port, tmp))
            pids[RUST_ONLY] = {"broker": broker_pid, "backend": procs[-1].pid}
        logs = {REF: tmp / "ref-client.log", OURS: tmp / "ours-client.log"}
        for log in logs.values():
            log.write_text("")
        rows: Dict[str, Dict[str, Any]] = {}
        for name, system in ((REF, "ref"), (OURS, "ours")):
            note(f"{system}: sequential calls")
            rows[name] = run_client(system, targets[name], pids[name], args, "seq", logs[name])
        runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in pids}
        for i in range(args.repeat):
            note(f"threaded runs, round {i + 1} of {args.repeat}")
            for name, system in ((REF, "ref"), (OURS, "ours")):
                runs[name].append(run_client(system, targets[name], pids[name], args, "threads", logs[name],
                                             repeat=1)["threads"])
            if loadgen and RUST_ONLY in runs:
                try:
                    runs[RUST_ONLY].append(rust_only_run(loadgen, port, pids[RUST_ONLY], args))
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                    notes.append(f"Rust-only row failed: {e}")
                    del runs[RUST_ONLY]
        for name, rs in runs.items():
            if rs:
                rows.setdefault(name, {})["threads"] = median_run(rs)
        rows[REF]["threads_runs"] = runs[REF]
        rows[OURS]["threads_runs"] = runs[OURS]
        note("ours: asyncio calls in flight" + (", then the echoes" if args.echo else ""))
        rows[OURS].update(run_client("ours", targets[OURS], pids[OURS], args,
                                     "async,echo" if args.echo else "async", logs[OURS]))
        if args.echo:
            note("ref: the echoes")
            rows[REF].update(run_client("ref", targets[REF], pids[REF], args, "echo", logs[REF]))
        return rows
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
        stop(procs)


def find_nats_server(install: bool) -> Tuple[Optional[str], str]:
    """The nats-server binary, apt-installing the Debian package if allowed; else (None, why)."""
    def lookup() -> Optional[str]:
        exe = os.environ.get("NATS_SERVER") or shutil.which("nats-server")
        if exe and os.access(exe, os.X_OK):
            return exe
        for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"):
            if os.access(p, os.X_OK):
                return p
        return None

    exe = lookup()
    if exe or not install:
        return exe, "" if exe else "nats-server is not installed (and --no-nats-install was given)"
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return None, "nats-server is not installed, and apt-get is not available to this (non-root?) user"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    note("nats-server missing: apt-get install -y nats-server")
    for cmd in (["apt-get", "install", "-y", "-q", "nats-server"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "nats-server"]):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        except subprocess.TimeoutExpired:
            continue
        if cmd[1] == "install" and r.returncode == 0 and lookup():
            return lookup(), ""
    return None, "nats-server is not installed and `apt-get install -y nats-server` failed"


def run_nats_phase(args: argparse.Namespace, tmp: Path) -> Tuple[Optional[Dict[str, Any]], str]:
    """(results, label) or (None, why skipped)."""
    if importlib.util.find_spec("nats") is None:
        return None, "NATS row skipped: nats-py is not installed (`pip install nats-py`; nox -s bench does)"
    exe, why = find_nats_server(args.nats_install)
    if not exe:
        return None, f"NATS row skipped: {why}"
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip().split()[-1]
    from importlib.metadata import version as dist_version

    label = f"NATS {version.lstrip('v')} (nats-server) + nats-py {dist_version('nats-py')}"
    port = free_port()
    server = start([exe, "-a", "127.0.0.1", "-p", str(port)], tmp / "nats-server.log")
    procs = [server]  # stopped in this order, from the end: the responder drains before the server goes
    try:
        wait_port(port)
        url = f"nats://127.0.0.1:{port}"
        responder = start([sys.executable, str(HERE / "nats_hello.py"), "--url", url, "--subject", "bench.hello"],
                          tmp / "nats-responder.log", stdout=subprocess.PIPE, text=True)
        procs.append(responder)
        line = responder.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "ready":
            raise RuntimeError(f"nats responder did not start: {line!r}")
        note("nats: server and responder up, running the client")
        log = tmp / "nats-client.log"
        log.write_text("")
        res = run_client("nats", f"{url}/bench.hello", {"broker": server.pid, "backend": responder.pid}, args,
                         "seq,threads,async", log)
        return res, label
    finally:
        for p in reversed(procs):
            stop([p])


# ------------------------------------------------------------------------------------------------- reporting
def ms(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.3f} ms"


def rate(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:,.0f}"


def cpu_cell(cpu: Optional[Dict[str, float]]) -> str:
    if not cpu:
        return "—"
    return " / ".join(f"{cpu[k]:.0f}" for k in ("client", "broker", "backend")) + f" (Σ {cpu_total(cpu):.0f})"


def cpu_total(cpu: Dict[str, float]) -> float:
    return sum(cpu[k] for k in ("client", "broker", "backend"))


def get(row: Dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(row, dict) or p not in row:
            return None
        row = row[p]
    return row


def ratio_row(title: str, ours: Dict[str, Any], other: Dict[str, Any], floor: Optional[float]) -> str:
    def faster(a: Optional[float], b: Optional[float]) -> str:  # lower is better: other / ours
        if not (a and b):
            return "—"
        return f"**{a / b:.2f}× faster**" if a >= b else f"**{b / a:.2f}× slower**"

    def more(a: Optional[float], b: Optional[float]) -> str:  # higher is better: ours / other
        return f"**{a / b:.2f}×**" if a and b else "—"

    def cheaper(o: Optional[Dict[str, float]], x: Optional[Dict[str, float]]) -> str:
        if not (o and x):
            return "—"
        a, b = cpu_total(x), cpu_total(o)
        return f"**{a / b:.2f}× less CPU**" if a >= b else f"**{b / a:.2f}× more CPU**"

    return (f"| {title} | {faster(get(other, 'seq', 'p50'), get(ours, 'seq', 'p50'))} | "
            f"{faster(get(other, 'seq', 'p99'), get(ours, 'seq', 'p99'))} | "
            f"{more(get(ours, 'seq', 'rate'), get(other, 'seq', 'rate'))} | | "
            f"{more(get(ours, 'threads', 'rate'), get(other, 'threads', 'rate'))} | "
            f"{more(get(ours, 'async', 'rate'), get(other, 'async', 'rate'))} | "
            f"{cheaper(get(ours, 'threads', 'cpu'), get(other, 'threads', 'cpu'))} | "
            f"{cheaper(get(ours, 'async', 'cpu'), get(other, 'async', 'cpu'))} |")


def render(rows: Dict[str, Dict[str, Any]], floor: Optional[Dict[str, Any]], broker_rt: Optional[Dict[str, Any]],
           notes: List[str], args: argparse.Namespace, broker_desc: str) -> str:
    fl = floor["p50_ms"] if floor else None
    lines = [
        f"Run on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, loopback, one run; every broker, backend and "
        f"client in a process of its own. Workload `hello_world(name)` → `\"Hello, \" + name`: sequential "
        f"×{args.calls}; {args.threads} threads × {args.per_thread} (NATS: each thread with its own asyncio loop "
        f"and connection); {args.in_flight} calls kept in flight on one asyncio loop, {args.async_calls} "
        f"calls (ours: {get(rows.get(OURS, {}), 'async_api') or '—'}; the reference has no asyncio API); "
        f"the threaded and in-flight figures are the median of {args.repeat} runs of each system; the threaded "
        "runs of the reference, ours and the Rust-only path alternate, all three backends up throughout. "
        f"demessaging validates request and reply with pydantic on both ends; the NATS responder "
        f"(bench/nats_hello.py) is plain JSON. Broker: {broker_desc}. CPU µs per call from /proc/<pid>/stat "
        "(utime+stime) of client / broker / backend around the measured phase (start-up and warm-up excluded); "
        "for NATS the broker is nats-server and the backend the nats-py responder.",
        "",
        f"| system | seq p50 | seq p99 | seq calls/s | seq p50 ÷ relay floor | {args.threads} threads calls/s | "
        f"{args.in_flight} in flight (asyncio) calls/s | CPU µs/call, {args.threads} threads: client / broker / "
        f"backend | CPU µs/call, {args.in_flight} in flight: client / broker / backend |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    if floor:
        runs = ", ".join(f"{ms(r['p50_ms'])}" for r in floor["runs"])
        lines.append(f"| transport floor: 4 websocket hops through a bare Rust relay (dasf-loadgen, no Python; "
                     f"p50 of the runs before and after the calls: {runs}, the lower counts) | "
                     f"{ms(fl)} | {ms(floor['p99_ms'])} | — | 1.00× | — | — | — | — |")
    if broker_rt:
        x = f"{broker_rt['p50_ms'] / fl:.2f}×" if fl else "—"
        lines.append(f"| the same 4 hops through our broker (dasf-loadgen, no Python) | {ms(broker_rt['p50_ms'])} | "
                     f"{ms(broker_rt['p99_ms'])} | — | {x} | — | — | — | — |")
    for name, row in rows.items():
        p50 = get(row, "seq", "p50")
        x = f"{p50 / fl:.1f}×" if fl and p50 else "—"
        lines.append(f"| {name} | {ms(p50)} | {ms(get(row, 'seq', 'p99'))} | {rate(get(row, 'seq', 'rate'))} | {x} | "
                     f"{rate(get(row, 'threads', 'rate'))} | {rate(get(row, 'async', 'rate'))} | "
                     f"{cpu_cell(get(row, 'threads', 'cpu'))} | {cpu_cell(get(row, 'async', 'cpu'))} |")
    ours = rows.get(OURS)
    for name, row in rows.items():
        if ours and name not in (OURS, RUST_ONLY):
            short = "reference" if name == REF else "NATS"
            lines.append(ratio_row(f"**ours vs {short}**", ours, row, fl))
    paired = [o["rate"] / r["rate"] for r, o in zip(get(rows.get(REF, {}), "threads_runs") or [],
                                                     get(ours or {}, "threads_runs") or [])]
    if len(paired) > 1:
        notes = [f"{args.threads} threads, ours ÷ the reference in each of the {len(paired)} alternating rounds: "
                 + ", ".join(f"{x:.1f}×" for x in paired) + ".", *notes]
    bare, ref_rate = get(rows.get(RUST_ONLY, {}), "threads", "rate"), get(rows.get(REF, {}), "threads", "rate")
    if bare and ref_rate:
        ours_rate = get(ours or {}, "threads", "rate")
        share = f"; with Python (pydantic, the GIL, PyO3) {ours_rate / bare:.0%} of it" if ours_rate else ""
        notes = [f"{args.threads} threads without Python: {bare:,.0f} calls/s, {bare / ref_rate:.1f}× the "
                 f"reference{share}.", *notes]
    lines += ["", *notes] if notes else []
    if ours and REF in rows and args.echo:
        ref = rows[REF]
        lines += ["", "Large payloads (`echo(data)` through our broker: one call each; 20 MB and 100 MB the median of three):", "",
                  "| client + backend | " + " | ".join(ECHO_COLS) + " |", "|---|" + "---|" * len(ECHO_COLS)]
        for name, row in ((REF, ref), (OURS, ours)):
            lines.append(f"| {name} | " + " | ".join(str(row.get(c, "—")) for c in ECHO_COLS) + " |")
    if args.png:
        lines += ["", f"![hello_world calls: latency, throughput and CPU per call]({PNG.relative_to(ROOT)})"]
    return "\n".join(lines)


def plot(rows: Dict[str, Dict[str, Any]], floor: Optional[Dict[str, Any]], args: argparse.Namespace) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        note("matplotlib is not installed: no PNG (`pip install matplotlib`; nox -s bench does)")
        return False
    names = list(rows)
    short = {REF: "demessaging\n0.6.4", OURS: "demessaging-rs"}
    labels = [short.get(n, n.replace(" (nats-server)", "").replace(" + ", "\n+ ")) for n in names]
    colors = {REF: "#9e9e9e", OURS: "#d84315"}
    col = [colors.get(n, "#1565c0") for n in names]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))

    def bars(ax: Any, values: List[Optional[float]], title: str, fmt: str) -> None:
        xs = range(len(values))
        ax.bar(xs, [v or 0 for v in values], color=col)
        for x, v in zip(xs, values):
            ax.annotate("n/a" if v is None else format(v, fmt), (x, v or 0), ha="center", va="bottom", fontsize=9)
        ax.set_xticks(list(xs), labels, fontsize=9)
        ax.set_title(title, fontsize=11)
        ax.margins(y=0.15)

    bars(axes[0][0], [get(rows[n], "seq", "p50") for n in names], "sequential p50 (ms, lower is better)", ".3f")
    if floor:
        axes[0][0].axhline(floor["p50_ms"], color="k", ls="--", lw=1)
        axes[0][0].annotate(f"4-hop relay floor {floor['p50_ms']:.3f} ms", (len(names) - 0.6, floor["p50_ms"]),
                            ha="right", va="bottom", fontsize=8)
    bars(axes[0][1], [get(rows[n], "threads", "rate") for n in names], f"{args.threads} threads, calls/s", ",.0f")
    bars(axes[1][0], [get(rows[n], "async", "rate") for n in names],
         f"{args.in_flight} asyncio calls in flight, calls/s", ",.0f")

    ax = axes[1][1]
    parts = [("client", "#ffb74d"), ("broker", "#64b5f6"), ("backend", "#81c784")]
    width = 0.38
    for i, n in enumerate(names):
        for j, (phase, tag) in enumerate((("threads", f"{args.threads} thr"), ("async", f"{args.in_flight} aio"))):
            cpu = get(rows[n], phase, "cpu")
            x = i + (j - 0.5) * width
            if not cpu:
                ax.annotate(f"n/a\n{tag}", (x, 0), ha="center", va="bottom", fontsize=7)
                continue
            bottom = 0.0
            for k, c in parts:
                ax.bar(x, cpu[k], width * 0.92, bottom=bottom, color=c, label=k if (i, j) == (0, 0) else None)
                bottom += cpu[k]
            ax.annotate(f"{bottom:.0f}\n{tag}", (x, bottom), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)), labels, fontsize=9)
    ax.set_title("CPU µs per call: client + broker + backend (lower is better)", fontsize=11)
    ax.legend(fontsize=8)
    ax.margins(y=0.2)
    fig.suptitle(f"hello_world, one run on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, loopback", fontsize=12)
    fig.tight_layout()
    PNG.parent.mkdir(exist_ok=True)
    fig.savefig(PNG, dpi=90)
    note(f"wrote {PNG.relative_to(ROOT)}")
    return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000, help="sequential calls per system")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--per-thread", type=int, default=1000, help="calls per thread in the threaded phase")
    ap.add_argument("--async-calls", type=int, default=20000, help="calls in the asyncio in-flight phase")
    ap.add_argument("--in-flight", type=int, default=1000, help="asyncio calls kept outstanding")
    ap.add_argument("--floor-messages", type=int, default=2000, help="round trips for the relay floor")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of the threaded and in-flight phases per system; the median run is reported")
    ap.add_argument("--out", type=Path, default=HERE / "results.md")
    ap.add_argument("--native-broker", action="store_true", help="use target/release/demessaging-broker")
    ap.add_argument("--no-nats", dest="nats", action="store_false")
    ap.add_argument("--no-nats-install", dest="nats_install", action="store_false",
                    help="do not apt-get install nats-server when it is missing")
    ap.add_argument("--no-echo", dest="echo", action="store_false")
    ap.add_argument("--no-readme", dest="readme", action="store_false", help="leave README.md and the PNG alone")
    args = ap.parse_args()
    args.png = False

    import demessaging_rs

    if demessaging_rs.build_profile != "release":
        raise SystemExit("refusing to benchmark a debug build: pip install . (maturin builds release)")
    if importlib.util.find_spec("demessaging") is None:
        raise SystemExit("the reference is missing: pip install demessaging==0.6.4 (nox -s bench does)")
    tmp = HERE / "results"
    tmp.mkdir(exist_ok=True)
    notes: List[str] = []

    # 1. the transport floor (nothing else running)
    note("building dasf-loadgen (cargo build --release --bin dasf-loadgen)")
    loadgen = build_loadgen()
    floors: List[Dict[str, Any]] = []
    if loadgen:
        time.sleep(1)  # let the machine settle after the build
        floors.append(relay_floor(loadgen, args.floor_messages))
        note(f"relay floor: 4-hop p50 {floors[-1]['p50_ms']:.3f} ms")
    else:
        notes.append("Relay floor skipped: target/release/dasf-loadgen could not be built (no cargo?).")

    # 2. reference and ours, through the same embedded broker
    port = free_port()
    if args.native_broker:
        broker_cmd = [str(BIN / "demessaging-broker"), "--port", str(port)]
        broker_desc = "our embedded broker as the native binary target/release/demessaging-broker"
    else:
        extra = os.environ.get("BENCH_BROKER_ARGS", "").split()
        broker_cmd = [sys.executable, "-m", "demessaging_rs", "broker", "-p", str(port), *extra]
        broker_desc = f"our embedded broker (`python -m demessaging_rs broker{''.join(' ' + e for e in extra)}`)"
    rows: Dict[str, Dict[str, Any]] = {}
    broker_rt = None
    broker = start(broker_cmd, tmp / "broker.log")
    try:
        wait_port(port)
        if loadgen:
            broker_rt = roundtrip(loadgen, f"ws://127.0.0.1:{port}/ws", args.floor_messages, "bench-broker")
        rows = run_dasf_systems(port, broker.pid, loadgen, args, tmp, notes)
    finally:
        stop([broker])

    # 3. NATS
    if args.nats:
        res, label = run_nats_phase(args, tmp)
        if res is None:
            note(label)
            notes.append(label + ".")
        else:
            rows[label] = res
    else:
        notes.append("NATS row skipped (--no-nats).")

    # 4. the floor once more: a busy moment of a shared machine must not set it
    floor = None
    if loadgen:
        floors.append(relay_floor(loadgen, args.floor_messages))
        note(f"relay floor again: 4-hop p50 {floors[-1]['p50_ms']:.3f} ms")
        floor = {**min(floors, key=lambda r: r["p50_ms"]), "runs": floors}

    if args.readme:
        args.png = plot({k: v for k, v in rows.items() if k != RUST_ONLY}, floor, args)
    table = render(rows, floor, broker_rt, notes, args, broker_desc)
    print()
    print(table)
    note("done")
    args.out.write_text(table + "\n")
    (tmp / "calls.json").write_text(json.dumps({"floor": floor, "broker_rt": broker_rt, "rows": rows}, indent=1))
    if args.readme:
        update_readme("calls", table)


def update_readme(name: str, table: str) -> None:
    """Replace the text between the README's `<!-- bench:NAME -->` markers with `table`."""
    readme = HERE.parent / "README.md"
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = readme.read_text()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{begin}\n{table}\n{end}{tail}")


if __name__ == "__main__":
    main()
