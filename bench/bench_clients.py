"""Client side of bench_calls.py: one system's hello_world workloads in a process of its own.

    python bench/bench_clients.py {ref,ours,nats} --target TARGET --pid broker=PID --pid backend=PID [...]

TARGET is ``HOST:PORT/TOPIC`` for ref/ours (the embedded broker) and ``nats://HOST:PORT/SUBJECT`` for nats.
Runs the phases named by ``--phases`` (ref/ours; nats runs all), in this order: sequential calls (p50, p99,
calls/s), N threads calling concurrently (calls/s), and, where the system has an asyncio API, W calls kept in
flight on one event loop (calls/s); then the large-payload echoes. For the threaded and the in-flight phases it
reads utime+stime of this process and of every ``--pid`` from /proc/<pid>/stat before and after the measured
phase (connection setup and warm-up excluded) and reports CPU µs per call. Prints one line
``BENCH-RESULT {json}`` and exits.

Running each system's client in its own process keeps its CPU account clean (the reference keeps threads and
sockets of its own) and keeps one client library's import side effects away from the others.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import warnings
from typing import Any, Awaitable, Callable, Dict, List, Tuple

CLK_TCK = os.sysconf("SC_CLK_TCK")
REQUEST = {"func_name": "hello_world", "name": "bench"}
EXPECTED = "Hello, bench"


# ---------------------------------------------------------------------------------------------- CPU accounting
def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads, live and exited) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Meter:
    """CPU seconds of named processes between two snapshots."""

    def __init__(self, pids: Dict[str, int]) -> None:
        self.pids = pids

    def snap(self) -> Dict[str, float]:
        out = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        out["_wall"] = time.perf_counter()
        return out

    def per_call(self, before: Dict[str, float], after: Dict[str, float], calls: int) -> Dict[str, float]:
        """CPU µs per call for each process, plus the wall time of the phase."""
        out = {name: (after[name] - before[name]) * 1e6 / calls for name in self.pids}
        out["_wall"] = after["_wall"] - before["_wall"]
        return out


# -------------------------------------------------------------------------------------------------- workloads
def percentile(values: List[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def seq_summary(times: List[float], total: float) -> Dict[str, float]:
    return {"p50": percentile(times, 0.5) * 1e3, "p99": percentile(times, 0.99) * 1e3, "rate": len(times) / total}


def sequential(call: Callable[[], Any], n: int) -> Dict[str, float]:
    times = []
    t_start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return seq_summary(times, time.perf_counter() - t_start)


async def asequential(acall: Callable[[], Awaitable[Any]], n: int) -> Dict[str, float]:
    times = []
    t_start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        await acall()
        times.append(time.perf_counter() - t0)
    return seq_summary(times, time.perf_counter() - t_start)


class Worker:
    """One client thread: optional setup (its own connection), the measured calls, optional teardown."""

    def setup(self) -> None: ...

    def run(self, n: int) -> None:
        raise NotImplementedError

    def teardown(self) -> None: ...


class SyncWorker(Worker):
    def __init__(self, call: Callable[[], Any]) -> None:
        self.call = call

    def run(self, n: int) -> None:
        for _ in range(n):
            self.call()


def threaded(make_worker: Callable[[], Worker], threads: int, per_thread: int, meter: Meter) -> Dict[str, Any]:
    """`threads` workers calling `per_thread` times each; setup before and teardown after the measured phase."""
    errors: List[BaseException] = []
    start, end = threading.Barrier(threads + 1), threading.Barrier(threads + 1)

    def work() -> None:
        w = make_worker()
        try:
            w.setup()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        start.wait()
        try:
            if not errors:
                w.run(per_thread)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        end.wait()
        w.teardown()

    ts = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    before = meter.snap()
    start.wait(timeout=120)
    end.wait(timeout=600)
    after = meter.snap()
    for t in ts:
        t.join(timeout=30)
    if errors:
        raise errors[0]
    cpu = meter.per_call(before, after, threads * per_thread)
    return {"rate": threads * per_thread / cpu["_wall"], "cpu": cpu}


def median_run(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Of several runs of a phase, the one with the median rate (its CPU figures with it)."""
    return sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]


async def in_flight(acall: Callable[[], Awaitable[Any]], total: int, width: int, meter: Meter) -> Dict[str, Any]:
    """Keep `width` calls outstanding (one task per slot, each starting its next call as soon as one returns)
    until `total` calls have been made; a first round of `width` calls warms up and is not measured."""
    await asyncio.gather(*(acall() for _ in range(width)))
    remaining = total

    async def slot() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await acall()

    before = meter.snap()
    await asyncio.gather(*(slot() for _ in range(width)))
    after = meter.snap()
    cpu = meter.per_call(before, after, total)
    return {"rate": total / cpu["_wall"], "cpu": cpu}


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


ECHO_SIZES = ((100_000, "echo 100 KB"), (400_000, "echo 400 KB"), (1_000_000, "echo 1 MB"), (2_000_000, "echo 2 MB"))
# only for ours: the reference already fails from 1 MB on
BIG_ECHO_SIZES = ((20_000_000, "echo 20 MB"), (100_000_000, "echo 100 MB"))


# ------------------------------------------------------------------------------------------------ the systems
def hello_world(name: str) -> str:
    return ""


def echo(data: str) -> str:
    return data


def check(result: Any) -> None:
    if result != EXPECTED:
        raise RuntimeError(f"wrong answer {result!r}")


def run_dasf(system: str, target: str, args: argparse.Namespace, meter: Meter) -> Dict[str, Any]:
    """ours or ref: BackendModule.send_request from this process, through the embedded broker."""
    warnings.simplefilter("ignore")
    hostport, topic = target.split("/", 1)
    host, port = hostport.rsplit(":", 1)
    if system == "ref":
        from demessaging import BackendModule
    else:
        import demessaging_rs

        if demessaging_rs.build_profile != "release":
            raise SystemExit("refusing to benchmark a debug build: pip install . (maturin builds release)")
        from demessaging_rs import BackendModule
    Model = BackendModule.create_model(  # noqa: N806
        members=[hello_world, echo],
        messaging_config={"host": host, "port": port, "topic": topic},
        log_config={"level": 30},
    )

    def call() -> None:
        check(Model.send_request(REQUEST).root)

    for _ in range(50):  # warm-up: connections, caches
        call()
    out: Dict[str, Any] = {}
    if "seq" in args.phases:
        out["seq"] = sequential(call, args.calls)
    if "threads" in args.phases:
        # warm-up of the threads' own paths (per-thread state, allocator arenas), as dasf-loadgen calls does
        threaded(lambda: SyncWorker(call), args.threads, max(1, args.per_thread // 10), meter)
        out["threads"] = median_run(
            [threaded(lambda: SyncWorker(call), args.threads, args.per_thread, meter) for _ in range(args.repeat)]
        )

    if system == "ours" and "async" in args.phases:
        if hasattr(Model, "asend_request"):
            out["async_api"] = "await Model.asend_request(request)"

            async def acall() -> None:
                check((await Model.asend_request(REQUEST)).root)  # type: ignore[attr-defined]
        else:
            out["async_api"] = "await producer.call_async(...) (internal API) + pydantic on both sides"
            producer = Model.backend_config.messaging_config.producer

            async def acall() -> None:
                # what send_request does around the wire call: validate, dump, call, validate the return
                model = Model.model_validate(REQUEST)
                status, body, _props = await producer.call_async(model.model_dump_json(), label="hello_world")
                if status == "error":
                    raise RuntimeError(body.decode("utf-8", "replace"))
                check(model.root.return_model.model_validate_json(body).root)

        async def flight() -> Dict[str, Any]:
            return await in_flight(acall, args.async_calls, args.in_flight, meter)

        out["async"] = median_run([asyncio.run(flight()) for _ in range(args.repeat)])

    if "echo" in args.phases:
        def call_echo(d: str) -> Any:
            return Model.send_request({"func_name": "echo", "data": d}).root

        for size, label in ECHO_SIZES:
            out[label] = timed_echo(call_echo, size, 60 if system == "ours" else 20)
        if system == "ours":
            # one large echo varies by a tenth between runs on a shared VM: the median of three, with the range
            for size, label in BIG_ECHO_SIZES:
                runs = [timed_echo(call_echo, size, 60) for _ in range(3)]
                if any(r.startswith("FAIL") for r in runs):
                    out[label] = next(r for r in runs if r.startswith("FAIL"))
                    continue
                secs = sorted(float(r.split()[0]) for r in runs)
                out[label] = f"{secs[1]:.3f} s ({secs[0]:.2f}–{secs[2]:.2f}, median of 3)"
    return out


def run_nats(target: str, args: argparse.Namespace, meter: Meter) -> Dict[str, Any]:
    """nats-py `request` against the Python responder (bench/nats_hello.py), plain JSON."""
    import nats

    url, subject = target.rsplit("/", 1)
    data = json.dumps(REQUEST).encode()

    def make_call(nc: Any) -> Callable[[], Awaitable[None]]:
        async def acall() -> None:
            msg = await nc.request(subject, data, timeout=30)
            check(json.loads(msg.data))

        return acall

    class NatsWorker(Worker):
        """A thread with its own event loop and its own connection."""

        def setup(self) -> None:
            self.loop = asyncio.new_event_loop()
            self.nc = self.loop.run_until_complete(nats.connect(url))
            self.acall = make_call(self.nc)
            for _ in range(20):
                self.loop.run_until_complete(self.acall())

        def run(self, n: int) -> None:
            async def calls() -> None:
                for _ in range(n):
                    await self.acall()

            self.loop.run_until_complete(calls())

        def teardown(self) -> None:
            if hasattr(self, "nc"):
                self.loop.run_until_complete(self.nc.close())
            self.loop.close()

    async def single_loop() -> Tuple[Dict[str, float], Dict[str, Any]]:
        nc = await nats.connect(url)
        acall = make_call(nc)
        for _ in range(50):
            await acall()
        seq = await asequential(acall, args.calls)
        flights = [await in_flight(acall, args.async_calls, args.in_flight, meter) for _ in range(args.repeat)]
        await nc.close()
        return seq, median_run(flights)

    out: Dict[str, Any] = {}
    out["seq"], out["async"] = asyncio.run(single_loop())
    out["threads"] = median_run([threaded(NatsWorker, args.threads, args.per_thread, meter) for _ in range(args.repeat)])
    out["async_api"] = "nats-py `await nc.request(...)`"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("system", choices=["ref", "ours", "nats"])
    ap.add_argument("--target", required=True)
    ap.add_argument("--pid", action="append", default=[], help="NAME=PID of a process to account CPU for")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--per-thread", type=int, default=1000)
    ap.add_argument("--async-calls", type=int, default=20000)
    ap.add_argument("--in-flight", type=int, default=1000)
    ap.add_argument("--phases", type=lambda v: set(v.split(",")), default={"seq", "threads", "async"},
                    help="comma-separated, of seq, threads, async, echo (ref/ours only); default seq,threads,async")
    ap.add_argument("--repeat", type=int, default=1, help="runs of the threaded and in-flight phases (the median counts)")
    args = ap.parse_args()

    pids = {"client": os.getpid()}
    for item in args.pid:
        name, pid = item.split("=", 1)
        pids[name] = int(pid)
    meter = Meter(pids)
    if args.system == "nats":
        out = run_nats(args.target, args, meter)
    else:
        out = run_dasf(args.system, args.target, args, meter)
    print("BENCH-RESULT " + json.dumps(out), flush=True)
    sys.stdout.flush()
    os._exit(0)  # the reference's client keeps non-daemon threads (and a hung echo may still be waiting)


if __name__ == "__main__":
    main()
