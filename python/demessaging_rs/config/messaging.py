"""How to reach the message broker: Pulsar-style host/port settings or plain websocket URLs.

Every field can also come from the environment with the prefix ``DE_BACKEND_`` (e.g. ``DE_BACKEND_TOPIC``,
``DE_BACKEND_HOST``), as with ``demessaging``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Union

from pydantic import Field, Json, PositiveFloat, PositiveInt, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from demessaging_rs.utils import append_parameter_docs

if TYPE_CHECKING:
    from demessaging_rs.messaging.producer import MessageProducer

__all__ = ["BaseMessagingConfig", "PulsarConfig", "WebsocketURLConfig"]


@append_parameter_docs
class BaseMessagingConfig(BaseSettings):
    """Settings shared by every way of connecting to a broker."""

    model_config = SettingsConfigDict(env_prefix="de_backend_")

    topic: str = Field(description="The topic the backend module listens on and clients send requests to.")

    header: Union[Json[Dict[str, Any]], Dict[str, Any]] = Field(
        default_factory=dict,
        description='HTTP headers for the websocket upgrade, e.g. {"authorization": "Token ..."}.',
    )

    max_workers: Optional[PositiveInt] = Field(
        default=None,
        description="Number of worker threads that run requests concurrently (default: CPUs + 4, at most 32).",
    )

    queue_size: Optional[PositiveInt] = Field(
        default=None,
        description=(
            "Number of requests that may wait for a free worker; further requests are answered with an error "
            "at once. Must not be smaller than max_workers. Default: no limit, as the reference; a saturated "
            "backend then stops taking deliveries and the broker holds the rest, so memory stays bounded."
        ),
    )

    max_payload_size: int = Field(
        default=500 * 1024,
        description=(
            "Messages whose payload exceeds this many bytes are split into fragments. Keep it below the "
            "broker's frame limit (Pulsar: webSocketMaxTextFrameSize)."
        ),
    )

    producer_keep_alive: int = Field(
        default=120,
        description="Seconds an idle reply connection stays open; 0 closes it after every reply.",
    )

    producer_connection_timeout: int = Field(
        default=30,
        description="Seconds allowed to open a reply connection before the reply is given up.",
    )

    call_timeout: PositiveFloat = Field(
        default=600.0,
        description="Seconds a client waits for a response before raising TimeoutError.",
    )

    request_timeout: Optional[PositiveFloat] = Field(
        default=None,
        description=(
            "Seconds an `async def` member of a backend may run; then it is cancelled and the caller gets an "
            "error reply. Default: no limit (the caller's call_timeout still ends its wait)."
        ),
    )

    drain_timeout: PositiveFloat = Field(
        default=30.0,
        description=(
            "Seconds that running requests get to finish when a backend stops (Ctrl-C, SIGTERM); `async def` "
            "requests still running then are cancelled and their callers get an error reply."
        ),
    )

    subscription_type: Optional[str] = Field(
        default=None,
        description=(
            "Subscription type of the backend's consumer (Exclusive, Shared, Failover). With Shared, replicas "
            "of one backend split the requests (each runs once); with Failover one serves and the next takes "
            "over when it goes away."
        ),
    )

    subscription: Optional[str] = Field(
        default=None,
        description=(
            "Subscription name of the backend's consumer (default: backend-module-<start time>; with "
            "subscription_type Shared or Failover backend-module-shared or backend-module-failover, so that "
            "replicas meet on one subscription)."
        ),
    )

    max_reassembly_size: Optional[PositiveInt] = Field(
        default=None,
        description=(
            "Largest fragmented message (request at a backend, reply at a client) reassembled, in bytes of "
            "payload; a larger one is refused at its first fragment with a clear error. Default: about 192 MB."
        ),
    )

    ssl_ca_file: Optional[str] = Field(
        default=None,
        description=(
            "PEM file of the CA certificates to trust for wss:// connections, instead of the system's (which "
            "also honour SSL_CERT_FILE and SSL_CERT_DIR)."
        ),
    )

    ssl_insecure_no_verify: bool = Field(
        default=False,
        description=(
            "INSECURE, for development only: accept any certificate on wss:// connections, so anyone on the "
            "path can read and change the traffic."
        ),
    )

    _producer: Optional["MessageProducer"] = None

    @model_validator(mode="after")
    def validate_queue_size(self) -> "BaseMessagingConfig":
        if self.queue_size is not None and self.max_workers is not None and self.queue_size < self.max_workers:
            raise ValueError(
                f"queue_size ({self.queue_size}) needs to be larger than or equal to max_workers ({self.max_workers})"
            )
        return self

    @property
    def producer(self) -> "MessageProducer":
        """The client connection of this configuration (created once, reused by every call)."""
        from demessaging_rs.messaging.producer import MessageProducer

        if self._producer is None:
            self._producer = MessageProducer(self)
        return self._producer

    def connection_settings(self) -> Dict[str, Any]:
        """The settings the Rust core needs to open connections."""
        raise NotImplementedError

    def _tls_settings(self) -> Dict[str, Any]:
        """TLS and reassembly settings, shared by every kind of config."""
        return {
            "ssl_ca_file": self.ssl_ca_file,
            "ssl_insecure_no_verify": self.ssl_insecure_no_verify,
            "max_reassembly_size": self.max_reassembly_size,
        }

    def get_topic_url(self, topic: str, subscription: Optional[str] = None) -> str:
        """The websocket URL of a producer (or, with `subscription`, a consumer) on `topic`."""
        raise NotImplementedError


@append_parameter_docs
class PulsarConfig(BaseMessagingConfig):
    """Connect to a broker speaking Apache Pulsar's WebSocket API (Pulsar itself or ``demessaging-rs broker``)."""

    host: str = Field("localhost", description="Host name of the broker.")

    port: str = Field("8080", description="Port of the broker.")

    persistent: str = Field("non-persistent", description="Topic persistence: persistent or non-persistent.")

    tenant: str = Field("public", description="Pulsar tenant.")

    namespace: str = Field("default", description="Pulsar namespace.")

    ssl: bool = Field(False, description="Connect with TLS (wss://), e.g. to Pulsar's WebSocket service behind HTTPS.")

    @field_validator("port", mode="before")
    @classmethod
    def _port_as_str(cls, value: Any) -> Any:
        # the reference only takes strings; accepting ints too is a convenience
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    def connection_settings(self) -> Dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "persistent": self.persistent,
            "tenant": self.tenant,
            "namespace": self.namespace,
            "header": dict(self.header),
            "max_payload_size": self.max_payload_size,
            "ssl": self.ssl,
            **self._tls_settings(),
        }

    def get_topic_url(self, topic: str, subscription: Optional[str] = None) -> str:
        role = "consumer" if subscription else "producer"
        tail = f"/{subscription}" if subscription else ""
        scheme = "wss" if self.ssl else "ws"
        return (
            f"{scheme}://{self.host}:{self.port}/ws/v2/{role}/{self.persistent}/{self.tenant}/{self.namespace}/"
            f"{topic}{tail}"
        )


@append_parameter_docs
class WebsocketURLConfig(BaseMessagingConfig):
    """Connect to a broker by URL (dasf-broker-django: ``ws://host/ws/``)."""

    websocket_url: str = Field("", description="Base URL of the broker's websocket routes.")

    producer_url: Optional[str] = Field(None, description="Base URL for producers (default: websocket_url).")

    consumer_url: Optional[str] = Field(None, description="Base URL for consumers (default: websocket_url).")

    def connection_settings(self) -> Dict[str, Any]:
        return {
            "websocket_url": self.websocket_url,
            "producer_url": self.producer_url or self.websocket_url,
            "consumer_url": self.consumer_url or self.websocket_url,
            "header": dict(self.header),
            "max_payload_size": self.max_payload_size,
            **self._tls_settings(),
        }

    def get_topic_url(self, topic: str, subscription: Optional[str] = None) -> str:
        base = (self.consumer_url if subscription else self.producer_url) or self.websocket_url
        if not base.endswith("/"):
            base += "/"
        return base + topic + (f"/{subscription}" if subscription else "")
