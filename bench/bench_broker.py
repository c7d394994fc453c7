"""Broker benchmark: our broker vs a bare tokio-tungstenite relay (the transport floor) vs dasf-broker-django.

Runs the native load generator (target/release/dasf-loadgen, its own process) against each broker, same
run: 100-byte messages, 1 producer -> 1 consumer, up to 1000 unacked publishes in flight, the consumer
acking each (messages/s and lost count); a 4-hop round trip (publish on A, an echo consumer republishes
to B, wait for B) p50/p99; and the broker's RSS per 1000 idle connections. Prints a Markdown table and
rewrites the README's broker table.

    python bench/bench_broker.py [--messages 200000] [--django-messages 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = ROOT / "target" / "release"
sys.path.insert(0, str(HERE))

from bench_calls import free_port, update_readme, wait_port  # noqa: E402


def loadgen(*args: str, timeout: float = 300) -> Dict[str, Any]:
    out = subprocess.run([str(BIN / "dasf-loadgen"), *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"loadgen {args[0]} failed: {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def idle_rss(pid: int, base: str, n: int = 1000) -> Optional[float]:
    """Extra RSS (MiB) of the broker process while `n` idle consumers are connected."""
    before = rss_kb(pid)
    proc = subprocess.Popen([str(BIN / "dasf-loadgen"), "idle", "--base", base, "--connections", str(n)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            return None
        time.sleep(0.5)
        after = rss_kb(pid)
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=30)
    return (after - before) / 1024


def run_broker(name: str, base: str, messages: int, window: int, pid: Optional[int]) -> Dict[str, Any]:
    tp = loadgen("throughput", "--producer", f"{base}/bench-tp", "--consumer", f"{base}/bench-tp/s",
                 "--messages", str(messages), "--window", str(window))
    rt = loadgen("roundtrip", "--base", base, "--messages", str(min(messages, 2000)), "--tag", "bench")
    row = {"name": name, **tp, "p50": rt["p50_ms"], "p99": rt["p99_ms"], "rt_messages": rt["messages"]}
    row["rss"] = idle_rss(pid, base) if pid else None
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--django-messages", type=int, default=300)
    ap.add_argument("--no-django", action="store_true")
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--bins", "--quiet"], cwd=ROOT, check=True)
    rows = []

    port = free_port()
    broker = subprocess.Popen([str(BIN / "demessaging-broker"), "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        rows.append(run_broker("demessaging-rs broker", f"ws://127.0.0.1:{port}/ws", args.messages, 1000, broker.pid))
    finally:
        broker.terminate()
        broker.wait(timeout=15)

    relay = subprocess.Popen([str(BIN / "dasf-loadgen"), "relay", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        rport = json.loads(relay.stdout.readline())["port"]  # type: ignore[union-attr]
        rows.append(run_broker("bare tokio-tungstenite relay (floor)", f"ws://127.0.0.1:{rport}/ws", args.messages, 1000,
                               relay.pid))
    finally:
        relay.terminate()
        relay.wait(timeout=15)

    if not args.no_django:
        from dasf_django.harness import start_django_broker

        with start_django_broker(["bench-tp", "rt-a-bench", "rt-b-bench"], anonymous_can_create_topics=True) as dj:
            rows.append(run_broker("dasf-broker-django 0.0.1.dev1 (daphne, in-memory layer)", dj.url.rstrip("/"),
                                   args.django_messages, 50, None))

    ours, floor = rows[0], rows[1]
    lines = [
        f"Run on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, loopback; load generator in its own process. "
        "Throughput: 100-byte messages, 1 producer -> 1 consumer acking each, ≤ 1000 unacked publishes in flight "
        f"(dasf-broker-django: {args.django_messages} messages, ≤ 50 in flight). Round trip: 4 hops "
        "(publish on A, echo consumer republishes to B).",
        "",
        "| broker | messages | msg/s | acked ok | lost (acked ok, never delivered) | round trip p50 | p99 | RSS per 1000 idle connections |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rss = f"{r['rss']:.1f} MiB" if r.get("rss") is not None else "—"
        p50 = f"{r['p50']:.3f} ms" if r["p50"] is not None else "—"
        p99 = f"{r['p99']:.3f} ms" if r["p99"] is not None else "—"
        lines.append(f"| {r['name']} | {r['messages']} | {r['msg_per_s']:,.0f} | {r['acked_ok']} | {r['lost']} | {p50} | {p99} | {rss} |")
    if ours["p50"] and floor["p50"]:
        lines.append("")
        lines.append(f"Round trip p50, ours / relay floor: **{ours['p50'] / floor['p50']:.2f}×**; "
                     f"throughput, ours / floor: **{ours['msg_per_s'] / floor['msg_per_s']:.2f}×**"
                     + (f"; ours / dasf-broker-django: **{ours['msg_per_s'] / rows[2]['msg_per_s']:,.0f}×**"
                        if len(rows) > 2 and rows[2]["msg_per_s"] else "") + ".")
    table = "\n".join(lines)
    print(table)
    (HERE / "results-broker.md").write_text(table + "\n")
    update_readme("broker", table)


if __name__ == "__main__":
    main()
