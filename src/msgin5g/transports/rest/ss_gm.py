"""SS_GroupManagement, ``{apiRoot}/ss-gm/v1`` (TS 29.549 V18.1.0; digest §5.1).

msgin5g hosts the SEAL group management API for its own groups (docs/groups.md):

* ``POST /group-documents`` with a ``VALGroupDocument`` → ``201`` + ``Location``
  + the stored document; a ``valGroupId`` that has a document already → ``403``
  ``GROUP_ALREADY_EXISTS`` (the YAML lists 403, not 409);
* ``GET /group-documents?val-group-id=&val-service-id=`` → ``200`` array (may be
  empty): the resolution query of digest §5.2;
* ``GET /group-documents/{groupDocId}`` → ``200``; with ``group-members=true``
  only ``valGroupId`` + ``members``, with ``group-configuration=true`` only
  ``valGroupId`` + ``valGrpConf`` (both: all three);
* ``PUT /group-documents/{groupDocId}`` → ``200`` + the document (whole
  replacement; the body's ``valGroupId`` must be ``groupDocId``, else ``400``);
* ``PATCH /group-documents/{groupDocId}`` with ``application/merge-patch+json``
  and a ``VALGroupDocumentPatch`` → RFC 7396 on the stored document → ``200``
  + the document (``null`` removes a member; ``members: null`` empties the
  group);
* ``DELETE /group-documents/{groupDocId}`` → ``204``;
* an unknown ``groupDocId`` → ``404`` ``GROUP_NOT_FOUND``.

Ownership (OAuth2 on, docs/security-rest.md): a document records the client
that created it; only that client or an ``operator`` client may read, replace,
patch or delete it (else ``403`` ``NOT_AUTHORIZED``), and the list query
returns only the caller's documents (an operator's: all). Documents created
with OAuth2 off or by ``msgin5g group`` have no owner: only operators manage
them while OAuth2 is on.

PROJECT CHOICES: ``groupDocId`` is the ``valGroupId`` (percent-encoded in
URIs); ``resUri`` is filled with the document's URI in every answer (a value
sent is ignored); ``suppFeat`` is accepted and not echoed (no optional feature
is supported); members keep their order, duplicates are dropped. Every change
drops the group's cached resolution, so the next group message uses it.

When ``seal.gm_url`` names an external group management server, the groups of
this server live there: every operation here answers ``403``
``GROUP_MANAGEMENT_EXTERNAL`` naming that server (serving the unused local
store would let changes silently have no effect).
"""

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from msgin5g.codec.seal_json import (
    VALGroupDocument,
    VALGroupDocumentPatch,
    merge_patch,
)
from msgin5g.errors import DecodeError, InvalidRequest, NotAuthorized
from msgin5g.service.groups import (
    GroupDocument,
    GroupRegistry,
    ValTarget,
    may_manage,
)
from msgin5g.spec.causes import FailureCause
from msgin5g.transports.rest.context import Answer, RestContext
from msgin5g.transports.rest.problems import problem

__all__ = [
    "GROUP_ALREADY_EXISTS",
    "GROUP_MANAGEMENT_EXTERNAL",
    "PREFIX",
    "SCOPE",
    "document_from_wire",
    "router",
    "wire_from_document",
]

SCOPE = "ss-gm"
"""The OAuth2 scope a token needs for this API."""
PREFIX = "/ss-gm/v1"
GROUP_ALREADY_EXISTS = "GROUP_ALREADY_EXISTS"
GROUP_MANAGEMENT_EXTERNAL = "GROUP_MANAGEMENT_EXTERNAL"

_JSON = "application/json"
_RATE_KEY = "ss-gm"
# members of VALGroupDocument kept as fields of GroupDocument (or not kept)
_OWN = frozenset(
    {
        "valGroupId",
        "grpDesc",
        "members",
        "valGrpConf",
        "valServiceIds",
        "valSvcInf",
        "suppFeat",
        "resUri",
    }
)


def document_from_wire(
    body: VALGroupDocument, owner: str | None = None
) -> GroupDocument:
    """The stored form of a validated ``VALGroupDocument`` created by ``owner``."""
    data = body.wire()
    extra = {k: v for k, v in data.items() if k not in _OWN}
    targets = [
        ValTarget(val_user_id=m.val_user_id, val_ue_id=m.val_ue_id)
        for m in body.members or ()
    ]
    document = GroupDocument(
        group_id=body.val_group_id,
        description=body.grp_desc,
        configuration=body.val_grp_conf,
        service_ids=list(body.val_service_ids) if body.val_service_ids else None,
        service_info=body.val_svc_inf,
        extra=json.dumps(extra, separators=(",", ":")) if extra else "",
        owner=owner,
    )
    return document.with_targets(targets)


def _members(document: GroupDocument) -> list[dict[str, str]]:
    return [
        {"valUserId": t.val_user_id}
        if t.val_user_id is not None
        else {"valUeId": t.val_ue_id or ""}
        for t in document.member_targets
    ]


def wire_from_document(
    document: GroupDocument, res_uri: str | None = None
) -> dict[str, Any]:
    """The ``VALGroupDocument`` JSON object of a stored document."""
    data: dict[str, Any] = {"valGroupId": document.group_id}
    optional = {
        "grpDesc": document.description,
        "members": _members(document) or None,
        "valGrpConf": document.configuration,
        "valServiceIds": document.service_ids,
        "valSvcInf": document.service_info,
        "resUri": res_uri,
    }
    data.update((k, v) for k, v in optional.items() if v is not None)
    if document.extra:
        extra = json.loads(document.extra)
        data.update((k, v) for k, v in extra.items() if k not in _OWN)
    return data


def _json(data: object, status: int = 200, location: str | None = None) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")),
        status_code=status,
        media_type=_JSON,
        headers={"Location": location} if location else None,
    )


def _patched(current: GroupDocument, changes: dict[str, Any]) -> GroupDocument:
    """RFC 7396 applied to the wire form of ``current``, validated again."""
    merged = merge_patch(wire_from_document(current), changes)
    try:
        return document_from_wire(VALGroupDocument.model_validate(merged))
    except ValidationError as exc:
        error = exc.errors()[0]
        member = ".".join(str(p) for p in error.get("loc", ())) or "body"
        raise DecodeError(str(error.get("msg", "invalid")), member=member) from None


def router(ctx: RestContext) -> APIRouter:  # noqa: C901 - one closure per operation
    """The SS_GroupManagement routes bound to ``ctx``."""
    api = APIRouter(prefix=PREFIX)
    authorized = ctx.authorize(SCOPE)

    def groups() -> GroupRegistry:
        return ctx.service.groups

    def admit(caller: str | None) -> None:
        """Rate limit; refuse everything while groups live at an external server."""
        ctx.admit(caller, _RATE_KEY)
        external = groups().external
        if external is not None:
            raise Answer(
                problem(
                    403,
                    GROUP_MANAGEMENT_EXTERNAL,
                    f"this server resolves groups at the SEAL group management "
                    f"server {external} (seal.gm_url): manage them there",
                )
            )

    def uri(request: Request, group_id: str) -> str:
        return ctx.location(
            request, f"{PREFIX}/group-documents/{quote(group_id, safe='')}"
        )

    async def change(
        request: Request,
        group_id: str,
        edit: Callable[[GroupDocument], GroupDocument],
        caller: str | None,
    ) -> Response:
        """PUT and PATCH: store ``edit(current)``, answer the stored document."""
        document = await groups().update(
            group_id, edit, client=caller, operator=ctx.is_operator(caller)
        )
        return _json(wire_from_document(document, uri(request, group_id)))

    async def stored(group_id: str) -> GroupDocument:
        document = await groups().document(group_id)
        if document is None:
            raise InvalidRequest(
                f"no VAL group document {group_id}",
                cause=FailureCause.GROUP_NOT_FOUND,
            )
        return document

    @api.post("/group-documents", status_code=201, response_model=None)
    async def create_val_group_doc(
        body: VALGroupDocument,
        request: Request,
        caller: str | None = Depends(authorized),
    ) -> Response:
        admit(caller)
        try:
            document = await groups().create(document_from_wire(body, caller))
        except NotAuthorized as exc:
            return problem(403, GROUP_ALREADY_EXISTS, exc.detail)
        location = uri(request, document.group_id)
        return _json(wire_from_document(document, location), 201, location)

    @api.get("/group-documents", response_model=None)
    async def retrieve_val_group_docs(
        request: Request,
        val_group_id: str | None = Query(None, alias="val-group-id"),
        val_service_id: str | None = Query(None, alias="val-service-id"),
        caller: str | None = Depends(authorized),
    ) -> Response:
        admit(caller)
        documents = await groups().documents(
            group_id=val_group_id, val_service_id=val_service_id
        )
        operator = ctx.is_operator(caller)
        return _json(
            [
                wire_from_document(d, uri(request, d.group_id))
                for d in documents
                if may_manage(d, caller, operator)
            ]
        )

    @api.get("/group-documents/{groupDocId}", response_model=None)
    async def retrieve_ind_val_group_doc(
        groupDocId: str,  # the YAML's parameter name
        request: Request,
        group_members: bool = Query(False, alias="group-members"),
        group_configuration: bool = Query(False, alias="group-configuration"),
        caller: str | None = Depends(authorized),
    ) -> Response:
        admit(caller)
        document = await stored(groupDocId)
        if not may_manage(document, caller, ctx.is_operator(caller)):
            raise NotAuthorized(f"VAL group document {groupDocId} is not yours")
        if not (group_members or group_configuration):
            return _json(wire_from_document(document, uri(request, groupDocId)))
        data: dict[str, Any] = {"valGroupId": document.group_id}
        if group_members and document.member_targets:
            data["members"] = _members(document)
        if group_configuration and document.configuration is not None:
            data["valGrpConf"] = document.configuration
        return _json(data)

    @api.put("/group-documents/{groupDocId}", response_model=None)
    async def update_ind_val_group_doc(
        groupDocId: str,
        body: VALGroupDocument,
        request: Request,
        caller: str | None = Depends(authorized),
    ) -> Response:
        admit(caller)
        if body.val_group_id != groupDocId:
            return problem(
                400,
                FailureCause.INVALID_MESSAGE,
                "valGroupId must be the groupDocId of the document",
                invalid=[("valGroupId", f"must be {groupDocId}")],
            )
        replacement = document_from_wire(body)
        return await change(request, groupDocId, lambda _: replacement, caller)

    @api.patch("/group-documents/{groupDocId}", response_model=None)
    async def modify_ind_val_group_doc(
        groupDocId: str,
        body: VALGroupDocumentPatch,
        request: Request,
        caller: str | None = Depends(authorized),
    ) -> Response:
        admit(caller)
        changes = body.changes()
        return await change(
            request, groupDocId, lambda current: _patched(current, changes), caller
        )

    @api.delete("/group-documents/{groupDocId}", status_code=204, response_model=None)
    async def delete_ind_val_group_doc(
        groupDocId: str, caller: str | None = Depends(authorized)
    ) -> Response:
        admit(caller)
        if not await groups().delete(
            groupDocId, client=caller, operator=ctx.is_operator(caller)
        ):
            raise InvalidRequest(
                f"no VAL group document {groupDocId}",
                cause=FailureCause.GROUP_NOT_FOUND,
            )
        return Response(status_code=204)

    return api
