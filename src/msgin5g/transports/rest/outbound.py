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

Every POST goes only to an address in ``rest.target_networks``
(:class:`~msgin5g.service.applications.TargetNetworks`): the ``targetUri``'s
host is resolved, the first allowed address is used and the request is sent
*to that address* (``Host`` header and TLS server name stay the hostname), so
a name that resolved to an allowed address at registration cannot be rebound
to, say, ``169.254.169.254`` later (DNS rebinding). Resolutions are kept for
30 s. A host with no allowed address → :class:`DeliveryRejected`; a name that
does not resolve → :class:`RecipientUnreachable` (retried).
"""

import logging
import time

import httpx

from msgin5g.codec.openapi_json import report_from_imdn, ue_delivery_from_msg
from msgin5g.errors import DeliveryRejected, RecipientUnreachable
from msgin5g.model.messages import Imdn, Msg
from msgin5g.service.applications import DEFAULT_NETWORKS, TargetNetworks

__all__ = ["HttpASDeliverer"]

log = logging.getLogger(__name__)

_RETRYABLE = {408, 425, 429}
_DNS_TTL = 30.0
_MAX_RESOLVED = 10_000


class HttpASDeliverer:
    """``ASDeliverer`` implemented with an httpx connection pool."""

    def __init__(
        self, timeout: float = 10.0, networks: TargetNetworks | None = None
    ) -> None:
        self._networks = networks or DEFAULT_NETWORKS
        self._resolved: dict[tuple[str, int], tuple[float, str]] = {}
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
        await self.post(url, body)

    async def post(self, url: str, body: str) -> None:
        """POST the JSON ``body`` to ``url``, pinned to a checked address.

        Raises:
            RecipientUnreachable: connection error, timeout, 408/425/429, 5xx.
            DeliveryRejected: another 4xx, or an address outside
                ``rest.target_networks``.
        """
        target, headers, extensions = await self._pinned(url)
        try:
            response = await self._client.post(
                target, content=body, headers=headers, extensions=extensions
            )
        except httpx.HTTPError as exc:
            raise RecipientUnreachable(f"{url}: {type(exc).__name__}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in _RETRYABLE or status >= 500:
            raise RecipientUnreachable(f"{url} answered {status}")
        raise DeliveryRejected(f"{url} answered {status}")

    async def _pinned(
        self, url: str
    ) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
        """``url`` with its host replaced by a checked address, and the headers."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise DeliveryRejected(f"{url}: {exc}") from None
        headers = {"Content-Type": "application/json"}
        host = parsed.host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        now = time.monotonic()
        cached = self._resolved.get((host, port))
        if cached is not None and cached[0] > now:
            address = cached[1]
        else:
            address = await self._check(url, host, port)
            if len(self._resolved) >= _MAX_RESOLVED:
                self._resolved.clear()
            self._resolved[(host, port)] = (now + _DNS_TTL, address)
        if address == host:
            return parsed, headers, {}
        headers["Host"] = parsed.netloc.decode("ascii")
        extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
        return parsed.copy_with(host=address), headers, extensions

    async def _check(self, url: str, host: str, port: int) -> str:
        try:
            addresses = await self._networks.resolve(host, port)
        except OSError as exc:
            raise RecipientUnreachable(f"{url}: {exc}") from exc
        allowed = [a for a in addresses if self._networks.allows(a)]
        if not allowed:
            log.warning("refused to POST to %s: %s not allowed", url, addresses)
            raise DeliveryRejected(
                f"{url}: {host} is {addresses[0] if addresses else '?'}, outside "
                "rest.target_networks"
            )
        return allowed[0]

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
