"""Scale-out: 1, 2 and 4 replicas of one backend on one topic (Shared subscription), through the embedded broker.

A broker (`python -m demessaging_rs broker`) and REPLICAS backend processes (bench/replica.py, started with
`--subscription-type Shared` and nothing else, so they derive one subscription name) run as processes of their
own. This process keeps IN_FLIGHT calls outstanding through the public asyncio API (`Model.asend_request`) for
DURATION seconds per row and checks every answer. Two workloads:

* `burn`: pure-Python work of about 2 ms that holds the GIL throughout: one process can use one core at most,
  so replicas are how such a backend uses more cores;
* `hello_world`: next to no work, so the transport (client, broker) is what limits, not the backend.

Prints, and writes to bench/results-replicas.md (and the README's replica table; not with --out), calls/s per
row with its speed-up over one replica, and the CPU seconds each replica used (the split of the work).

    python bench/bench_replicas.py [--replicas 1 2 4] [--duration 5] [--in-flight 32] [--rounds 40000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_calls import stop, update_readme  # noqa: E402
from bench_clients import cpu_seconds  # noqa: E402
from soak import free_port, start  # noqa: E402


def model(port: int) -> Any:
    import replica

    from demessaging_rs import BackendModule
    from demessaging_rs.config import ModuleConfig

    cfg = ModuleConfig(messaging_config=dict(topic="bench-replicas", host="127.0.0.1", port=port))
    return BackendModule.create_model("replica", members=[replica.burn, replica.hello_world], config=cfg)


async def load(Model: Any, request: Dict[str, Any], expected: object, args: argparse.Namespace) -> Dict[str, float]:
    """IN_FLIGHT callers for DURATION seconds; every answer is checked."""
    counts = {"calls": 0, "wrong": 0, "failed": 0}
    end = time.monotonic() + args.duration

    async def caller() -> None:
        while time.monotonic() < end:
            try:
                got = (await Model.asend_request(request, timeout=60)).root
            except Exception:  # a timeout or a lost connection: counted, and it fails the run
                counts["failed"] += 1
                continue
            counts["calls"] += 1
            counts["wrong"] += got != expected

    t0 = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(args.in_flight)))
    return {**counts, "elapsed": time.monotonic() - t0}


def run_row(port: int, n: int, args: argparse.Namespace, tmp: Path) -> Dict[str, Any]:
    replicas = [start([sys.executable, str(HERE / "replica.py"), "-H", "127.0.0.1", "-p", str(port),
                       "--subscription-type", "Shared", "listen"], tmp / f"replica-{n}-{i}.log", "listening on topic")
                for i in range(n)]
    try:
        Model = model(port)
        burn = {"func_name": "burn", "rounds": args.rounds}
        from replica import burn as local_burn

        row: Dict[str, Any] = {"replicas": n}
        for name, request, expected in (("burn", burn, local_burn(args.rounds)),
                                        ("hello", {"func_name": "hello_world", "name": "x"}, "Hello, x")):
            asyncio.run(load(Model, request, expected, argparse.Namespace(**{**vars(args), "duration": 0.5})))
            before = [cpu_seconds(p.pid) for p in replicas]
            r = asyncio.run(load(Model, request, expected, args))
            row[name] = r
            row[f"{name}_cpu"] = [cpu_seconds(p.pid) - b for p, b in zip(replicas, before)]
        return row
    finally:
        stop(replicas)


def report(rows: List[Dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{os.cpu_count()} cores; {args.in_flight} calls in flight through the asyncio API, {args.duration:g} s per "
        f"row; `burn` = {args.rounds:,} rounds of pure Python (GIL held); CPU s = each replica's CPU time in the "
        "row.",
        "",
        "| replicas | `burn` calls/s | speed-up | CPU s per replica | `hello_world` calls/s | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    base = {k: rows[0][k]["calls"] / rows[0][k]["elapsed"] for k in ("burn", "hello")}
    for row in rows:
        rate = {k: row[k]["calls"] / row[k]["elapsed"] for k in ("burn", "hello")}
        split = " / ".join(f"{c:.1f}" for c in row["burn_cpu"])
        lines.append(f"| {row['replicas']} | {rate['burn']:,.0f} | {rate['burn'] / base['burn']:.2f}× | {split} "
                     f"| {rate['hello']:,.0f} | {rate['hello'] / base['hello']:.2f}× |")
    bad = sum(row[k]["wrong"] + row[k]["failed"] for row in rows for k in ("burn", "hello"))
    lines += ["", f"Wrong or failed answers: {bad}."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of load per row and workload (default 5)")
    ap.add_argument("--in-flight", type=int, default=32, help="calls outstanding at any time (default 32)")
    ap.add_argument("--rounds", type=int, default=40_000, help="work per `burn` call (default 40,000)")
    ap.add_argument("--out", type=Path, default=HERE / "results-replicas.md")
    args = ap.parse_args()
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    port = free_port()
    broker = start([sys.executable, "-m", "demessaging_rs", "broker", "--port", str(port)],
                   tmp / "replicas-broker.log", "listening")
    try:
        rows = [run_row(port, n, args, tmp) for n in args.replicas]
    finally:
        stop([broker])
    text = report(rows, args)
    print(text)
    args.out.write_text(text + "\n")
    if args.out == HERE / "results-replicas.md":  # a run written elsewhere leaves the README alone
        update_readme("replicas", text)
    return 1 if any(row[k]["wrong"] or row[k]["failed"] for row in rows for k in ("burn", "hello")) else 0


if __name__ == "__main__":
    sys.exit(main())
