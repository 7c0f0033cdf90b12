"""MSGin5G-8 towards a peer MSGin5G Server over its TS 29.538 MSGS_MSGDelivery API.

Implements :class:`msgin5g.service.peers.PeerDeliverer` (docs/federation.md):

* a UE's message → ``POST {apiRoot}/msgs-msgdelivery/v1/deliver-ue-message``
  (``UEMessageDelivery``; the peer answers ``200 MessageDeliveryAck``);
* a delivery status report → ``POST {apiRoot}/msgs-msgdelivery/v1/deliver-report``
  (``DeliveryStatusReport``).

Authentication: with ``peers.client_id`` an OAuth2 client-credentials token is
fetched from ``{apiRoot}/oauth2/token`` of each peer (scope
``msgs-msgdelivery``; the peer provisions this server as a ``peer`` client named
after its domain) and sent as a bearer token; the peer does the same towards us,
so each side authenticates the other. ``https`` routes verify the peer's
certificate (``peers.ca_file``) and present ``peers.cert_file`` for mutual TLS.

Outcome mapping (the delivery engine keeps and retries, see service/delivery.py):
``200`` with ``status`` absent, ``DELY_ACCEPTED`` or ``DELY_STORED`` → handed
over; ``200`` with ``DELY_FAILED``/``DELY_REJECTED`` → :class:`DeliveryRejected`
carrying the peer's ``failureCause``; connection error, timeout, ``408``,
``429``, ``5xx`` → :class:`RecipientUnreachable`; ``401`` → one new token and
one more try; any other ``4xx`` → :class:`DeliveryRejected` (the peer's
ProblemDetails ``cause`` when it is a known failure cause).
"""

import logging
from typing import Any

import httpx

from msgin5g.codec.openapi_json import report_from_imdn, ue_delivery_from_msg
from msgin5g.config_network import PeersConfig
from msgin5g.errors import DeliveryRejected, RecipientUnreachable
from msgin5g.model.messages import Imdn, Msg
from msgin5g.spec.causes import FailureCause
from msgin5g.transports.rest.oauth_client import TokenSource

__all__ = ["HttpPeerDeliverer"]

log = logging.getLogger(__name__)

_PREFIX = "/msgs-msgdelivery/v1"
_RETRYABLE = {408, 425, 429}
_FAILED = {"DELY_FAILED", "DELY_REJECTED"}


def _cause(text: object) -> FailureCause:
    try:
        return FailureCause(str(text))
    except ValueError:
        return FailureCause.RECIPIENT_NOT_REACHABLE


class HttpPeerDeliverer:
    """One httpx pool towards every peer server."""

    def __init__(self, config: PeersConfig) -> None:
        self._config = config
        verify: Any = config.ca_file or True
        cert = (config.cert_file, config.key_file) if config.cert_file else None
        self._client = httpx.AsyncClient(
            timeout=config.timeout,
            verify=verify,
            cert=cert,
            headers={"User-Agent": "msgin5g"},
        )
        self._tokens: dict[str, TokenSource] = {}

    def _token_source(self, api_root: str) -> TokenSource | None:
        if not self._config.client_id:
            return None
        source = self._tokens.get(api_root)
        if source is None:
            source = self._tokens[api_root] = TokenSource(
                self._client,
                api_root + "/oauth2/token",
                self._config.client_id,
                self._config.client_secret,
                scope="msgs-msgdelivery",
            )
        return source

    async def deliver_to_peer(self, api_root: str, item: Msg | Imdn) -> None:
        """POST ``item`` to the peer; see the module docstring for outcomes."""
        if isinstance(item, Msg):
            if item.originating_ue_service_id is None:
                raise DeliveryRejected(
                    "only UE messages cross to peers", cause=FailureCause.NOT_AUTHORIZED
                )
            url = api_root + _PREFIX + "/deliver-ue-message"
            body = ue_delivery_from_msg(item).model_dump_json(
                by_alias=True, exclude_none=True
            )
        else:
            url = api_root + _PREFIX + "/deliver-report"
            body = report_from_imdn(item).model_dump_json(
                by_alias=True, exclude_none=True
            )
        tokens = self._token_source(api_root)
        response = await self._post(url, body, tokens)
        if response.status_code == 401 and tokens is not None:
            tokens.invalidate()
            response = await self._post(url, body, tokens)
        self._outcome(url, response)

    async def _post(
        self, url: str, body: str, tokens: TokenSource | None
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if tokens is not None:
            headers.update(await tokens.header())
        try:
            return await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise RecipientUnreachable(f"{url}: {type(exc).__name__}") from exc

    @staticmethod
    def _outcome(url: str, response: httpx.Response) -> None:
        status = response.status_code
        if status in _RETRYABLE or status >= 500:
            raise RecipientUnreachable(f"{url} answered {status}")
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            if 200 <= status < 300:
                return  # handed over; the body is the peer's business
            raise DeliveryRejected(f"{url} answered {status}")
        if 200 <= status < 300:
            if answer.get("status") in _FAILED:
                raise DeliveryRejected(
                    f"peer refused: {answer.get('failureCause')}",
                    cause=_cause(answer.get("failureCause")),
                )
            return
        log.info("peer %s answered %d: %s", url, status, answer.get("detail"))
        raise DeliveryRejected(
            f"{url} answered {status}", cause=_cause(answer.get("cause"))
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
