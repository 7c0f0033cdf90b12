"""Who an uplink claims to be: the one rule the CoAP transport's checks share."""

__all__ = ["originator"]


def originator(uplink: object) -> str | None:
    """The UE Service ID an uplink names as its sender, or None.

    ``originatingUeServiceId`` for messages and reports, ``ueServiceId`` for
    registrations and subscriptions.
    """
    for name in ("originating_ue_service_id", "ue_service_id"):
        value = getattr(uplink, name, None)
        if isinstance(value, str):
            return value
    return None
