"""Soak: full load for a while through real processes, watching memory, losses and latency over time.

A broker (`python -m demessaging_rs broker`) and a backend (bench/hello.py) run as processes of their own;
this process opens CLIENTS client connections (each one its own producer and reply consumer, so twice as many
websockets at the broker) and keeps one call in flight on every one of them, on one asyncio loop, for DURATION
seconds. Every reply is checked against its request (`hello_world(name)` → `"Hello, " + name`, the name unique
per call). Prints, and writes to bench/results-soak.md (and the README's soak table; not with --out):

* RSS of broker, backend and client at the start of the load and at its end (the client's also without the
  latency samples this script keeps in its own process),
* calls made, lost (an error or a timeout) and mismatched (a reply that is not the one asked for) — both must be 0,
* calls/s and p50/p99 latency per interval.

    python bench/soak.py [--duration 60] [--clients 1000] [--interval 5] [--timeout 30]
"""

from __future__ import annotations

import argparse
import asyncio
from array import array
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_calls import update_readme  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(cmd: List[str], log: Path, ready: str, limit: float = 60) -> subprocess.Popen:
    out = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=str(HERE))
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if ready in log.read_text():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{cmd[1]} did not start:\n{log.read_text()}")


def percentile(values: List[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def load(port: int, args: argparse.Namespace, pids: Dict[str, int]) -> Dict[str, object]:
    from demessaging_rs._core import Client

    spec = {"host": "127.0.0.1", "port": port}
    clients = [Client("soak", spec) for _ in range(args.clients)]
    # connect all and wait until the backend answers on each (pings, so no request is lost to start-up)
    for c in clients:
        while True:
            try:
                await c.call_async("ping", b"", 1.0, "ping", False)
                break
            except Exception:
                await asyncio.sleep(0.05)
    # (finished at, latency) as flat arrays: a list of tuples would grow the client's RSS by ~100 bytes a call
    done_at, latency = array("d"), array("d")
    counts = {"calls": 0, "lost": 0, "mismatched": 0}
    errors: Dict[str, int] = {}
    rss_start = {name: rss_mb(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    end = t0 + args.duration

    async def worker(i: int, c: "Client") -> None:
        n = 0
        while time.monotonic() < end:
            n += 1
            name = f"{i}-{n}"
            body = json.dumps({"func_name": "hello_world", "name": name}).encode()
            started = time.monotonic()
            try:
                status, payload, _ = await c.call_async("request", body, args.timeout, "hello_world", False)
            except Exception as e:  # a lost call: timeout or connection error
                counts["lost"] += 1
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                continue
            finished = time.monotonic()
            counts["calls"] += 1
            if status != "success" or json.loads(payload) != "Hello, " + name:
                counts["mismatched"] += 1
            done_at.append(finished - t0)
            latency.append(finished - started)

    await asyncio.gather(*(worker(i, c) for i, c in enumerate(clients)))
    elapsed = time.monotonic() - t0
    rss_end = {name: rss_mb(pid) for name, pid in pids.items()}
    # the samples above live in this (the client's) process: reported apart from the library's memory
    samples_mb = (sys.getsizeof(done_at) + sys.getsizeof(latency)) / 2**20
    for c in clients:
        c.close()
    # rows over the load's duration; calls still finishing after it count in the last row
    intervals = []
    rows = max(1, int(-(-args.duration // args.interval)))
    for k in range(rows):
        lo, hi = k * args.interval, min((k + 1) * args.interval, args.duration)
        last = k == rows - 1
        lat = [lt for at, lt in zip(done_at, latency) if lo <= at and (at < hi or last)]
        span = (elapsed if last else hi) - lo
        intervals.append((lo, hi, len(lat) / span if span > 0 else 0.0,
                          percentile(lat, 0.5) * 1e3, percentile(lat, 0.99) * 1e3))
    return {"elapsed": elapsed, "rss_start": rss_start, "rss_end": rss_end, "counts": counts, "errors": errors,
            "intervals": intervals, "samples_mb": samples_mb}


def report(r: Dict[str, object], args: argparse.Namespace) -> str:
    counts = r["counts"]  # type: ignore[index]
    lines = [
        f"Soak run on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, loopback: {args.clients} client connections "
        f"(each a producer and a reply consumer), one call in flight on each, for {args.duration:g} s; broker, "
        "backend (bench/hello.py) and client in processes of their own.",
        "",
        f"Calls {counts['calls']:,} ({counts['calls'] / r['elapsed']:,.0f}/s); "  # type: ignore[index,operator]
        f"lost {counts['lost']}; mismatched {counts['mismatched']}"  # type: ignore[index]
        + (f" (errors: {r['errors']})" if r["errors"] else ""),
        "",
        "| process | RSS at start of load | RSS at end |",
        "|---|---|---|",
    ]
    for name in r["rss_start"]:  # type: ignore[attr-defined]
        end = f"{r['rss_end'][name]:.0f} MB"  # type: ignore[index]
        if name == "client":
            own = r["samples_mb"]
            end += (f" ({r['rss_end'][name] - own:.0f} MB without the {own:.0f} MB of latency samples this "  # type: ignore[index,operator]
                    "script keeps, 16 bytes a call)")
        lines.append(f"| {name} | {r['rss_start'][name]:.0f} MB | {end} |")  # type: ignore[index]
    lines += ["", "| interval | calls/s | p50 | p99 |", "|---|---|---|---|"]
    for lo, hi, rate, p50, p99 in r["intervals"]:  # type: ignore[attr-defined]
        lines.append(f"| {lo:.0f}–{hi:.0f} s | {rate:,.0f} | {p50:.1f} ms | {p99:.1f} ms |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    ap.add_argument("--clients", type=int, default=1000, help="client connections (default 1000)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds per latency row (default 5)")
    ap.add_argument("--timeout", type=float, default=30.0, help="call timeout in seconds (default 30)")
    ap.add_argument("--out", type=Path, default=HERE / "results-soak.md")
    args = ap.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.clients + 256)), hard))
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    port = free_port()
    broker = start([sys.executable, "-m", "demessaging_rs", "broker", "--port", str(port),
                    "--max-connections", str(4 * args.clients + 100)], tmp / "soak-broker.log", "listening")
    backend = start([sys.executable, str(HERE / "hello.py"), "-H", "127.0.0.1", "-p", str(port), "-t", "soak",
                     "listen"], tmp / "soak-backend.log", "listening on topic")
    try:
        pids = {"broker": broker.pid, "backend": backend.pid, "client": os.getpid()}
        r = asyncio.run(load(port, args, pids))
    finally:
        for p in (backend, broker):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    text = report(r, args)
    print(text)
    args.out.write_text(text + "\n")
    if args.out == HERE / "results-soak.md":  # a run written elsewhere leaves the README alone
        update_readme("soak", text)
    counts = r["counts"]  # type: ignore[index]
    return 1 if counts["lost"] or counts["mismatched"] else 0  # type: ignore[index]


if __name__ == "__main__":
    sys.exit(main())
