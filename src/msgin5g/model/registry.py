"""Server-side registration state (digest Appendix X1.3 "Server per-UE context")."""

import msgspec

__all__ = ["Contact", "UERegistration"]


class Contact(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """Where the server sends requests to a client: host, port and Uri-Path."""

    host: str
    port: int
    path: tuple[str, ...] = ("msgin5g",)


class UERegistration(msgspec.Struct, frozen=True, gc=False):
    """A registered MSGin5G UE.

    Attributes:
        ue_service_id: the UE Service ID (primary routing key).
        source: transport address the REG came from; later uplink must match it.
        contact: where downlink requests go (``clientAddress`` or ``source``).
        registered_at: epoch seconds of the last successful REG.
        refuses_store_and_forward: the UE sent ``storeAndForwardOption``.
        max_segment_size: announced supported segment size, if any.
        profile: the rest of the client profile as JSON text (opaque to routing).
        gateway: UE Service ID of the Gateway UE this UE registered through (bulk
            registration); downlink then goes to the gateway's current contact.
        cell_id: serving cell reported in ``ueLocation`` (broadcast areas).
        tracking_area_id: tracking area reported in ``ueLocation``.
        node: the cluster node that holds this registration and so owns the
            UE's CoAP contact (``""``: a single process, docs/cluster.md).
    """

    ue_service_id: str
    source: Contact
    contact: Contact
    registered_at: float
    refuses_store_and_forward: bool = False
    max_segment_size: int | None = None
    profile: str = "{}"
    gateway: str | None = None
    cell_id: str | None = None
    tracking_area_id: str | None = None
    node: str = ""
