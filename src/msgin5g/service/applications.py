"""Application Server registry (TS 23.554 §8.2.5/§8.2.6; digest §2.5, §3.4).

Registrations are records of kind ``"as-registration"`` keyed by AS Service ID in
the backend's :class:`~msgin5g.storage.base.RecordStore` (durable before the AS
gets its ``201``), and a dict in memory (loaded at start-up) that routing reads.
OAuth2 clients provisioned with ``msgin5g as add`` are records of kind
``"as-client"``; they are read from the backend on every token request, so a
client added by another process works at once.

Rules (digest §2.5, §3.4 [P]):

* a second registration of an AS Service ID that is registered is refused with
  ``403`` / ``AS_ALREADY_REGISTERED``; the AS de-registers first;
* with OAuth2 every API client has a role (:class:`~msgin5g.model.application.ASClient`):
  an ``as`` client may register only its own AS Service ID (client id = AS
  Service ID), an ``operator`` any; a registration may be removed by the
  client that made it, by the AS's own client or by an operator (else ``403``);
* ``targetUri`` must be an ``http``/``https`` URI whose address is in
  ``rest.target_networks`` (:class:`TargetNetworks`; a hostname is resolved
  and each of its addresses checked); messages and reports for the AS are
  POSTed below it (digest §3.11), and the check is made again at delivery.

The clients' records are remembered when they authenticate (token request), so
the role of a token's client is known without a storage read per request.
"""

import asyncio
import ipaddress
import logging
import secrets
import socket
from urllib.parse import urlsplit

from msgin5g.config import DEFAULT_TARGET_NETWORKS, IPNetwork, RestConfig
from msgin5g.errors import InvalidRequest, NotAuthorized, NotRegistered
from msgin5g.model.application import ROLE_AS, ROLES, ASClient, ASRegistration
from msgin5g.model.credentials import credential_digest, verify_credential
from msgin5g.runtime import Clock
from msgin5g.spec.causes import FailureCause
from msgin5g.storage.base import Backend

__all__ = [
    "AS_CLIENT_KIND",
    "AS_REGISTRATION_KIND",
    "DEFAULT_NETWORKS",
    "ApplicationRegistry",
    "TargetNetworks",
]

log = logging.getLogger(__name__)

AS_REGISTRATION_KIND = "as-registration"
AS_CLIENT_KIND = "as-client"
_RESOLVE_TIMEOUT = 2.0


class TargetNetworks:
    """The networks the server may POST to on a client's behalf (``rest.target_networks``)."""

    def __init__(
        self, allowed: tuple[IPNetwork, ...], denied: tuple[IPNetwork, ...]
    ) -> None:
        self._allowed = allowed
        self._denied = denied

    @classmethod
    def from_config(cls, config: RestConfig) -> "TargetNetworks":
        """The policy of a REST configuration."""
        allowed, denied = config.target_policy
        return cls(allowed, denied)

    def allows(self, address: str) -> bool:
        """Whether an IP address (text, IPv6 zone allowed) may be connected to."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._allowed) and not any(
            ip in net for net in self._denied
        )

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every address of ``host`` (an IP literal: itself), in resolver order.

        Raises:
            OSError: the name does not resolve (or not within 2 s).
        """
        literal = host.strip("[]")
        try:
            ipaddress.ip_address(literal.split("%", 1)[0])
        except ValueError:
            pass
        else:
            return [literal]
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM),
                _RESOLVE_TIMEOUT,
            )
        except TimeoutError:
            raise OSError(f"resolving {host} timed out") from None
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    async def check_uri(self, uri: str) -> None:
        """Refuse a ``targetUri`` that is unusable or points outside the networks.

        A hostname that does not resolve now is accepted (it is checked again,
        resolved, at every delivery).

        Raises:
            InvalidRequest: not an http(s) URI, or an address not allowed.
        """
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError:
            raise InvalidRequest("targetUri is not a valid URI") from None
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise InvalidRequest("targetUri must be an http:// or https:// URI")
        default = 443 if parts.scheme == "https" else 80
        try:
            addresses = await self.resolve(parts.hostname, port or default)
        except OSError as exc:
            log.info("targetUri host %s not resolved now: %s", parts.hostname, exc)
            return
        refused = [a for a in addresses if not self.allows(a)]
        if refused:
            raise InvalidRequest(
                f"targetUri host {parts.hostname} is {refused[0]}, outside the "
                "networks this server delivers to (rest.target_networks)"
            )


DEFAULT_NETWORKS = TargetNetworks.from_config(
    RestConfig(target_networks=DEFAULT_TARGET_NETWORKS)
)


class ApplicationRegistry:
    """Registered Application Servers and provisioned OAuth2 clients."""

    def __init__(self, backend: Backend, clock: Clock) -> None:
        self._backend = backend
        self._clock = clock
        self._by_as: dict[str, ASRegistration] = {}
        self._by_id: dict[str, ASRegistration] = {}
        self._clients: dict[str, ASClient] = {}
        self.target_networks = DEFAULT_NETWORKS
        """Checked for every ``targetUri`` (set from ``rest.target_networks``)."""

    async def load(self) -> None:
        """Fill the in-memory table from the backend (start-up)."""
        for reg in await self._backend.load_records(
            AS_REGISTRATION_KIND, ASRegistration
        ):
            self._by_as[reg.as_service_id] = reg
            self._by_id[reg.registration_id] = reg
        log.info("loaded %d AS registrations", len(self._by_as))

    def __len__(self) -> int:
        return len(self._by_as)

    async def refresh(self, as_service_id: str) -> None:
        """Re-read one AS registration another cluster node changed."""
        stored = await self._backend.get_record(
            AS_REGISTRATION_KIND, as_service_id, ASRegistration
        )
        held = self._by_as.pop(as_service_id, None)
        if held is not None:
            self._by_id.pop(held.registration_id, None)
        if stored is not None:
            self._by_as[as_service_id] = stored
            self._by_id[stored.registration_id] = stored

    def get(self, as_service_id: str) -> ASRegistration | None:
        """The registration of an AS Service ID, or None."""
        return self._by_as.get(as_service_id)

    async def register(
        self,
        as_service_id: str,
        *,
        application_id: str | None,
        target_uri: str | None,
        profile: str,
        owner: str | None,
    ) -> ASRegistration:
        """Store a new AS registration durably and return it.

        Raises:
            InvalidRequest: unusable ``targetUri``.
            NotAuthorized: registered already, or the client may not act for it.
        """
        if not as_service_id or "/" in as_service_id or len(as_service_id) > 255:
            raise InvalidRequest("asSvcId must be 1-255 characters without '/'")
        if not self.may_act_for_as(owner, as_service_id):
            raise NotAuthorized(f"client {owner} may not register {as_service_id}")
        if target_uri is not None:
            await self.target_networks.check_uri(target_uri)
        if as_service_id in self._by_as:
            raise NotAuthorized(
                f"{as_service_id} is already registered",
                cause=FailureCause.AS_ALREADY_REGISTERED,
            )
        reg = ASRegistration(
            registration_id=secrets.token_hex(8),
            as_service_id=as_service_id,
            registered_at=self._clock.now(),
            application_id=application_id,
            target_uri=target_uri,
            profile=profile,
            owner=owner,
        )
        self._by_as[as_service_id] = reg
        self._by_id[reg.registration_id] = reg
        try:
            await self._backend.put_record(AS_REGISTRATION_KIND, as_service_id, reg)
        except BaseException:
            self._by_as.pop(as_service_id, None)
            self._by_id.pop(reg.registration_id, None)
            raise
        return reg

    def check_deregistration(
        self, registration_id: str, requester: str | None
    ) -> ASRegistration:
        """The registration ``requester`` may remove.

        Raises:
            NotRegistered: no such registration (``APPLICATION_NOT_FOUND``).
            NotAuthorized: it belongs to another client.
        """
        reg = self._by_id.get(registration_id)
        if reg is None:
            raise NotRegistered(
                f"no registration {registration_id}",
                cause=FailureCause.APPLICATION_NOT_FOUND,
            )
        if not (
            requester is None
            or requester == reg.owner
            or self.may_act_for_as(requester, reg.as_service_id)
        ):
            raise NotAuthorized(f"registration {registration_id} is not yours")
        return reg

    async def deregister(self, reg: ASRegistration) -> None:
        """Remove a registration (durably)."""
        self._by_as.pop(reg.as_service_id, None)
        self._by_id.pop(reg.registration_id, None)
        await self._backend.delete_record(AS_REGISTRATION_KIND, reg.as_service_id)

    # OAuth2 clients ---------------------------------------------------------------

    async def add_client(
        self,
        client_id: str,
        secret: str,
        *,
        role: str = ROLE_AS,
        ues: list[str] | None = None,
    ) -> None:
        """Provision an OAuth2 client (``msgin5g as add``).

        Raises:
            InvalidRequest: unknown role, or UEs given for a role that has none.
        """
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
        if ues and role != "gateway":
            raise InvalidRequest("only a gateway client serves UEs")
        client = ASClient(
            client_id=client_id,
            secret_digest=credential_digest(secret),
            role=role,
            ues=list(ues or ()),
        )
        await self._backend.put_record(AS_CLIENT_KIND, client_id, client)

    async def authenticate(self, client_id: str, secret: str) -> ASClient | None:
        """The client record if ``secret`` is its provisioned secret, else None.

        The record is remembered: it decides what the client's tokens may do.
        """
        client = await self._backend.get_record(AS_CLIENT_KIND, client_id, ASClient)
        if client is None or not verify_credential(secret, client.secret_digest):
            return None
        self._clients[client_id] = client
        return client

    async def verify_client(self, client_id: str, secret: str) -> bool:
        """Whether ``secret`` is the provisioned secret of ``client_id``."""
        return await self.authenticate(client_id, secret) is not None

    def client(self, client_id: str) -> ASClient:
        """The last authenticated record of a client (unknown: an ``as`` client)."""
        known = self._clients.get(client_id)
        if known is None:
            return ASClient(client_id=client_id, secret_digest=b"")
        return known

    def may_act_for_as(self, client_id: str | None, as_service_id: str) -> bool:
        """Whether a client (None: OAuth2 off) may act for an AS."""
        return client_id is None or self.client(client_id).acts_for_as(as_service_id)

    def check_acting(self, as_service_id: str, client_id: str | None) -> None:
        """The check every request an AS makes starts with.

        Raises:
            NotAuthorized: ``client_id`` may not act for ``as_service_id``.
            NotRegistered: the AS is not registered.
        """
        if not self.may_act_for_as(client_id, as_service_id):
            raise NotAuthorized(f"client {client_id} may not act for {as_service_id}")
        if as_service_id not in self._by_as:
            raise NotRegistered(f"AS {as_service_id} is not registered")

    def serves_ue(self, client_id: str | None, ue_service_id: str) -> bool:
        """Whether a client (None: OAuth2 off) may send and report for a UE."""
        return client_id is None or self.client(client_id).serves_ue(ue_service_id)
