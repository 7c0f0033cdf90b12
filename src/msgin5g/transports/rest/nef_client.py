"""The server's client of a NEF/SCEF T8 API (TS 29.122; implements ``service.nef.NefApi``).

* ``POST {url}/3gpp-monitoring-event/v1/{scsAsId}/subscriptions`` with a
  ``MonitoringEventSubscription`` (``monitoringType`` ``UE_REACHABILITY`` with
  ``reachabilityType``, or ``LOSS_OF_CONNECTIVITY``; ``externalId`` or
  ``msisdn``; ``monitorExpireTime``; ``notificationDestination`` =
  ``{callback}/nef-callbacks/v1/monitoring``) → ``201`` with ``Location``
  (the subscription URI; the body's ``self`` when ``Location`` is missing);
* ``DELETE`` of that URI (``204``/``200``; ``404`` = already gone);
* ``POST {url}/3gpp-device-triggering/v1/{scsAsId}/transactions`` with a
  ``DeviceTriggering`` (``validityPeriod``, ``priority``, ``applicationPortId``,
  base64 ``triggerPayload``, ``notificationDestination`` =
  ``{callback}/nef-callbacks/v1/triggering``) → ``201`` with ``Location``.

Any other answer — a ``4xx``/``5xx`` (its ProblemDetails ``cause`` is logged),
a body that is not the JSON object the YAML promises, a ``201`` without a
resource URI, a connection failure or timeout — raises
:class:`~msgin5g.errors.UpstreamError` with one line saying which. OAuth2
client credentials (``nef.token_url``) are sent as a bearer token when set.
"""

import base64
import logging
from datetime import datetime
from typing import Any

import httpx

from msgin5g.config_network import NefConfig
from msgin5g.errors import MSGin5GError, UpstreamError
from msgin5g.service.nef import UE_REACHABILITY, UeIdentity
from msgin5g.transports.rest.oauth_client import TokenSource

__all__ = ["CALLBACK_PREFIX", "HttpNefClient"]

log = logging.getLogger(__name__)

CALLBACK_PREFIX = "/nef-callbacks/v1"
"""Below the server's ``{apiRoot}``: ``/monitoring`` and ``/triggering``."""


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _ue(ue: UeIdentity) -> dict[str, str]:
    if ue.external_id is not None:
        return {"externalId": ue.external_id}
    return {"msisdn": ue.msisdn or ""}


class HttpNefClient:
    """T8 requests over one httpx pool."""

    def __init__(
        self,
        config: NefConfig,
        callback_root: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        """``headers`` are added to every request (a test mock's ``Prefer``)."""
        self._config = config
        self._root = config.url.rstrip("/")
        self._callback = callback_root.rstrip("/") + CALLBACK_PREFIX
        self._client = httpx.AsyncClient(
            timeout=config.timeout,
            headers={"User-Agent": "msgin5g", **(headers or {})},
        )
        self._tokens = (
            TokenSource(
                self._client, config.token_url, config.client_id, config.client_secret
            )
            if config.token_url
            else None
        )

    @property
    def monitoring_callback(self) -> str:
        """``notificationDestination`` of the subscriptions."""
        return self._callback + "/monitoring"

    @property
    def triggering_callback(self) -> str:
        """``notificationDestination`` of the trigger transactions."""
        return self._callback + "/triggering"

    async def subscribe(
        self, ue: UeIdentity, monitoring_type: str, expire: datetime
    ) -> str:
        """Create a MonitoringEvent subscription; returns its URI."""
        body: dict[str, Any] = {
            **_ue(ue),
            "notificationDestination": self.monitoring_callback,
            "monitoringType": monitoring_type,
            "monitorExpireTime": _rfc3339(expire),
        }
        if monitoring_type == UE_REACHABILITY:
            body["reachabilityType"] = self._config.reachability_type
        url = (
            f"{self._root}/3gpp-monitoring-event/v1/"
            f"{self._config.scs_as_id}/subscriptions"
        )
        return await self._create(url, body)

    async def unsubscribe(self, subscription: str) -> None:
        """Delete a subscription; one already gone (404) is fine."""
        response = await self._send("DELETE", subscription, None)
        if response.status_code in {200, 204, 404}:
            return
        raise UpstreamError(self._refusal("DELETE", subscription, response))

    async def trigger(
        self, ue: UeIdentity, port: int, payload: bytes, validity: int, urgent: bool
    ) -> str:
        """Create a DeviceTriggering transaction; returns its URI."""
        body = {
            **_ue(ue),
            "validityPeriod": validity,
            "priority": "PRIORITY" if urgent else "NO_PRIORITY",
            "applicationPortId": port,
            "triggerPayload": base64.b64encode(payload).decode("ascii"),
            "notificationDestination": self.triggering_callback,
        }
        url = (
            f"{self._root}/3gpp-device-triggering/v1/"
            f"{self._config.scs_as_id}/transactions"
        )
        return await self._create(url, body)

    async def _create(self, url: str, body: dict[str, Any]) -> str:
        response = await self._send("POST", url, body)
        if response.status_code != 201:
            raise UpstreamError(self._refusal("POST", url, response))
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise UpstreamError(f"NEF POST {url}: 201 without a JSON object")
        location = response.headers.get("location") or answer.get("self")
        if not isinstance(location, str) or not location:
            raise UpstreamError(f"NEF POST {url}: 201 without Location or self")
        return str(response.url.join(location))

    async def _send(
        self, method: str, url: str, body: dict[str, Any] | None
    ) -> httpx.Response:
        response = await self._once(method, url, body)
        if response.status_code == 401 and self._tokens is not None:
            self._tokens.invalidate()  # expired early: one new token, one retry
            response = await self._once(method, url, body)
        return response

    async def _once(
        self, method: str, url: str, body: dict[str, Any] | None
    ) -> httpx.Response:
        headers = {}
        if self._tokens is not None:
            try:
                headers.update(await self._tokens.header())
            except MSGin5GError as exc:
                raise UpstreamError(f"NEF token: {exc}") from exc
        try:
            return await self._client.request(method, url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"NEF {method} {url}: {type(exc).__name__}") from exc

    @staticmethod
    def _refusal(method: str, url: str, response: httpx.Response) -> str:
        cause = ""
        try:
            problem = response.json()
            if isinstance(problem, dict):
                cause = str(problem.get("cause") or problem.get("detail") or "")
        except ValueError:
            cause = "body is not JSON"
        return f"NEF {method} {url} answered {response.status_code} {cause}".rstrip()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
