"""Groups resolved at an external SEAL group management server (digest §5.2).

:class:`SealGroupSource` implements the
:class:`~msgin5g.service.groups.GroupSource` port with httpx: when
``seal.gm_url`` is set, ``server/app.py`` gives it to the group registry, which
asks ``GET {gm_url}/ss-gm/v1/group-documents`` with the query
``val-group-id=<Group Service ID>&val-service-id=<seal.val_service_id>``
(TS 29.549 ``RetrieveValGroupDocs``) and caches the answer for
``delivery.group_cache_ttl`` seconds.

* ``200`` with an array: the documents of the group (an empty array, or a
  ``404``, means an unknown group → ``GROUP_NOT_FOUND``). The answer is read
  leniently: documents of another ``valGroupId`` or without the MSGin5G VAL
  service in ``valServiceIds`` are skipped, and so are members that carry
  neither exactly one ``valUserId`` (a valid UE Service ID) nor a ``valUeId``
  (each logged at WARNING), so one odd entry does not silence a whole group.
* A connection error, a timeout (``seal.timeout``), any other status or an
  answer that is not a JSON array → :class:`~msgin5g.errors.RecipientUnreachable`:
  the registry then uses a stale cached answer if it has one, else the message
  fails (``5.03`` on MSGin5G-1, ``503`` on the TS 29.538 APIs) with a log line.

No OAuth2 token is sent (the YAML's security allows ``{}``); the deployment
protects the link (loopback, TLS, network policy).
"""

import logging
from typing import Any

import httpx

from msgin5g.config import SealConfig
from msgin5g.errors import RecipientUnreachable
from msgin5g.service.groups import GroupDocument, ValTarget, serves

__all__ = ["SealGroupSource"]

log = logging.getLogger(__name__)

_PATH = "/ss-gm/v1/group-documents"


def _service_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= 255
        and not any(c in value for c in "/+#")
    )


def _target(member: object) -> ValTarget | None:
    if not isinstance(member, dict):
        return None
    user, ue = member.get("valUserId"), member.get("valUeId")
    if ue is None and _service_id(user):
        return ValTarget(val_user_id=user)
    if user is None and isinstance(ue, str) and 0 < len(ue) <= 255:
        return ValTarget(val_ue_id=ue)
    return None


def _document(
    item: dict[str, Any], group_id: str, val_service_id: str, origin: str
) -> GroupDocument | None:
    if item.get("valGroupId") != group_id:
        log.warning("%s: skipped a document of another group", origin)
        return None
    service_ids = item.get("valServiceIds")
    document = GroupDocument(
        group_id,
        service_ids=(
            [s for s in service_ids if isinstance(s, str)]
            if isinstance(service_ids, list)
            else None
        ),
    )
    if not serves(document, val_service_id):
        log.warning("%s: skipped a document not enabled for %s", origin, val_service_id)
        return None
    members = item.get("members")
    targets: list[ValTarget] = []
    for member in members if isinstance(members, list) else []:
        target = _target(member)
        if target is None:
            log.warning("%s: skipped member %.100r of %s", origin, member, group_id)
        else:
            targets.append(target)
    return document.with_targets(targets)


class SealGroupSource:
    """``GroupSource`` asking a SEAL group management server over HTTP."""

    def __init__(
        self,
        config: SealConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.location: str | None = config.gm_url
        self._url = config.gm_url.rstrip("/") + _PATH
        self._client = httpx.AsyncClient(
            timeout=config.timeout,
            headers={"User-Agent": "msgin5g", "Accept": "application/json"},
            transport=transport,
        )

    async def find(self, group_id: str, val_service_id: str) -> list[GroupDocument]:
        """The group's documents for ``val_service_id``; see the module docstring."""
        params = {"val-group-id": group_id, "val-service-id": val_service_id}
        try:
            response = await self._client.get(self._url, params=params)
        except httpx.HTTPError as exc:
            raise RecipientUnreachable(
                f"group management server {self._url}: {type(exc).__name__}"
            ) from exc
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise RecipientUnreachable(
                f"group management server {self._url} answered {response.status_code}"
            )
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, list):
            raise RecipientUnreachable(
                f"group management server {self._url}: the answer is not a "
                "JSON array of VALGroupDocument"
            )
        documents = [
            _document(item, group_id, val_service_id, self._url)
            for item in payload
            if isinstance(item, dict)
        ]
        return [d for d in documents if d is not None]

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
