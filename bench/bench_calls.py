"""Side-by-side call benchmark: demessaging-rs vs the reference demessaging 0.6.4, same broker, same run.

Starts the embedded broker (its own process), one backend per implementation (own processes), and
calls each from this process with its own client: sequential latency, 8-thread throughput, and echo of
large payloads. Prints a Markdown table with ratios and writes it to bench/results.md.

    python bench/bench_calls.py [--calls 2000] [--threads 8] [--native-broker]

BENCH_BROKER_ARGS (e.g. "--threads 2") is appended to the `demessaging-rs broker` command line.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List

HERE = Path(__file__).resolve().parent


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
    raise SystemExit(f"broker did not start on port {port}")


def start(cmd: List[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=str(HERE))


def stop(procs: List[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def hello_world(name: str) -> str:
    return ""


def echo(data: str) -> str:
    return data


def percentile(values: List[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def sequential(call: Callable[[], Any], n: int) -> Dict[str, float]:
    times = []
    t_start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_start
    return {"p50": percentile(times, 0.5) * 1e3, "p99": percentile(times, 0.99) * 1e3, "rate": n / total}


def threaded(call: Callable[[], Any], threads: int, per_thread: int) -> float:
    errors: List[BaseException] = []

    def work() -> None:
        try:
            for _ in range(per_thread):
                call()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=300)
    total = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return threads * per_thread / total


def timed_echo(call: Callable[[str], Any], size: int, timeout: float) -> str:
    """Time one echo of `size` bytes; runs in a thread so a client that never answers cannot hang us."""
    result: Dict[str, Any] = {}
    data = "z" * size

    def work() -> None:
        t0 = time.perf_counter()
        try:
            out = call(data)
            result["ok"] = out == data
            result["t"] = time.perf_counter() - t0
        except BaseException as e:  # noqa: BLE001
            result["err"] = f"{type(e).__name__}: " + " ".join(str(e).split())[:70]

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return f"FAIL: no answer within {timeout:.0f} s"
    if "err" in result:
        return "FAIL: " + result["err"]
    if not result.get("ok"):
        return "FAIL: wrong result"
    return f"{result['t']:.3f} s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--per-thread", type=int, default=250)
    ap.add_argument("--out", type=Path, default=HERE / "results.md")
    ap.add_argument("--native-broker", action="store_true", help="use target/release/demessaging-broker")
    args = ap.parse_args()

    import demessaging_rs

    if demessaging_rs.build_profile != "release":
        raise SystemExit("refusing to benchmark a debug build: pip install . (maturin builds release)")
    warnings.simplefilter("ignore")
    from demessaging import BackendModule as RefModule

    from demessaging_rs import BackendModule as OurModule

    tmp = HERE / "results"
    tmp.mkdir(exist_ok=True)
    ref_backend = tmp / "ref_hello.py"
    ref_backend.write_text((HERE / "hello.py").read_text().replace("demessaging_rs", "demessaging"))

    port = free_port()
    native = HERE.parent / "target" / "release" / "demessaging-broker"
    if args.native_broker:
        broker_cmd = [str(native), "--port", str(port)]
    else:
        extra = os.environ.get("BENCH_BROKER_ARGS", "").split()
        broker_cmd = [sys.executable, "-m", "demessaging_rs", "broker", "-p", str(port), *extra]
    procs = [start(broker_cmd, tmp / "broker.log")]
    try:
        wait_port(port)
        conn = ["-H", "127.0.0.1", "-p", str(port)]
        procs.append(start([sys.executable, str(HERE / "hello.py"), *conn, "-t", "bench-ours", "--log-level", "30", "listen"], tmp / "ours.log"))
        procs.append(start([sys.executable, str(ref_backend), *conn, "-t", "bench-ref", "--log-level", "30", "listen"], tmp / "ref.log"))

        mc = {"host": "127.0.0.1", "port": str(port)}
        ours = OurModule.create_model(members=[hello_world, echo], messaging_config={**mc, "topic": "bench-ours"},
                                      log_config={"level": 30})
        ref = RefModule.create_model(members=[hello_world, echo], messaging_config={**mc, "topic": "bench-ref"},
                                     log_config={"level": 30})
        # readiness: our client pings both backends (every DASF backend answers ping)
        for topic in ("bench-ours", "bench-ref"):
            probe = OurModule.create_model(members=[hello_world], messaging_config={**mc, "topic": topic})
            deadline = time.monotonic() + 60
            while not probe.backend_config.messaging_config.producer.ping(timeout=0.5):
                if time.monotonic() > deadline:
                    raise SystemExit(f"backend {topic} did not come up")

        req = {"func_name": "hello_world", "name": "bench"}
        call_ours = lambda: ours.send_request(req)  # noqa: E731
        call_ref = lambda: ref.send_request(req)  # noqa: E731
        for c in (call_ours, call_ref):  # warm-up (connections, caches)
            for _ in range(50):
                c()

        rows: Dict[str, Dict[str, Any]] = {}
        for name, c in (("demessaging 0.6.4 (reference)", call_ref), ("demessaging-rs", call_ours)):
            seq = sequential(c, args.calls)
            thr = threaded(c, args.threads, args.per_thread)
            rows[name] = {**seq, "threaded": thr}
        echo_ours = lambda d: ours.send_request({"func_name": "echo", "data": d}).root  # noqa: E731
        echo_ref = lambda d: ref.send_request({"func_name": "echo", "data": d}).root  # noqa: E731
        for size, label in ((100_000, "echo 100 KB"), (400_000, "echo 400 KB"), (1_000_000, "echo 1 MB"), (2_000_000, "echo 2 MB")):
            rows["demessaging-rs"][label] = timed_echo(echo_ours, size, 60)
            rows["demessaging 0.6.4 (reference)"][label] = timed_echo(echo_ref, size, 20)
    finally:
        stop(procs[1:])
        stop(procs[:1])

    r, o = rows["demessaging 0.6.4 (reference)"], rows["demessaging-rs"]
    echo_cols = ["echo 100 KB", "echo 400 KB", "echo 1 MB", "echo 2 MB"]
    lines = [
        f"Run on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, loopback, both through the embedded broker "
        f"(own process); backends in own processes; hello_world({{name}}) sequential x{args.calls}, "
        f"{args.threads} threads x{args.per_thread}.",
        "",
        "| client + backend | seq p50 | seq p99 | seq calls/s | " + f"{args.threads} threads calls/s | " + " | ".join(echo_cols) + " |",
        "|---|---|---|---|---|" + "---|" * len(echo_cols),
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['p50']:.3f} ms | {row['p99']:.3f} ms | {row['rate']:.0f} | {row['threaded']:.0f} | "
            + " | ".join(row[c] for c in echo_cols) + " |"
        )
    lines.append(
        f"| **ratio (ours / reference)** | **{r['p50'] / o['p50']:.1f}× faster** | **{r['p99'] / o['p99']:.1f}× faster** | "
        f"**{o['rate'] / r['rate']:.1f}×** | **{o['threaded'] / r['threaded']:.1f}×** | " + " | ".join("" for _ in echo_cols) + " |"
    )
    table = "\n".join(lines)
    print(table)
    args.out.write_text(table + "\n")
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
