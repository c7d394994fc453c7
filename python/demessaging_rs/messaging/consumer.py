"""The serving side of a backend topic, on the Rust core.

:class:`MessageConsumer` has the reference's interface: ``handle_request(msg)`` receives the request as a
message dictionary (``messageId``, base64 ``payload``, ``properties``) and answers through
:meth:`MessageConsumer.send_response` / :meth:`~MessageConsumer.send_error`. Everything else — the
subscription, acks, ``ping``/``info``/``api_info`` replies, reassembly of fragmented requests,
fragmentation of replies, the worker pool and its bounded queue, reply producers — runs in Rust.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Tuple, Union, cast

from demessaging_rs.messaging.connection import WebsocketConnection
from demessaging_rs.messaging.constants import MessageType, PropertyKeys, Status

if TYPE_CHECKING:
    from demessaging_rs._core import Backend, Responder
    from demessaging_rs.backend._eventloop import BackendEventLoop
    from demessaging_rs.backend.module import ModuleAPIModel
    from demessaging_rs.config import BaseMessagingConfig

__all__ = ["MessageConsumer"]

logger = logging.getLogger(__name__)

#: the fast path of :class:`~demessaging_rs.backend.BackendModule`: ``(payload, responder) -> (ok, text)``
# (True, reply JSON as str or bytes) or (False, error text); None when the reply goes out later
PayloadHandler = Callable[[str, "Responder"], Optional[Tuple[bool, Union[str, bytes]]]]


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


class _Call:
    """A request being handled: its responder and whether a final response went out."""

    __slots__ = ("responder", "answered")

    def __init__(self, responder: "Responder") -> None:
        self.responder = responder
        self.answered = False


def default_subscription(config: Any) -> str:
    """The subscription of a backend that was given no name. Exclusive (the default) takes the reference's,
    ``backend-module-<local start time>``. Replicas (``subscription_type`` Shared or Failover) must meet on
    one subscription, else every replica would get (and run) every request: they take a fixed name per
    type (subscriptions belong to a topic, so replicas of other topics never meet on it)."""
    kind = getattr(config, "subscription_type", None)
    if kind in ("Shared", "Failover"):
        return f"backend-module-{kind.lower()}"
    return "backend-module-" + datetime.now().isoformat()[:19]


class MessageConsumer(WebsocketConnection):
    """Serves the topic of a messaging configuration; requests go to `handle_request` on worker threads."""

    RECONNECT_TIMEOUT_SLEEP = 10
    SOCKET_PING_INTERVAL = 60

    def __init__(
        self,
        pulsar_config: "BaseMessagingConfig",
        handle_request: Callable[[Dict[str, Any]], Any],
        handle_response: Optional[Callable[[Dict[str, Any]], Any]] = None,
        module_info: Optional[Dict[str, Any]] = None,
        api_info: Optional["ModuleAPIModel"] = None,
        *,
        payload_handler: Optional[PayloadHandler] = None,
    ) -> None:
        super().__init__(pulsar_config)
        self.handle_request = handle_request
        # NOTE: the core ignores `response` messages on a backend topic, as the reference does without a
        # handler; a handle_response callback is kept for the interface but never called.
        self.handle_response = handle_response
        self.module_info = module_info
        self.api_info = api_info
        self.max_payload_size = self.pulsar_config.max_payload_size
        self.connection_attempts = 0
        self.subscription: Optional["Backend"] = None
        self._payload_handler = payload_handler
        self._event_loop: Optional["BackendEventLoop"] = None
        self._calls: Dict[str, _Call] = {}
        self._lock = threading.Lock()
        self.setup_subscription()

    # ---------------------------------------------------------------- serving
    def setup_subscription(self) -> None:
        """Prepare the subscription (it connects when :meth:`wait_for_request` runs)."""
        from demessaging_rs._core import Backend

        mc = self.pulsar_config
        serve = {
            "topic": mc.topic,
            "subscription": getattr(mc, "subscription", None) or default_subscription(mc),
            "subscription_type": getattr(mc, "subscription_type", None),
            "max_workers": mc.max_workers,
            "queue_size": mc.queue_size,
            "producer_keep_alive": float(mc.producer_keep_alive),
            "producer_connection_timeout": float(mc.producer_connection_timeout),
            "info": None if self.module_info is None else json.dumps(self.module_info),
            "api_info": None if self.api_info is None else self.api_info.model_dump_json(),
        }
        self.connection_attempts += 1
        self.subscription = Backend(mc.connection_settings(), serve, self._dispatch, on_drain=self._drain)

    @property
    def event_loop(self) -> "BackendEventLoop":
        """The event loop that runs the ``async def`` members (started on first use)."""
        from demessaging_rs.backend._eventloop import BackendEventLoop

        with self._lock:
            if self._event_loop is None:
                self._event_loop = BackendEventLoop(
                    limit=getattr(self.pulsar_config, "max_async_requests", None) or 1000,
                    request_timeout=getattr(self.pulsar_config, "request_timeout", None),
                )
            return self._event_loop

    def _drain(self) -> None:
        """At shutdown (called by the core before the reply connections close): finish async requests."""
        with self._lock:
            loop, self._event_loop = self._event_loop, None
        if loop is not None:
            loop.shutdown(timeout=float(getattr(self.pulsar_config, "drain_timeout", 30.0)))

    def wait_for_request(self) -> None:
        """Serve until :meth:`disconnect` (from another thread) or Ctrl-C; running requests finish first."""
        if self.subscription is None:
            self.setup_subscription()
        assert self.subscription is not None
        logger.info("waiting for incoming request")
        self.subscription.run(drain_timeout=float(getattr(self.pulsar_config, "drain_timeout", 30.0)))

    def disconnect(self) -> None:
        """Stop serving (a running :meth:`wait_for_request` returns after the running requests)."""
        if self.subscription is not None:
            self.subscription.stop()

    def _dispatch(self, payload: str, responder: "Responder") -> Optional[Tuple[bool, Union[str, bytes]]]:
        if self._payload_handler is not None:
            return self._payload_handler(payload, responder)
        msg = self.request_message(responder, payload)
        with self.handling(msg, responder) as call:
            try:
                self.handle_request(msg)
            except Exception as e:
                logger.error("Failed processing request %s", responder.message_id, exc_info=True)
                if not call.answered:
                    return False, f"error executing request: {e}"
        if not call.answered:
            logger.warning("handle_request sent no response to request %s", responder.message_id)
            return False, "error executing request: the backend sent no response"
        return None

    # ------------------------------------------------- requests and responders
    @staticmethod
    def request_message(responder: "Responder", payload: Optional[str] = None) -> Dict[str, Any]:
        """The reference's message dictionary for a request handled by `responder`."""
        return {
            "messageId": responder.message_id,
            "payload": "" if payload is None else base64.b64encode(payload.encode("utf-8")).decode("ascii"),
            "properties": {
                PropertyKeys.RESPONSE_TOPIC.value: responder.response_topic,
                PropertyKeys.REQUEST_CONTEXT.value: responder.request_context,
                PropertyKeys.MESSAGE_TYPE.value: MessageType.REQUEST.value,
            },
        }

    @contextlib.contextmanager
    def handling(self, msg: Dict[str, Any], responder: "Responder") -> Iterator[_Call]:
        """Within the block, :meth:`send_response` can answer `msg` (reentrant for the same message)."""
        key = msg["messageId"]
        with self._lock:
            call = self._calls.get(key)
            owner = call is None
            if call is None:
                call = self._calls[key] = _Call(responder)
        try:
            yield call
        finally:
            if owner:
                with self._lock:
                    self._calls.pop(key, None)

    def acknowledge(self, msg: Dict[str, Any]) -> None:
        """Requests are acknowledged by the core; kept for the reference's interface."""
        logger.debug("message %s is acknowledged by the core", msg.get("messageId"))

    # ---------------------------------------------------------------- replies
    def send_response(
        self,
        request: Dict[str, Any],
        response_payload: Any = None,
        msg_type: Any = MessageType.RESPONSE,
        response_properties: Optional[Dict[Any, Any]] = None,
    ) -> None:
        """Send a message of `msg_type` to the caller of `request` (a message being handled)."""
        if not self.is_valid_request(request):
            logger.warning("not answering a message without response topic, context and type: %r", request)
            return
        with self._lock:
            call = self._calls.get(request.get("messageId", ""))
        if call is None:
            logger.error("cannot answer request %s: it is not being handled (anymore)", request.get("messageId"))
            return
        props = {_text(k): v for k, v in (response_properties or {}).items()}
        status = props.pop(PropertyKeys.STATUS.value, None)
        if isinstance(response_payload, dict):
            response_payload = json.dumps(response_payload)
        message_type = _text(msg_type)
        call.responder.send(
            message_type,
            response_payload or "",
            status=None if status is None else _text(status),
            properties={k: getattr(v, "value", v) for k, v in props.items()},
        )
        if message_type in (MessageType.RESPONSE.value, MessageType.PONG.value):
            call.answered = True

    def send_error(self, request: Dict[str, Any], error_message: str) -> None:
        """Send an error response with `error_message` to the caller of `request`."""
        logger.info("sending error to %s: %s", self.extract_response_topic(request), error_message)
        self.send_response(request, error_message, response_properties={PropertyKeys.STATUS: Status.ERROR})

    def send_pong(self, request: Dict[str, Any]) -> None:
        """Answer `request` with a DASF pong (the core answers pings by itself)."""
        self.send_response(request, msg_type=MessageType.PONG)

    def handle_pong(self, request: Dict[str, Any]) -> None:
        logger.info("pong received: %s", request)

    def handle_info(self, info_request: Dict[str, Any]) -> None:
        """Answer with the module's schema (the core answers ``info`` messages by itself)."""
        info = json.dumps(self.module_info) if self.module_info is not None else (
            "This module does not provide capability information."
        )
        self.send_response(info_request, response_properties={"info": info})

    def handle_api_info(self, api_info_request: Dict[str, Any]) -> None:
        """Answer with the module's API (the core answers ``api_info`` messages by itself)."""
        if self.api_info is None:
            props = {"info": "This module does not provide api information."}
        else:
            props = {"api_info": self.api_info.model_dump_json()}
        self.send_response(api_info_request, response_properties=props)

    # ------------------------------------------------- the reference's helpers
    @staticmethod
    def extract_response_topic(msg: Dict[str, Any]) -> Optional[str]:
        return cast(Optional[str], msg.get("properties", {}).get(PropertyKeys.RESPONSE_TOPIC.value))

    @staticmethod
    def extract_context(msg: Dict[str, Any]) -> Optional[str]:
        props = msg.get("properties", {})
        key = PropertyKeys.REQUEST_CONTEXT.value
        if key in props:
            return str(props[key])
        if key in msg:
            return str(msg[key])
        return None

    @staticmethod
    def extract_message_type(msg: Dict[str, Any]) -> Optional[str]:
        return cast(Optional[str], msg.get("properties", {}).get(PropertyKeys.MESSAGE_TYPE.value))

    @staticmethod
    def is_valid_value(value: Any) -> bool:
        return isinstance(value, str) and len(value) > 0

    @staticmethod
    def is_valid_request(request_message: Dict[str, Any]) -> bool:
        """A message DASF can answer: non-empty response topic, context and message type."""
        return all(
            MessageConsumer.is_valid_value(f(request_message))
            for f in (
                MessageConsumer.extract_response_topic,
                MessageConsumer.extract_context,
                MessageConsumer.extract_message_type,
            )
        )
