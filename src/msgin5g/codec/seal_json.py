"""TS 29.549 SS_GroupManagement JSON: the VAL group document schemas (digest §5.1).

The pydantic v2 models below are the wire schemas of
``TS29549_SS_GroupManagement.yaml`` (``VALGroupDocument``,
``VALGroupDocumentPatch``) and ``TS29549_SS_UserProfileRetrieval.yaml``
(``ValTargetUe``), with the class and member names of the official files
(``tests/interop/test_openapi_ss_gm.py`` compares them). FastAPI validates the
hosted API's bodies with them; :func:`merge_patch` is RFC 7396 on JSON values.

Design choices:

* ``valGroupId`` is an MSGin5G Group Service ID, so it follows the Service ID
  rule (1-255 characters without ``/``, ``+``, ``#``; digest §1.2); so does a
  ``valUserId`` (a UE Service ID). A ``valUeId`` (MSGin5G UE ID) is 1-255
  characters. ``ValTargetUe`` carries exactly one of them (the schema's
  ``oneOf``).
* ``locInfo`` and ``addLocInfo`` are checked one level deep (their member
  types); deeper structures (geographic areas, civic addresses, …) are kept as
  sent without interpretation. Members the schema does not name are kept too
  (``extra="allow"``), so a document reads back as it was written.
* ``VALGroupDocumentPatch`` has no ``valGroupId``: a merge patch cannot rename a
  group; members the patch schema does not name are ignored.
"""

from typing import Annotated, Any

from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "LocationArea5G",
    "LocationArea5GPatch",
    "LocationInfo",
    "LocationInfoPatch",
    "VALGroupDocument",
    "VALGroupDocumentPatch",
    "ValTargetUe",
    "merge_patch",
]

ServiceIdText = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^/+#]+$")
]
"""A Group / UE Service ID (digest §1.2)."""

UeIdText = Annotated[str, StringConstraints(min_length=1, max_length=255)]
"""An MSGin5G UE ID."""

Int32 = Annotated[int, Field(ge=0, le=2**31 - 1)]


class _Seal(BaseModel):
    """Base: camelCase JSON names; members the schema does not name are kept."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        populate_by_name=True,
        extra="allow",
        frozen=True,
    )

    def wire(self) -> dict[str, Any]:
        """The JSON object (aliases, absent members omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _SealRequest(_Seal):
    """Base of documents sent to the API: an optional member is not nullable.

    No TS 29.549 schema says ``nullable: true``, so a named member sent as
    ``null`` is a ``400`` (absent is fine). :class:`VALGroupDocumentPatch` is
    the exception: there ``null`` removes a member (RFC 7396).
    """

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("null is not allowed (the schema is not nullable)")
        return value


class ValTargetUe(_SealRequest):
    """``ValTargetUe``: a VAL user ID (UE Service ID) or a VAL UE ID."""

    model_config = ConfigDict(extra="ignore")

    val_user_id: ServiceIdText | None = None
    val_ue_id: UeIdText | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "ValTargetUe":
        if (self.val_user_id is None) == (self.val_ue_id is None):
            raise ValueError("exactly one of valUserId and valUeId")
        return self


class _LocationInfoMembers(_Seal):
    """The members of ``LocationInfo`` (TS 29.122 MonitoringEvent)."""

    age_of_location_info: Int32 | None = None
    cell_id: str | None = None
    enode_b_id: str | None = Field(default=None, alias="enodeBId")
    routing_area_id: str | None = None
    tracking_area_id: str | None = None
    plmn_id: str | None = None
    twan_id: str | None = None
    user_location: dict[str, Any] | None = None
    geographic_area: dict[str, Any] | None = None
    civic_address: dict[str, Any] | None = None
    position_method: str | None = None
    qos_fulfil_ind: str | None = None
    ue_velocity: dict[str, Any] | None = None
    ldr_type: str | None = None
    achieved_qos: dict[str, Any] | None = None
    related_applicationlayer_id: str | None = None
    range_direction: dict[str, Any] | None = None
    twodrelative_location: dict[str, Any] | None = None
    threedrelative_location: dict[str, Any] | None = None
    relative_velocity: dict[str, Any] | None = None
    up_cum_evt_rep: dict[str, Any] | None = None


class LocationInfo(_LocationInfoMembers, _SealRequest):
    """``LocationInfo`` (TS 29.122 MonitoringEvent), checked one level deep."""


class LocationInfoPatch(_LocationInfoMembers):
    """``LocationInfo`` in a merge patch: ``null`` removes a member (RFC 7396)."""


class _LocationArea5GMembers(_Seal):
    """The members of ``LocationArea5G`` (TS 29.122 CommonData)."""

    geographic_areas: list[dict[str, Any]] | None = None
    civic_addresses: list[dict[str, Any]] | None = None
    nw_area_info: dict[str, Any] | None = None


class LocationArea5G(_LocationArea5GMembers, _SealRequest):
    """``LocationArea5G`` (TS 29.122 CommonData), checked one level deep."""


class LocationArea5GPatch(_LocationArea5GMembers):
    """``LocationArea5G`` in a merge patch: ``null`` removes a member (RFC 7396)."""


class VALGroupDocument(_SealRequest):
    """``VALGroupDocument``: a VAL group (= MSGin5G group) and its members."""

    val_group_id: ServiceIdText
    grp_desc: str | None = None
    members: list[ValTargetUe] | None = Field(default=None, min_length=1)
    val_grp_conf: str | None = None
    val_service_ids: list[str] | None = Field(default=None, min_length=1)
    val_svc_inf: str | None = None
    supp_feat: Annotated[str, StringConstraints(pattern=r"^[A-Fa-f0-9]*$")] | None = (
        None
    )
    res_uri: str | None = None
    loc_info: LocationInfo | None = None
    add_loc_info: LocationArea5G | None = None
    val_svc_area_id: str | None = None
    ext_grp_id: str | None = None
    com_5g_lan_type: str | None = Field(default=None, alias="com5GLanType")


class VALGroupDocumentPatch(_Seal):
    """``VALGroupDocumentPatch``: the members a merge patch may change."""

    model_config = ConfigDict(extra="ignore")

    grp_desc: str | None = None
    members: list[ValTargetUe] | None = Field(default=None, min_length=1)
    val_grp_conf: str | None = None
    val_service_ids: list[str] | None = Field(default=None, min_length=1)
    loc_info: LocationInfoPatch | None = None
    add_loc_info: LocationArea5GPatch | None = None
    val_svc_area_id: str | None = None
    ext_grp_id: str | None = None
    com_5g_lan_type: str | None = Field(default=None, alias="com5GLanType")

    def changes(self) -> dict[str, Any]:
        """The patch as JSON: members sent, ``None`` for the ones to remove."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 §2 ``MergePatch(Target, Patch)`` on JSON values."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result
