"""MSGin5G UE configuration (TS 24.538 §6.2, §7.2; TS 23.554 §8.1.2, §8.1.4; digest §3.1).

The configuration document of TS 24.538 §7.2.3 has three elements:
``<MSGin5G-Server-address>`` (shall), ``<MSGin5G-UE-Service-id>`` (shall) and
``<Segment-size>`` (may). The standard carries it through SEAL configuration
management over HTTP/XCAP (TS 24.546), which is out of scope here; the project
serves the same content from the MSGin5G Server itself (PROJECT CHOICE, see
``docs/gateway.md``):

* a UE that asks with a ``CONFREQ`` (its UE Service ID and credential) gets a
  ``CONFRESP`` with the three elements, or ``result = FAILURE`` and a cause;
* a Gateway UE asks once for the constrained UEs behind it (bulk configuration,
  TS 23.554 §8.1.4) with a ``BULKCONFREQ``: the gateway authenticates, each entry
  carries the constrained UE's own credential and gets its own ``CONFRESP``;
* :func:`render_document` produces the XML document of §7.2.3 with the namespace
  of §7.2.4.2, for a requester that asks for ``application/xml``.

The UE Service ID in the document is the identity the server will accept in
``REG`` (digest §3.1.2 "server" step 2), so only provisioned UEs that prove their
credential get a document.
"""

import logging
from xml.sax.saxutils import escape

from msgin5g.model.messages import BulkConfReq, BulkConfResp, ConfReq, ConfResp
from msgin5g.model.segmentation import DEFAULT_SEGMENT_SIZE
from msgin5g.service.registry import Registry
from msgin5g.spec.causes import FailureCause, Result

__all__ = ["CONFIG_NAMESPACE", "ConfigurationService", "render_document"]

log = logging.getLogger(__name__)

CONFIG_NAMESPACE = "urn:3gpp:ns:seal:MSGin5GUEConfig:1.0"
"""XML namespace of the MSGin5G extension (TS 24.538 §7.2.4.2)."""


class ConfigurationService:
    """Builds configuration documents for authenticated UEs.

    Args:
        registry: provisioned credentials (and current registrations).
        segment_size: the ``<Segment-size>`` every document carries.
    """

    def __init__(
        self, registry: Registry, *, segment_size: int = DEFAULT_SEGMENT_SIZE
    ) -> None:
        self._registry = registry
        self.segment_size = segment_size

    async def configure(self, request: ConfReq, server_address: str) -> ConfResp:
        """The document for one UE, or a failure with the authentication cause."""
        ue = request.ue_service_id
        cause = await self._registry.authenticate(ue, request.ue_credential_info)
        if cause is not None:
            log.info("configuration for %s refused: %s", ue, cause)
            return _failure(ue, cause)
        return ConfResp(
            ue_service_id=ue,
            result=Result.SUCCESS,
            msgin5g_server_address=server_address,
            segment_size=self.segment_size,
        )

    async def bulk_configure(
        self, bulk: BulkConfReq, server_address: str
    ) -> BulkConfResp:
        """Documents for the constrained UEs behind a gateway (TS 23.554 §8.1.4).

        The gateway authenticates first; if it cannot, every entry fails with
        ``NOT_AUTHORIZED``. Each entry is then authenticated on its own.
        """
        gateway = bulk.ue_service_id
        refusal = await self._registry.authenticate(gateway, bulk.ue_credential_info)
        responses: list[ConfResp] = []
        for entry in bulk.conf_requests:
            if refusal is not None:
                responses.append(
                    _failure(entry.ue_service_id, FailureCause.NOT_AUTHORIZED)
                )
            else:
                responses.append(await self.configure(entry, server_address))
        if refusal is not None:
            log.warning("bulk configuration from %s refused: %s", gateway, refusal)
        return BulkConfResp(
            num_of_conf_responses=len(responses), conf_responses=responses
        )


def _failure(ue: str, cause: FailureCause) -> ConfResp:
    return ConfResp(ue_service_id=ue, result=Result.FAILURE, failure_cause=cause.value)


def render_document(response: ConfResp) -> str:
    """The XML configuration document of TS 24.538 §7.2.3 for a successful response.

    Raises:
        ValueError: ``response`` is a failure (there is no document to render).
    """
    if response.result != Result.SUCCESS or response.msgin5g_server_address is None:
        raise ValueError("no configuration document for a failed request")
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<seal-UE-configuration xmlns:m5g="{CONFIG_NAMESPACE}">',
        "  <on-network>",
        "    <m5g:MSGin5G-Server-address>"
        f"{escape(response.msgin5g_server_address)}</m5g:MSGin5G-Server-address>",
        "    <m5g:MSGin5G-UE-Service-id>"
        f"{escape(response.ue_service_id)}</m5g:MSGin5G-UE-Service-id>",
    ]
    if response.segment_size is not None:
        lines.append(
            f"    <m5g:Segment-size>{response.segment_size}</m5g:Segment-size>"
        )
    lines += ["  </on-network>", "</seal-UE-configuration>", ""]
    return "\n".join(lines)
