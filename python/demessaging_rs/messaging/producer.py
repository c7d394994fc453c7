"""The client side of a backend topic: one multiplexed connection pair per messaging configuration.

The Rust core keeps one producer and one consumer socket per topic and matches replies to calls by
context; every call has a timeout. :meth:`MessageProducer.send_request` keeps the reference's awaitable
interface and result dictionaries for code written against it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, TypeVar

from demessaging_rs._core import Client
from demessaging_rs.messaging.connection import WebsocketConnection
from demessaging_rs.messaging.constants import MessageType, PropertyKeys, Status

if TYPE_CHECKING:
    from demessaging_rs.config.messaging import BaseMessagingConfig

__all__ = ["MessageProducer", "decode_progress"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: ``on_progress(report)``: a deprogressapi report (or the decoded JSON, or the text, of what is not one)
ProgressCallback = Callable[[Any], Any]


async def _in_daemon_thread(work: Callable[[], T]) -> T:
    """Await `work()` run on a daemon thread of its own, as the reference runs a raw request.

    NOTE: not the loop's default executor: ``asyncio.run`` joins that executor's threads when it ends, and
    the interpreter does at exit, so a call whose awaiting task was cancelled (``asyncio.wait_for``) or
    that nobody awaits any more would hold the process for up to its ``call_timeout`` (600 s).
    """
    loop = asyncio.get_running_loop()
    done: "asyncio.Future[T]" = loop.create_future()

    def settle(result: Any, error: Optional[BaseException]) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    def run() -> None:
        try:
            outcome: Tuple[Any, Optional[BaseException]] = (work(), None)
        except BaseException as e:  # handed to the awaiting task
            outcome = (None, e)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:
            pass  # the loop is closed: nobody waits for the outcome any more

    threading.Thread(target=run, name="dasf-send-request", daemon=True).start()
    return await done


def decode_progress(payload: bytes) -> Any:
    """A progress message's payload as a deprogressapi report (``BaseReport.from_payload``) when it is one
    (a JSON object with a ``report_type``); otherwise the decoded JSON, or the text when it is not JSON."""
    text = payload.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict) and "report_type" in data:
        from deprogressapi import BaseReport

        try:
            return BaseReport.from_payload(text)
        except ValueError:
            logger.warning("progress report of an unknown type: %s", text[:200])
    return data


class MessageProducer(WebsocketConnection):
    """Sends requests to the backend on ``config.topic`` and waits for the replies (in Rust, GIL released)."""

    SOCKET_PING_INTERVAL = 60
    RECONNECT_TIMEOUT_SLEEP = 5

    def __init__(self, pulsar_config: "BaseMessagingConfig", topic: Optional[str] = None) -> None:
        super().__init__(pulsar_config)
        self.out_topic: str = topic or self.pulsar_config.topic
        self.topic = self.out_topic
        self.subscription_name: str = "python-backend-" + datetime.now().isoformat()
        self._client = Client(self.out_topic, self.pulsar_config.connection_settings())
        self._connected = False

    # ------------------------------------------------------------ connection
    def setup_subscription(self) -> None:
        """Nothing to prepare: the Rust core opens both sockets on :meth:`connect` or the first call."""

    def connect(self) -> None:
        """Open the connections now instead of on the first call (raises ``BrokerConnectionError``)."""
        self._client.connect()
        self._connected = True

    def disconnect(self) -> None:
        """Close the connections; waiting calls fail. The next call connects again."""
        self._client.close()
        self._connected = False

    @property
    def is_connected(self) -> bool:
        """Whether :meth:`connect` (or a call) has opened the connections and no disconnect followed."""
        return self._connected

    def wait_for_connection(self, timeout: float = 10) -> bool:
        """Try to connect for up to `timeout` seconds; whether it worked."""
        from demessaging_rs.exceptions import BrokerConnectionError

        deadline = time.monotonic() + timeout
        while True:
            try:
                self.connect()
                return True
            except BrokerConnectionError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))

    # ----------------------------------------------------------------- calls
    def call(
        self,
        payload: str,
        timeout: Optional[float] = None,
        label: str = "request",
        message_type: str = "request",
        on_progress: Optional[Callable[[bytes, Dict[str, str]], Any]] = None,
    ) -> Tuple[str, bytes]:
        """Send one request; returns ``(status, payload)``."""
        status, body, _props = self.call_raw(payload, timeout, label, message_type, on_progress)
        return status, body

    def call_raw(
        self,
        payload: str,
        timeout: Optional[float] = None,
        label: str = "request",
        message_type: str = "request",
        on_progress: Optional[Callable[[bytes, Dict[str, str]], Any]] = None,
    ) -> Tuple[str, bytes, Dict[str, str]]:
        """Like :meth:`call`, but also returns the reply's properties."""
        limit = self.pulsar_config.call_timeout if timeout is None else timeout
        reply = self._client.call(message_type, payload, float(limit), label, on_progress)
        self._connected = True
        return reply

    async def call_async(
        self, payload: str, timeout: Optional[float] = None, label: str = "request", message_type: str = "request"
    ) -> Tuple[str, bytes, Dict[str, str]]:
        """Awaitable :meth:`call_raw` for asyncio code."""
        limit = self.pulsar_config.call_timeout if timeout is None else timeout
        return await self._client.call_async(message_type, payload, float(limit), label)

    def ping(self, timeout: float = 5.0) -> bool:
        """Whether the backend answers a DASF ping within `timeout` seconds."""
        from demessaging_rs.exceptions import BrokerConnectionError, CallTimeout

        try:
            _status, _body, props = self._client.call("ping", b"", float(timeout), "ping")
        except (CallTimeout, BrokerConnectionError):
            return False
        return props.get("messageType") == "pong"

    async def send_request(
        self,
        request_msg: Dict[str, Any],
        timeout: Optional[float] = None,
        on_progress: Optional[ProgressCallback] = None,
    ) -> Dict[str, Any]:
        """Send a raw DASF message (``{"payload": <base64>, "properties": {...}}``) and await the reply.

        Returns the reference's result dictionary: ``{"status": "success", "msg": <text>}``, or
        ``{"status": "error", "error": <text>, "msg": ...}``. Unlike the reference it never waits forever:
        after `timeout` seconds (default ``call_timeout``) it raises ``CallTimeout``. Progress reports go to
        `on_progress` (see :func:`decode_progress`), or are logged when there is none.
        """
        props = {str(getattr(k, "value", k)): v for k, v in (request_msg.get("properties") or {}).items()}
        message_type = str(getattr(props.get("messageType"), "value", props.get("messageType") or "request"))
        try:
            raw = base64.b64decode(request_msg.get("payload") or "", validate=True)
        except ValueError as e:
            return {"status": "error", "error": f"the request payload is not base64: {e}", "msg": request_msg}

        def progress(payload: bytes, _props: Dict[str, str]) -> None:
            report = decode_progress(payload)
            if on_progress is not None:
                on_progress(report)
            else:
                logger.info("progress: %s", report)

        status, body, reply_props = await _in_daemon_thread(
            lambda: self.call_raw(raw.decode("utf-8"), timeout, "request", message_type, progress)
        )
        if "info" in reply_props:
            return {"status": reply_props.get("status", Status.SUCCESS.value), "msg": reply_props["info"]}
        if "api_info" in reply_props:
            return {"status": reply_props.get("status", Status.SUCCESS.value), "msg": reply_props["api_info"]}
        if reply_props.get(PropertyKeys.MESSAGE_TYPE.value) == MessageType.PONG.value:
            return {"status": Status.SUCCESS.value, "msg": ""}
        text = body.decode("utf-8", "replace")
        if status == Status.ERROR.value:
            return {"status": status, "error": text, "msg": {"properties": reply_props, "payload": text}}
        return {"status": status, "msg": text}
