"""Delivery towards Application Servers over HTTP (digest §3.11; ``ASDeliverer`` port).

The Rel-18 OpenAPI defines no callback for server → AS traffic; the project POSTs
to the AS's registered ``targetUri``:

* messages (P2A, and AS-to-AS) — ``UEMessageDelivery`` / ``ASMessageDelivery``
  to ``{targetUri}/deliver-message``;
* delivery status reports (for the AS's A2P messages) — ``DeliveryStatusReport``
  to ``{targetUri}/deliver-report``.

Outcome mapping (the delivery engine retries with back-off, see
``service/delivery.py``): ``2xx`` delivered; connection error, timeout, ``408``,
``429`` or ``5xx`` → :class:`RecipientUnreachable` (kept, retried); any other
``4xx`` → :class:`DeliveryRejected` (dropped with a failure report).

One ``httpx.AsyncClient`` (connection pool, keep-alive, HTTP/1.1) serves all ASs.
"""

import logging

import httpx

from msgin5g.codec.openapi_json import report_from_imdn, ue_delivery_from_msg
from msgin5g.errors import DeliveryRejected, RecipientUnreachable
from msgin5g.model.messages import Imdn, Msg

__all__ = ["HttpASDeliverer"]

log = logging.getLogger(__name__)

_RETRYABLE = {408, 425, 429}


class HttpASDeliverer:
    """``ASDeliverer`` implemented with an httpx connection pool."""

    def __init__(self, timeout: float = 10.0) -> None:
        self._client = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            headers={"User-Agent": "msgin5g"},
        )

    async def deliver_to_as(self, target_uri: str, item: Msg | Imdn) -> None:
        """POST ``item`` below ``target_uri``; see the module docstring."""
        if isinstance(item, Msg):
            url = target_uri.rstrip("/") + "/deliver-message"
            body = ue_delivery_from_msg(item).model_dump_json(
                by_alias=True, exclude_none=True
            )
        else:
            url = target_uri.rstrip("/") + "/deliver-report"
            body = report_from_imdn(item).model_dump_json(
                by_alias=True, exclude_none=True
            )
        try:
            response = await self._client.post(
                url, content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise RecipientUnreachable(f"{url}: {type(exc).__name__}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in _RETRYABLE or status >= 500:
            raise RecipientUnreachable(f"{url} answered {status}")
        raise DeliveryRejected(f"{url} answered {status}")

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
