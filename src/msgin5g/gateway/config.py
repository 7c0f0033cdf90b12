"""Configuration of the MSGin5G Gateway UE (``msgin5g gateway``).

A frozen dataclass with a docstring per field, validated in ``__post_init__``
(errors name the field), kept apart from the server's ``msgin5g.config``. The
bulk defaults are the digest's §5.5 values (``BULK_MAX_SIZE`` 50, ``BULK_MAX_WAIT``
30 s, default ``waitTime`` 300 s); the size cap follows the server's default
``coap.max_payload`` (4096 octets, digest §5.1), see ``docs/gateway.md``.
"""

from dataclasses import dataclass, field

from msgin5g.config import parse_hostport
from msgin5g.errors import ConfigError
from msgin5g.spec.delivery import MSGIN5G_SERVICE_ID

__all__ = ["GatewayConfig"]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything a Gateway UE needs to run."""

    ue_service_id: str
    """The gateway's own UE Service ID (it registers with the server as a UE)."""
    secret: str | None = field(default=None, repr=False)
    """The gateway's provisioned secret (its PSK_TOKEN is derived from it)."""
    server: str = "coap://127.0.0.1:5683"
    """MSGin5G Server URI (``coap://host[:port][/path]``)."""
    service_id: str = MSGIN5G_SERVICE_ID
    """The MSGin5G service identifier (``msgin5gServiceId``) the gateway puts on
    its messages and requires on those of constrained UEs: the server's
    ``coap.service_id``."""
    listen: str = "0.0.0.0:5693"
    """Local CoAP address served to constrained UEs (MSGin5G-5/-6)."""
    upstream_bind: str = "0.0.0.0:0"
    """Local address of the gateway's MSGin5G-1 socket towards the server."""
    storage: str = "sqlite:///./msgin5g-gateway.db"
    """Storage URL of the durable cache and queues (same backends as the server)."""
    batch_size: int = 50
    """BULK_MAX_SIZE: a bulk request is sent as soon as this many are cached."""
    max_wait: float = 30.0
    """BULK_MAX_WAIT (s): no cached request waits longer, whatever its waitTime."""
    default_wait: float = 300.0
    """waitTime assumed when a constrained UE sends none (digest §5.5)."""
    guard: float = 1.0
    """Seconds before the smallest waitTime expires at which the bulk is sent."""
    max_bulk_octets: int = 4096
    """Largest encoded BULKREG/BULKDEREG payload; bigger batches are split."""
    relay_wait: float = 1.5
    """How long an uplink MSG waits for the server's MSGRESP before the
    constrained UE gets a plain 2.04 (the message stays stored at the gateway)."""
    retry_interval: float = 5.0
    """Seconds between attempts towards an unreachable server or sleeping UE."""
    message_ttl: float = 86_400.0
    """How long the gateway keeps a message it could not forward (STORE_DEFAULT_TTL)."""
    max_packet_size: int = 1024
    """Largest packet the gateway allows a constrained UE (GWREGRESP)."""
    layer2_id: str = "000001"
    """The gateway's Layer-2 ID (GWREGRESP, APPREG answers)."""
    ack_timeout: float = 2.0
    """RFC 7252 ACK_TIMEOUT towards constrained UEs."""
    max_retransmit: int = 4
    """RFC 7252 MAX_RETRANSMIT towards constrained UEs."""

    def __post_init__(self) -> None:
        parse_hostport(self.listen)
        parse_hostport(self.upstream_bind, default_port=0)
        if not 1 <= self.batch_size <= 10_000:
            raise ConfigError("gateway.batch_size: must be between 1 and 10000")
        if self.max_bulk_octets < 256:
            raise ConfigError("gateway.max_bulk_octets: must be at least 256")
        for name in ("max_wait", "relay_wait", "retry_interval", "ack_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"gateway.{name}: must be positive")
        if self.guard < 0 or self.default_wait < 0:
            raise ConfigError("gateway.guard/default_wait: must not be negative")
        if len(self.layer2_id) != 6:
            raise ConfigError("gateway.layer2_id: 6 hex digits")
