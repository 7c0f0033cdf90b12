"""Application Servers known to the MSGin5G Server (TS 23.554 §8.2.5/§8.2.6).

An AS registers through MSGS_ASRegistration (digest §2.5, §3.4) and is then a
valid message endpoint: Point-to-Application messages and the delivery status
reports of its Application-to-Point messages are POSTed to its ``targetUri``
(digest §3.11).

**Mailbox keys.** The store-and-forward queue and the report routes are keyed by a
plain string. A UE's key is its UE Service ID; an AS's key is ``"as/"`` + its AS
Service ID. A UE Service ID can never contain ``/`` (digest §1.2, enforced by the
``ServiceId`` pattern of :mod:`msgin5g.model.messages`), so the two never collide,
and every storage backend (and every database written before ASs existed) keeps
working unchanged.
"""

import msgspec

from msgin5g.model.credentials import redacted_repr

__all__ = [
    "AS_KEY_PREFIX",
    "ROLES",
    "ROLE_AS",
    "ROLE_GATEWAY",
    "ROLE_OPERATOR",
    "ROLE_PEER",
    "ROLE_SCOPES",
    "SCOPES",
    "ASClient",
    "ASRegistration",
    "as_key",
    "as_of_key",
]

AS_KEY_PREFIX = "as/"
"""Prefix of an AS's mailbox key (see the module docstring)."""


def as_key(as_service_id: str) -> str:
    """The queue / report-route key of an Application Server."""
    return AS_KEY_PREFIX + as_service_id


def as_of_key(key: str) -> str | None:
    """The AS Service ID of a mailbox key, or None for a UE's key."""
    if key.startswith(AS_KEY_PREFIX):
        return key[len(AS_KEY_PREFIX) :]
    return None


class ASRegistration(msgspec.Struct, frozen=True, gc=False):
    """A registered Application Server (digest §2.5, ``ASRegistration``).

    Attributes:
        registration_id: server-allocated id, last segment of the ``Location``.
        as_service_id: the AS Service ID (``asSvcId``), the routing key.
        registered_at: epoch seconds of the registration.
        application_id: ``appId``, if given.
        target_uri: ``targetUri``: base URI for delivery towards the AS; None
            means the AS only sends (messages to it are refused).
        profile: ``asProf`` as JSON text (opaque to routing).
        owner: OAuth2 client id that registered it (None when OAuth2 is off);
            only the owner may de-register it.
    """

    registration_id: str
    as_service_id: str
    registered_at: float
    application_id: str | None = None
    target_uri: str | None = None
    profile: str = "{}"
    owner: str | None = None


ROLE_AS = "as"
"""An Application Server: acts only for the AS Service ID equal to its client id."""
ROLE_GATEWAY = "gateway"
"""A Message Gateway: sends messages and reports for the UEs it serves."""
ROLE_OPERATOR = "operator"
"""The operator: manages every registration and group document."""
ROLE_PEER = "peer"
"""A peer MSGin5G Server (MSGin5G-8, docs/federation.md): its client id is its
domain; it sends messages and reports for the UEs ``*@<domain>``."""
ROLES = (ROLE_AS, ROLE_GATEWAY, ROLE_OPERATOR, ROLE_PEER)

SCOPES = (
    "msgs-asregistration",
    "msgs-msgdelivery",
    "msgs-topicsub",
    "msgg-bgdelivery",
    "ss-gm",
    "msgs-gwregistration",
)
"""OAuth2 scopes (RFC 6749 §3.3): one per API, named after its path segment."""

ROLE_SCOPES: dict[str, frozenset[str]] = {
    ROLE_AS: frozenset(SCOPES) - {"msgs-gwregistration"},
    ROLE_GATEWAY: frozenset(
        {"msgs-msgdelivery", "msgg-bgdelivery", "msgs-gwregistration"}
    ),
    ROLE_OPERATOR: frozenset(SCOPES),
    ROLE_PEER: frozenset({"msgs-msgdelivery"}),
}
"""The scopes a role may hold; a token request without ``scope`` gets them all."""


class ASClient(msgspec.Struct, frozen=True, gc=False):
    """An OAuth2 client provisioned with ``msgin5g as add`` (TS 29.538 §10).

    Attributes:
        client_id: the client id; for the ``as`` role the AS Service ID it acts for.
        secret_digest: SHA-256 of the client secret (the secret is never stored).
        role: ``as`` (records written before roles existed load as ``as``),
            ``gateway`` or ``operator`` (docs/security-rest.md).
        ues: for a ``gateway``, the UEs it serves: exact UE Service IDs, or
            prefixes ending in ``*`` (``plant7-*``; ``*`` alone: every UE).
    """

    client_id: str
    secret_digest: bytes
    role: str = ROLE_AS
    ues: list[str] = []

    def __repr__(self) -> str:
        return redacted_repr(self, "secret_digest")

    @property
    def scopes(self) -> frozenset[str]:
        """The scopes this client's role allows (none for an unknown role)."""
        return ROLE_SCOPES.get(self.role, frozenset())

    def acts_for_as(self, as_service_id: str) -> bool:
        """Whether this client may act for (register, send as, …) an AS."""
        if self.role == ROLE_OPERATOR:
            return True
        return self.role == ROLE_AS and self.client_id == as_service_id

    def serves_ue(self, ue_service_id: str) -> bool:
        """Whether this client may send messages and reports for a UE."""
        if self.role == ROLE_OPERATOR:
            return True
        if self.role == ROLE_PEER:
            _, at, domain = ue_service_id.rpartition("@")
            return bool(at) and domain.lower() == self.client_id.lower()
        if self.role != ROLE_GATEWAY:
            return False
        return any(_matches(pattern, ue_service_id) for pattern in self.ues)


def _matches(pattern: str, ue_service_id: str) -> bool:
    if pattern.endswith("*"):
        return ue_service_id.startswith(pattern[:-1])
    return pattern == ue_service_id
