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
* with OAuth2 the registering client owns the registration: an AS may register
  only its own AS Service ID (client id = AS Service ID) and only the owner may
  de-register (``403``);
* ``targetUri`` must be an ``http``/``https`` URI; messages and reports for the AS
  are POSTed below it (digest §3.11).
"""

import logging
import secrets
from urllib.parse import urlsplit

from msgin5g.errors import InvalidRequest, NotAuthorized, NotRegistered
from msgin5g.model.application import ASClient, ASRegistration
from msgin5g.model.credentials import credential_digest, verify_credential
from msgin5g.service.ports import Clock
from msgin5g.spec.causes import FailureCause
from msgin5g.storage.base import Backend

__all__ = ["AS_CLIENT_KIND", "AS_REGISTRATION_KIND", "ApplicationRegistry"]

log = logging.getLogger(__name__)

AS_REGISTRATION_KIND = "as-registration"
AS_CLIENT_KIND = "as-client"


def _check_target_uri(uri: str) -> None:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InvalidRequest("targetUri is not a valid URI") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidRequest("targetUri must be an http:// or https:// URI")


class ApplicationRegistry:
    """Registered Application Servers and provisioned OAuth2 clients."""

    def __init__(self, backend: Backend, clock: Clock) -> None:
        self._backend = backend
        self._clock = clock
        self._by_as: dict[str, ASRegistration] = {}
        self._by_id: dict[str, ASRegistration] = {}

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
        if target_uri is not None:
            _check_target_uri(target_uri)
        if owner is not None and owner != as_service_id:
            raise NotAuthorized(f"client {owner} may not register {as_service_id}")
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
        if requester is not None and reg.owner is not None and reg.owner != requester:
            raise NotAuthorized(f"registration {registration_id} is not yours")
        return reg

    async def deregister(self, reg: ASRegistration) -> None:
        """Remove a registration (durably)."""
        self._by_as.pop(reg.as_service_id, None)
        self._by_id.pop(reg.registration_id, None)
        await self._backend.delete_record(AS_REGISTRATION_KIND, reg.as_service_id)

    # OAuth2 clients ---------------------------------------------------------------

    async def add_client(self, client_id: str, secret: str) -> None:
        """Provision an OAuth2 client (``msgin5g as add``)."""
        client = ASClient(client_id=client_id, secret_digest=credential_digest(secret))
        await self._backend.put_record(AS_CLIENT_KIND, client_id, client)

    async def verify_client(self, client_id: str, secret: str) -> bool:
        """Whether ``secret`` is the provisioned secret of ``client_id``."""
        client = await self._backend.get_record(AS_CLIENT_KIND, client_id, ASClient)
        return client is not None and verify_credential(secret, client.secret_digest)
