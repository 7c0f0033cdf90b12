"""Configuration of the MSGin5G Server: dataclasses, TOML file, ``MSGIN5G_*`` variables.

Precedence (lowest first): defaults, the TOML file (``--config``), environment
variables, command-line options. Every field can be set in each place:

* TOML: ``[section] key = value`` (e.g. ``[storage] url = "sqlite:///db.sqlite"``);
* environment: ``MSGIN5G_<SECTION>_<KEY>`` (e.g. ``MSGIN5G_STORAGE_URL``), plus the
  shortcuts ``MSGIN5G_COAP`` (``coap.bind``), ``MSGIN5G_HTTP`` (``rest.bind``);
* CLI: ``--coap HOST:PORT``, ``--http HOST:PORT``, ``--storage URL`` and
  ``--set section.key=value``.

Unknown keys are an error (a typo must not silently fall back to a default).
Values are validated in ``__post_init__`` and errors name the key path.

Size (~800 lines, over the ~500 aim): one frozen dataclass per ``[section]``,
each field with its documentation string — the reference of every setting,
read by ``msgin5g serve --help``-level users and by examples/msgin5g.toml's
test. The sections of the network peers (``[nef]``, ``[peers]``) live in
:mod:`msgin5g.config_network`; the loader and the core sections stay here.
"""

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from msgin5g.config_network import NefConfig, PeersConfig
from msgin5g.errors import ConfigError
from msgin5g.spec.delivery import MSGIN5G_SERVICE_ID

__all__ = [
    "DEFAULT_TARGET_NETWORKS",
    "ClusterConfig",
    "CoapConfig",
    "DeliveryConfig",
    "IPNetwork",
    "LimitsConfig",
    "LogConfig",
    "MqttConfig",
    "NefConfig",
    "PeersConfig",
    "RestConfig",
    "SealConfig",
    "ServerConfig",
    "StorageConfig",
    "TopicsConfig",
    "load_config",
    "parse_hostport",
]


def parse_hostport(text: str, *, default_port: int = 5683) -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``[V6]:PORT``, ``HOST`` or ``:PORT``.

    Raises:
        ConfigError: the text is not an address.
    """
    text = text.strip()
    host, port = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"invalid address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        number = int(port) if port else default_port
    except ValueError:
        raise ConfigError(f"invalid port in {text!r}") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"port out of range in {text!r}")
    return host or "0.0.0.0", number


_TRI_STATE = frozenset({"auto", "true", "false", "1", "0", "yes", "no", "on", "off"})


@dataclass(frozen=True, slots=True)
class CoapConfig:
    """MSGin5G-1 CoAP listener."""

    bind: str = "0.0.0.0:5683"
    """Address and UDP port to listen on (``HOST:PORT``; ``[::]:5683`` for IPv6)."""
    reuse_port: bool = False
    """Open the socket with ``SO_REUSEPORT`` (set for the processes of
    ``--workers N``, which share one port)."""
    native_socket: bool = True
    """Read and write the listener's UDP socket in C (``recvmmsg``; compiled
    installs, ``msgin5g.coap._udpio``): the socket's ICMP error queue is then
    drained where uvloop never sees it (uvloop 0.23 crashes on one it reads
    itself). False runs the event loop's own datagram transport, as before
    2026-12-05: an escape hatch and a baseline for benchmarks, with that
    crash's narrow window. A pure Python install always uses the loop's."""
    send_thread: bool = False
    """Send the listener's datagrams from a thread of their own (C, compiled at
    install; the event loop copies each datagram into a queue and the kernel's
    sending work runs on another core: ~15 % more messages/s at saturation,
    docs/performance.md). Off by default: at half load it adds ~1 ms to p99.
    ICMP errors are read with it too (on the native socket); with
    ``native_socket = false`` or a pure Python install there is no thread."""
    service_id: str = MSGIN5G_SERVICE_ID
    """The MSGin5G service identifier (digest §1.2, a PROJECT CHOICE value): a
    ``msgin5gServiceId`` a client sends must equal it (else 4.00). It is also the
    SEAL VAL service ID (``seal.val_service_id`` follows it unless set)."""
    max_payload: int = 4096
    """Largest request payload in octets; larger gets 4.13 (digest §5.5)."""
    max_concurrent_requests: int = 20000
    """Requests being processed at once before the server answers 5.03."""
    recv_buffer: int = 4 * 1024 * 1024
    """SO_RCVBUF/SO_SNDBUF of the socket (PERFORMANCE.md: the default drops)."""
    ack_timeout: float = 2.0
    """RFC 7252 ACK_TIMEOUT for server-originated CON requests (seconds)."""
    max_retransmit: int = 4
    """RFC 7252 MAX_RETRANSMIT for server-originated CON requests."""
    source_rate: float = 1.0
    """Flood control: datagrams per second allowed from one source (IP, port)
    that has no registered UE; excess datagrams are dropped before decoding,
    without a reply. 0 turns flood control off (docs/security-coap.md)."""
    source_burst: int = 8
    """Flood control: datagrams a source without a registered UE may send at
    once before ``source_rate`` applies."""
    trusted_rate: float = 20000.0
    """Flood control: datagrams per second allowed from a source a UE is
    registered from (a gateway or a busy UE)."""
    trusted_burst: int = 20000
    """Flood control: burst size of a source a UE is registered from."""
    max_sources: int = 65536
    """Flood control: sources remembered at once (~400 B each); beyond, new
    sources share one overflow bucket of ``64 * source_rate`` per second."""
    dedup_max_bytes: int = 32 * 1024 * 1024
    """Bound of the RFC 7252 duplicate-detection cache of encoded responses, in
    bytes (replies plus ~160 B per entry); the cache rotates early when full."""
    oscore: bool = True
    """Accept OSCORE-protected requests (RFC 8613) on the CoAP port; each UE's
    context is derived from its provisioned credential (docs/security-oscore.md)."""
    oscore_max_contexts: int = 65536
    """OSCORE security contexts held in memory (~1 KiB each); the least recently
    derived beyond it is dropped and re-derived on its next request (Echo)."""

    secure_bind: str = ""
    """Address and UDP port of ``coaps://`` (DTLS 1.2 PSK, RFC 7925; usually
    ``0.0.0.0:5684``); empty: no secure transport (docs/security-dtls.md)."""
    allow_insecure: str = "auto"
    """Serve plain CoAP on ``bind`` too: ``true``/``false``; ``auto`` means
    only when no ``secure_bind`` is set. Plain CoAP is for lab use: the
    credential travels in clear and requests are authorised by source address."""
    psk_store: str = "./msgin5g-psk.db"
    """SQLite file of the DTLS pre-shared keys (sealed, see ``psk_key_file``)."""
    psk_key_file: str = ""
    """Server key that seals ``psk_store`` (32 octets hex, mode 0600; created
    when missing); empty: ``psk_store`` + ``.key``."""
    dtls_key_length: int = 32
    """DTLS PSK of a UE = the first N characters of its PSK_TOKEN text (16 to
    32): Mbed TLS (the server's DTLS) takes keys up to 32 octets, tinydtls
    (aiocoap, RIOT, Contiki devices) up to 16; set 16 when such devices use
    ``coaps://`` (96 bits instead of 192, docs/security-dtls.md)."""
    dtls_max_sessions: int = 10000
    """DTLS sessions (established or handshaking) held at once (~60 KiB each)."""
    dtls_max_per_host: int = 256
    """DTLS sessions held for one IP address (devices behind one NAT share it)."""
    dtls_max_handshakes: int = 1000
    """DTLS handshakes in progress at once (after the cookie exchange)."""
    dtls_handshake_timeout: float = 30.0
    """Seconds a DTLS handshake may take before it is dropped."""
    dtls_idle_timeout: float = 3600.0
    """Seconds a DTLS session may stay silent before it is closed (the device
    then does a new handshake, cheap with PSK)."""

    def __post_init__(self) -> None:
        parse_hostport(self.bind)
        self._check_secure()
        if self.oscore_max_contexts < 1:
            raise ConfigError("coap.oscore_max_contexts: must be at least 1")
        if not 0 < len(self.service_id) <= 255 or not self.service_id.isprintable():
            raise ConfigError("coap.service_id: 1 to 255 printable characters")
        if self.source_rate < 0:
            raise ConfigError("coap.source_rate: must not be negative (0: off)")
        if self.source_burst < 1 or self.trusted_burst < 1:
            raise ConfigError("coap.source_burst/trusted_burst: must be at least 1")
        if self.trusted_rate <= 0:
            raise ConfigError("coap.trusted_rate: must be positive")
        if self.max_sources < 2:
            raise ConfigError("coap.max_sources: must be at least 2")
        if self.dedup_max_bytes < 4096:
            raise ConfigError("coap.dedup_max_bytes: must be at least 4096")
        if self.max_payload < 64:
            raise ConfigError("coap.max_payload: must be at least 64")
        if self.max_concurrent_requests < 1:
            raise ConfigError("coap.max_concurrent_requests: must be positive")
        if self.ack_timeout <= 0:
            raise ConfigError("coap.ack_timeout: must be positive")
        if self.max_retransmit < 0:
            raise ConfigError("coap.max_retransmit: must not be negative")

    @property
    def address(self) -> tuple[str, int]:
        """``bind`` as (host, port)."""
        return parse_hostport(self.bind)

    def _check_secure(self) -> None:
        """Validate the ``coaps://`` settings."""
        if self.secure_bind:
            parse_hostport(self.secure_bind, default_port=5684)
        if self.allow_insecure.strip().lower() not in _TRI_STATE:
            raise ConfigError("coap.allow_insecure: true, false or auto")
        if not 16 <= self.dtls_key_length <= 32:
            raise ConfigError("coap.dtls_key_length: 16 to 32")
        for name in (
            "dtls_max_sessions",
            "dtls_max_per_host",
            "dtls_max_handshakes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"coap.{name}: must be positive")
        if self.dtls_handshake_timeout <= 0 or self.dtls_idle_timeout <= 0:
            raise ConfigError("coap.dtls_*_timeout: must be positive")

    @property
    def secure_address(self) -> tuple[str, int] | None:
        """``secure_bind`` as (host, port), or None when there is none."""
        if not self.secure_bind:
            return None
        return parse_hostport(self.secure_bind, default_port=5684)

    @property
    def insecure_allowed(self) -> bool:
        """Whether plain CoAP is served (``allow_insecure``, ``auto`` resolved)."""
        value = self.allow_insecure.strip().lower()
        if value == "auto":
            return not self.secure_bind
        return value in {"true", "1", "yes", "on"}


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Where registrations and accepted messages are kept."""

    url: str = "sqlite:///./msgin5g.db"
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db``, ``memory:`` or
    ``nats://[user:password@]host:port[?prefix=...&replicas=...]`` (NATS
    JetStream, shared by a cluster; options in ``docs/cluster.md``)."""
    synchronous: str = "FULL"
    """SQLite ``PRAGMA synchronous``: FULL fsyncs every group commit, NORMAL
    survives process crashes but may lose the last commits on power loss."""
    commit_interval: float = 0.0
    """SQLite: least seconds between the starts of two group commits (0: none).
    0.002 lets more writes share a commit at moderate load (about a fifth less
    writer CPU per message at 3,000 msgs/s) for up to 2 ms more latency."""
    writer_cache_mib: int = 16
    """SQLite: page cache of the writer connection (MiB), memory the server keeps
    once it has filled; more makes duplicate-detection claims in a large table
    cheaper (docs/performance.md, "Memory per registered idle UE")."""

    def __post_init__(self) -> None:
        if not (
            self.url.startswith(("sqlite:", "nats://", "tls://"))
            or self.url == "memory:"
        ):
            raise ConfigError(f"storage.url: unsupported URL {self.url!r}")
        if self.synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ConfigError("storage.synchronous: one of OFF, NORMAL, FULL, EXTRA")
        if not 0 <= self.commit_interval <= 1:
            raise ConfigError("storage.commit_interval: seconds in [0, 1]")
        if not 1 <= self.writer_cache_mib <= 65536:
            raise ConfigError("storage.writer_cache_mib: MiB in [1, 65536]")


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Store-and-forward, reports and authentication policy."""

    default_ttl: float = 86400.0
    """Lifetime of a stored message without ``messageExpirationTime`` (s, 24 h)."""
    max_ttl: float = 7 * 86400.0
    """Cap on any stored message's lifetime (s, 7 days)."""
    report_wait: float = 86400.0
    """How long the server waits for a recipient's IMDN (s, IMDN_WAIT)."""
    dedup_window: float = 86400.0
    """Window for duplicate (originator, messageId) detection (s)."""
    dedup_max_entries: int = 1_000_000
    """Bound on message IDs remembered in memory; the oldest generation is
    dropped first. Stored messages stay deduplicated through storage."""
    dedup_max_bytes: int = 64 * 1024 * 1024
    """Bound on the memory of the in-memory duplicate cache (octets, estimated
    per entry: key, fingerprint, encoded ``MSGRESP`` and dict slot, ~340 B)."""
    sweep_interval: float = 1.0
    """How often expired stored messages are looked for (s)."""
    retry_interval: float = 300.0
    """How often delivery is retried to registered but unreachable UEs (s)."""
    credential_cache_ttl: float = 30.0
    """How long a looked-up credential is cached; ``ue remove`` takes effect
    within this time on a running server (s)."""
    allow_auth_none: bool = False
    """Accept ``authType: NONE`` (test beds only)."""
    as_retry_initial: float = 1.0
    """First back-off after a failed delivery to an Application Server (s);
    doubled after every further failure up to ``as_retry_max``."""
    as_retry_max: float = 60.0
    """Longest back-off between delivery attempts to an unreachable AS (s)."""
    segment_size: int = 2048
    """Largest downlink payload per ``MSG`` for a UE that announced no
    ``maxSegmentSize``; larger messages are segmented (TS 23.554 §8.5.1)."""
    aggregate_downlink: bool = True
    """Bundle small queued messages (or reports) for one UE from one originator
    into one ``AGGMSG`` (``AGGIMDN``) when several are waiting (§8.4.3)."""
    aggregate_max_items: int = 50
    """Most items in one downlink aggregate."""
    aggregate_max_octets: int = 4096
    """Estimated encoded size an aggregate may reach (payloads plus ~160 octets
    per item), so it stays within a client's CoAP payload limit."""
    aggregate_max_item_octets: int = 256
    """Largest payload of a message that may be aggregated (AGG_MAX_ITEM)."""
    reassembly_gap_timer: float = 30.0
    """Seconds without a new segment before the server sends ``SEGREC``."""
    group_cache_ttl: float = 5.0
    """How long a looked-up group is cached (GROUP_CACHE_TTL, s); group changes
    made with ``msgin5g group`` reach a running server within this time."""
    topic_default_lifetime: float = 86400.0
    """Subscription lifetime when ``TOPICSUB`` has no ``expiration`` (s, 24 h)."""
    topic_max_lifetime: float = 30 * 86400.0
    """Cap on any topic subscription's lifetime (s, 30 days)."""
    reassembly_timeout: float = 300.0
    """Seconds after the first segment before an incomplete set is given up."""
    group_include_originator: bool = False
    """Send a copy of a group message to its originator too (TS 23.554 §8.7.4
    leaves it open; default: the originator is excluded)."""
    observe_con_every: int = 1
    """Observe notifications (RFC 7641): every Nth notification is CON, the
    others NON; 1 = all CON (a lost NON is not retransmitted)."""
    transit_hold: float = 0.2
    """Transit path (docs/design.md): a message that asks for no storage, to
    a UE that can take it at once, is delivered first and written only if its
    delivery takes longer than this (s); the sender's answer waits for the
    delivery or the write, whichever comes first. 0: every message is written
    before delivery starts."""

    def __post_init__(self) -> None:
        for name in ("default_ttl", "max_ttl", "report_wait", "dedup_window"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"delivery.{name}: must be positive")
        if self.dedup_max_entries < 2 or self.dedup_max_bytes < 4096:
            raise ConfigError(
                "delivery.dedup_max_entries: >= 2; delivery.dedup_max_bytes: >= 4096"
            )
        if self.default_ttl > self.max_ttl:
            raise ConfigError("delivery.default_ttl: must not exceed max_ttl")
        if self.sweep_interval <= 0 or self.retry_interval <= 0:
            raise ConfigError("delivery.sweep_interval/retry_interval: positive")
        if not 0 <= self.transit_hold <= 10:
            raise ConfigError("delivery.transit_hold: 0 to 10 seconds")
        if self.observe_con_every < 1:
            raise ConfigError("delivery.observe_con_every: must be >= 1")
        if not 0 < self.as_retry_initial <= self.as_retry_max:
            raise ConfigError(
                "delivery.as_retry_initial: positive and at most as_retry_max"
            )


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TARGET_NETWORKS = (
    "0.0.0.0/0, ::/0, !169.254.0.0/16, !fe80::/10, !0.0.0.0/8, !::/128"
)
"""Default ``rest.target_networks``: anything but link-local and unspecified."""


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Storage quotas and submission rate (docs/security-limits.md).

    Beyond a limit a message is refused with ``failureCause =
    SERVER_CONGESTION`` (digest §5.2) in its ``MSGRESP``; the REST APIs answer
    429. 0 means unlimited for every field but ``submit_burst``.
    """

    stored_per_recipient: int = 10_000
    """Most messages and reports stored for one recipient (UE or AS mailbox)."""
    stored_bytes_per_recipient: int = 16 * 1024 * 1024
    """Most octets stored for one recipient: payloads plus 256 per item."""
    stored_bytes_total: int = 2 * 1024 * 1024 * 1024
    """Most octets stored for all recipients together (same measure); keeps
    the disk from filling, which would stop every UE's writes."""
    submit_rate: float = 2000.0
    """Messages per second one UE may submit (token bucket). Application
    Servers are limited per client by ``rest.rate_limit`` instead (an AS sending
    A2P at thousands of messages per second is normal)."""
    submit_burst: int = 4000
    """Bucket size of ``submit_rate`` (messages)."""

    def __post_init__(self) -> None:
        for name in (
            "stored_per_recipient",
            "stored_bytes_per_recipient",
            "stored_bytes_total",
            "submit_rate",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"limits.{name}: must not be negative (0: no limit)")
        if self.submit_burst < 1:
            raise ConfigError("limits.submit_burst: must be >= 1")


@dataclass(frozen=True, slots=True)
class RestConfig:
    """TS 29.538 northbound HTTP APIs (MSGS_ASRegistration, MSGS_MSGDelivery)."""

    enabled: bool = True
    """Serve the HTTP APIs beside CoAP (same process and event loop)."""
    bind: str = "127.0.0.1:8080"
    """TCP address of the HTTP server (HTTP/1.1 and h2c on the same port).
    Loopback by default: open it to the network only with ``oauth2 = true``."""
    reuse_port: bool = False
    """Open the listening socket with ``SO_REUSEPORT`` (``--workers N``)."""
    server: str = "granian"
    """ASGI server: ``granian`` (measured 2-3x faster, docs/rest.md) or
    ``hypercorn`` (pure Python)."""
    api_root: str = ""
    """``{apiRoot}`` used in ``Location`` headers (e.g. ``https://msg.example``);
    empty: taken from the request's Host."""
    oauth2: bool = False
    """Require an OAuth2 bearer token (client credentials, TS 29.538 §10) on
    every API call; tokens come from ``POST /oauth2/token``."""
    token_lifetime: float = 3600.0
    """Lifetime of an issued access token (s); JWTs cannot be revoked earlier."""
    jwt_issuer: str = "msgin5g"
    """``iss`` of the access tokens (RFC 9068); the same on every node."""
    jwt_audience: str = "msgin5g"
    """``aud`` of the access tokens; a token for another audience is refused."""
    jwt_key_file: str = ""
    """PEM RSA private key (>= 2048 bits) signing the access tokens, the same
    file on every node; empty: a key kept in the server's storage
    (docs/security-rest.md)."""
    tls_cert: str = ""
    """PEM certificate chain: serve the APIs over TLS (HTTP/1.1 and h2 by ALPN);
    needs ``tls_key``. Empty: cleartext HTTP."""
    tls_key: str = ""
    """PEM private key of ``tls_cert``."""
    rate_limit: float = 0.0
    """Requests per second allowed per AS (token bucket); 0 = unlimited.
    Beyond it the server answers 429 with Retry-After."""
    rate_burst: int = 100
    """Bucket size of the per-AS rate limit (requests)."""
    max_body: int = 65536
    """Largest request body (octets); larger gets 413."""
    delivery_timeout: float = 10.0
    """Timeout of one POST to an AS's targetUri (s)."""
    target_networks: str = DEFAULT_TARGET_NETWORKS
    """Where the server may POST on a client's behalf (``targetUri``): comma-
    separated CIDR networks, an entry starting with ``!`` excludes a network.
    An address is allowed when it is in an allowed network and in no excluded
    one (IPv4-mapped IPv6 addresses are checked as IPv4). Checked at
    registration (``400``, also for each address a hostname resolves to) and at
    every delivery (the server connects only to an address it checked). The
    default allows everything (loopback too) except link-local
    (``169.254.0.0/16``, where cloud metadata services live, ``fe80::/10``)
    and the unspecified/"this host" addresses."""
    max_tokens_per_client: int = 100
    """Unused since access tokens became stateless JWTs (RFC 9068): nothing is
    kept per token. Accepted so that existing configuration files stay valid."""
    auth_failure_burst: int = 10
    """Failed token requests allowed at once per client id and per source IP
    before the token endpoint answers ``429`` with ``Retry-After``."""
    auth_failure_rate: float = 0.2
    """Failed token requests per second regained by a client id / source IP
    after the burst is used (token bucket)."""
    header_timeout: float = 10.0
    """Seconds a connection may take to send a complete request head (the
    first one and each one on a kept-alive connection); the server closes it
    after that (slowloris). Granian: ``header_read_timeout``; Hypercorn:
    ``read_timeout``."""
    max_connections: int = 8192
    """Connections the HTTP server handles at once (Granian ``backpressure``,
    Hypercorn backlog); more wait in the kernel's accept queue."""
    max_in_flight: int = 128
    """Messages the delivery APIs hold in the service at once (waiting for
    storage and routing); one more is answered ``503`` + ``Retry-After`` at
    once (back-pressure instead of an unbounded queue, docs/performance.md)."""

    def __post_init__(self) -> None:
        parse_hostport(self.bind, default_port=8080)
        self.target_policy  # noqa: B018 - validates the list
        if self.max_tokens_per_client < 1 or self.auth_failure_burst < 1:
            raise ConfigError(
                "rest.max_tokens_per_client/auth_failure_burst: at least 1"
            )
        if self.auth_failure_rate <= 0 or self.header_timeout <= 0:
            raise ConfigError("rest.auth_failure_rate/header_timeout: positive")
        if self.max_connections < 16 or self.max_in_flight < 1:
            raise ConfigError("rest.max_connections: >= 16; max_in_flight: >= 1")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("rest.tls_cert and rest.tls_key: give both or neither")
        if self.server not in {"granian", "hypercorn"}:
            raise ConfigError("rest.server: one of granian, hypercorn")
        if self.token_lifetime <= 0 or self.delivery_timeout <= 0:
            raise ConfigError("rest.token_lifetime/delivery_timeout: positive")
        if self.rate_limit < 0 or self.rate_burst < 1:
            raise ConfigError("rest.rate_limit: >= 0; rest.rate_burst: >= 1")
        if self.max_body < 1024:
            raise ConfigError("rest.max_body: must be at least 1024")

    @property
    def address(self) -> tuple[str, int]:
        """``bind`` as (host, port)."""
        return parse_hostport(self.bind, default_port=8080)

    @property
    def target_policy(self) -> tuple[tuple[IPNetwork, ...], tuple[IPNetwork, ...]]:
        """``target_networks`` parsed: (allowed networks, excluded networks).

        Raises:
            ConfigError: an entry is not a CIDR network.
        """
        allowed: list[IPNetwork] = []
        denied: list[IPNetwork] = []
        for raw in self.target_networks.split(","):
            entry = raw.strip()
            if not entry:
                continue
            into = denied if entry.startswith("!") else allowed
            try:
                into.append(ipaddress.ip_network(entry.lstrip("!").strip()))
            except ValueError:
                raise ConfigError(
                    f"rest.target_networks: {entry!r} is not a CIDR network"
                ) from None
        return tuple(allowed), tuple(denied)


@dataclass(frozen=True, slots=True)
class SealConfig:
    """SEAL group management (TS 23.434, TS 29.549 SS_GroupManagement)."""

    gm_url: str = ""
    """``{apiRoot}`` of an external SEAL group management server (e.g.
    ``http://seal.example:8080``); groups are then resolved there with
    ``GET {gm_url}/ss-gm/v1/group-documents?val-group-id=…``. Empty: msgin5g
    hosts the groups itself and serves the API at ``/ss-gm/v1``."""
    val_service_id: str = MSGIN5G_SERVICE_ID
    """VAL service identifier of the MSGin5G Service (``val-service-id``). TS
    23.554 makes it the MSGin5G service identifier: unless set, it is
    ``coap.service_id`` (so one setting changes both)."""
    timeout: float = 5.0
    """Timeout of one request to the external group management server (s)."""

    def __post_init__(self) -> None:
        if self.gm_url and not self.gm_url.startswith(("http://", "https://")):
            raise ConfigError("seal.gm_url: an http:// or https:// URL, or empty")
        if self.timeout <= 0:
            raise ConfigError("seal.timeout: positive")


@dataclass(frozen=True, slots=True)
class TopicsConfig:
    """Messaging topic access control (docs/security-topics.md)."""

    owner_prefix: bool = True
    """A topic whose first level (before the first ``/``) is the Service ID of a
    provisioned or registered UE belongs to that UE, and ``as/<AS Service
    ID>/…`` to that AS: only the owner publishes and subscribes unless
    ``msgin5g topic allow`` grants others."""
    open_namespace: bool = True
    """Topics without an owner: every registered UE and AS may publish and
    subscribe (true), or only those granted with ``msgin5g topic allow``
    (false)."""
    policy_cache_ttl: float = 5.0
    """How long topic rules are cached (s); changes made with ``msgin5g topic``
    reach a running server within this time."""

    def __post_init__(self) -> None:
        if self.policy_cache_ttl < 0:
            raise ConfigError("topics.policy_cache_ttl: must not be negative")


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """MSGin5G-1 over MQTT 5 through an existing broker (docs/mqtt.md)."""

    url: str = ""
    """Broker URL: ``mqtt://HOST[:PORT]`` (1883) or ``mqtts://HOST[:PORT]`` (8883,
    TLS). Empty: the MQTT binding is off."""
    username: str = ""
    """User name the server authenticates with (the broker's ACL gives this user
    ``{prefix}/up/#`` and ``{prefix}/ue/#``; ``msgin5g mqtt acl``)."""
    password: str = ""
    """Its password (prefer ``MSGIN5G_MQTT_PASSWORD`` to a file)."""
    ca_file: str = ""
    """PEM CA bundle that signs the broker's certificate (mqtts; default: the
    system's trust store)."""
    cert_file: str = ""
    """PEM client certificate, when the broker asks for one (mqtts)."""
    key_file: str = ""
    """PEM private key of ``cert_file``."""
    tls_insecure: bool = False
    """Skip the broker's host name check (test beds only)."""
    client_id: str = ""
    """MQTT client identifier; default ``msgin5g-server-<random>`` (unique per
    process, so several servers can share the load)."""
    topic_prefix: str = "msgin5g"
    """First topic level(s) of every MSGin5G topic."""
    share_group: str = "msgin5g"
    """Shared subscription group (``$share/<group>/<prefix>/up/#``): servers in one
    group share the uplink load. Empty: a plain subscription (one server only)."""
    keepalive: int = 30
    """MQTT keep-alive (s)."""
    connect_timeout: float = 10.0
    """How long start-up waits for the broker before failing (s)."""
    ack_timeout: float = 30.0
    """How long a downlink publication waits for the UE's answer on its ack topic
    before the UE counts as unreachable (store and forward, s)."""
    max_payload: int = 4096
    """Largest uplink payload in octets (as ``coap.max_payload``); larger is
    answered ``4.13 PAYLOAD_TOO_LARGE``."""
    max_concurrent_requests: int = 1000
    """Uplink requests processed at once; beyond, ``5.03 SERVER_CONGESTION``."""

    def __post_init__(self) -> None:
        if self.url and not self.url.startswith(("mqtt://", "mqtts://")):
            raise ConfigError("mqtt.url: an mqtt:// or mqtts:// URL, or empty")
        if self.url:
            self._check_url()
        levels = self.topic_prefix.split("/")
        if not all(lv and not any(c in lv for c in "+#$") for lv in levels):
            raise ConfigError("mqtt.topic_prefix: topic levels without + # $")
        if any(c in self.share_group for c in "/+#"):
            raise ConfigError("mqtt.share_group: no / + #")
        if self.keepalive < 5 or self.connect_timeout <= 0 or self.ack_timeout <= 0:
            raise ConfigError(
                "mqtt: keepalive >= 5, connect_timeout and ack_timeout positive"
            )
        if self.max_payload < 256 or self.max_concurrent_requests < 1:
            raise ConfigError("mqtt: max_payload >= 256, max_concurrent_requests >= 1")

    def _check_url(self) -> None:
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ConfigError(f"mqtt.url: {exc}") from None
        if not parts.hostname:
            raise ConfigError(f"mqtt.url: no broker host in {self.url!r}")


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Logging."""

    level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""

    def __post_init__(self) -> None:
        if self.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError("log.level: one of DEBUG, INFO, WARNING, ERROR")


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Membership of a cluster of msgin5g nodes on NATS JetStream (docs/cluster.md)."""

    node_id: str = ""
    """This node's name in the cluster (letters, digits, ``-``, ``_``); empty: a
    single process, which owns every UE. Needs ``storage.url = "nats://..."``."""
    lease: float = 10.0
    """Seconds after its last heartbeat at which a node (and so the CoAP contact
    of the UEs registered at it) is considered dead."""
    workers: int = 1
    """Worker processes sharing the CoAP and HTTP ports with ``SO_REUSEPORT``;
    0 = one per core. More than one needs ``storage.url = "nats://..."``."""

    def __post_init__(self) -> None:
        if self.node_id and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.node_id):
            raise ConfigError("cluster.node_id: 1-64 letters, digits, '-' or '_'")
        if not 1.0 <= self.lease <= 3600.0:
            raise ConfigError("cluster.lease: between 1 and 3600 seconds")
        if not 0 <= self.workers <= 256:
            raise ConfigError("cluster.workers: between 0 (one per core) and 256")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything ``msgin5g serve`` needs."""

    coap: CoapConfig = field(default_factory=CoapConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    rest: RestConfig = field(default_factory=RestConfig)
    seal: SealConfig = field(default_factory=SealConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    log: LogConfig = field(default_factory=LogConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self) -> None:
        shared = self.storage.url.split(":", 1)[0].lower() in {"nats", "tls"}
        if self.cluster.workers != 1 and not shared:
            raise ConfigError(
                "cluster.workers: more than one worker needs storage on NATS "
                "JetStream (--storage nats://HOST:4222); SQLite is the "
                "single-process default"
            )
        if self.cluster.node_id and not shared:
            raise ConfigError(
                "cluster.node_id: a cluster node needs storage on NATS JetStream "
                "(--storage nats://HOST:4222)"
            )

    nef: NefConfig = field(default_factory=NefConfig)
    peers: PeersConfig = field(default_factory=PeersConfig)


_T = TypeVar("_T")


def _coerce(section: str, key: str, target: type[Any] | str, value: Any) -> Any:
    kind = target if isinstance(target, str) else target.__name__
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(text)
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        return str(value)
    except ValueError:
        raise ConfigError(f"{section}.{key}: expected {kind}, got {value!r}") from None


def _build(cls: type[_T], section: str, values: Mapping[str, Any]) -> _T:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{section}.{key}: unknown key")
        kwargs[key] = _coerce(section, key, fields[key].type, value)
    return cls(**kwargs)


_SECTIONS: dict[str, type[Any]] = {
    "coap": CoapConfig,
    "storage": StorageConfig,
    "delivery": DeliveryConfig,
    "limits": LimitsConfig,
    "rest": RestConfig,
    "seal": SealConfig,
    "topics": TopicsConfig,
    "mqtt": MqttConfig,
    "log": LogConfig,
    "cluster": ClusterConfig,
    "nef": NefConfig,
    "peers": PeersConfig,
}


_SHORTCUTS = {"MSGIN5G_COAP": ("coap", "bind"), "MSGIN5G_HTTP": ("rest", "bind")}


def _one_service_id(merged: dict[str, dict[str, Any]]) -> None:
    """``seal.val_service_id`` follows ``coap.service_id`` unless set itself.

    TS 23.554 uses the MSGin5G service identifier as the SEAL VAL service ID
    (digest §1.2): one setting changes both.
    """
    if "service_id" in merged["coap"]:
        merged["seal"].setdefault("val_service_id", merged["coap"]["service_id"])


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """Build the server configuration.

    Args:
        path: TOML file, or None for defaults only.
        environ: environment (``MSGIN5G_*`` variables are read from it).
        overrides: ``{"section.key": value}`` from the command line (highest).

    Raises:
        ConfigError: unreadable file, unknown key or invalid value.
    """
    merged: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    if path is not None:
        try:
            document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        for name, table in document.items():
            if name not in _SECTIONS or not isinstance(table, dict):
                raise ConfigError(f"{name}: unknown section")
            merged[name].update(table)
    for var, value in (environ or {}).items():
        if var in _SHORTCUTS:
            section, key = _SHORTCUTS[var]
            merged[section][key] = value
            continue
        if not var.startswith("MSGIN5G_") or var.startswith("MSGIN5G_TEST_"):
            continue
        rest = var[len("MSGIN5G_") :].lower()
        section, _, key = rest.partition("_")
        if section in _SECTIONS and key:
            merged[section][key] = value
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in _SECTIONS or not key:
            raise ConfigError(f"{dotted}: expected section.key")
        merged[section][key] = value
    _one_service_id(merged)
    built = {name: _build(cls, name, merged[name]) for name, cls in _SECTIONS.items()}
    return ServerConfig(**built)
