"""The event loop on which a backend runs its ``async def`` members.

One loop in one thread serves every request of async members, many in flight at once (no thread per
request). A worker thread validates a request and hands the coroutine over; the reply is sent when the
coroutine finishes. In flight at once: at most ``limit`` (a worker waits for room beyond that).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Awaitable, Callable, Optional, Set

logger = logging.getLogger(__name__)

#: ``done(ok, text)``: send the reply of a request
Done = Callable[[bool, str], None]

SHUTDOWN_TEXT = "error executing request: cancelled, the backend is shutting down"


class BackendEventLoop:
    """An asyncio loop in a thread of its own, for the ``async def`` members of one backend."""

    def __init__(self, limit: int = 1000, request_timeout: Optional[float] = None) -> None:
        self.limit = limit
        self.request_timeout = request_timeout
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._running: Set["concurrent.futures.Future[None]"] = set()
        self._tasks: Set["asyncio.Task[None]"] = set()  # touched on the loop only
        self._closed = False

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("the backend's event loop is shut down")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="dasf-asyncio", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def submit(self, make: Callable[[], Awaitable[str]], done: Done) -> None:
        """Run the coroutine `make()` (its result is the reply text) and call `done` with the outcome.

        Blocks while `limit` requests are in flight."""
        loop = self._ensure_started()
        self._slots.acquire()
        try:
            future = asyncio.run_coroutine_threadsafe(self._run(make, done), loop)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._running.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: "concurrent.futures.Future[None]") -> None:
        with self._lock:
            self._running.discard(future)
        self._slots.release()

    async def _run(self, make: Callable[[], Awaitable[str]], done: Done) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self.request_timeout is None:
                text = await make()
            else:
                text = await asyncio.wait_for(make(), self.request_timeout)
        except asyncio.TimeoutError:
            outcome = (False, f"error executing request: no result within the request timeout of {self.request_timeout} s")
        except asyncio.CancelledError:
            outcome = (False, SHUTDOWN_TEXT)
        except Exception as e:
            logger.error("async request failed", exc_info=True)
            outcome = (False, f"error executing request: {e}")
        else:
            outcome = (True, text)
        finally:
            if task is not None:
                self._tasks.discard(task)
        try:
            done(*outcome)
        except Exception:
            logger.error("could not send the reply of an async request", exc_info=True)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Let requests in flight finish for up to `timeout` seconds, cancel the rest (their callers get an
        error reply), then stop the loop and its thread."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            running = list(self._running)
        if loop is None or thread is None:
            return
        _done, pending = concurrent.futures.wait(running, timeout=timeout)
        if pending:
            # cancel on the loop: each _run catches it, answers its caller, and completes its future
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in list(self._tasks)])
            concurrent.futures.wait(pending, timeout=5.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5.0)
        if not thread.is_alive():
            loop.close()
