"""The gateway's side of MSGin5G-2 / MSGin5G-4 towards the MSGin5G Server.

* :class:`ServerLink` registers the UE Service IDs the gateway represents
  (``POST {server}/msgs-gwregistration/v1/registrations``, digest §2.4) at
  start and again every third of ``validity`` (the server keeps the mapping as
  soft state), and de-registers them at a clean stop;
* with ``client_id`` and ``secret`` every call carries an OAuth2 bearer token
  (client credentials, TS 29.538 §10; ``POST {server}/oauth2/token``), fetched
  before the first call, again a minute before it expires and after a ``401``;
  the server's client must have the ``gateway`` role and serve the UEs
  (``msgin5g as add GW --role gateway --ues …``);
* :class:`UplinkPump` drains the outbox queue ``uplink``: messages from the
  gateway's UEs (``POST /msgs-msgdelivery/v1/deliver-ue-message``) and their
  delivery reports (``POST /msgs-msgdelivery/v1/deliver-report``). A ``2xx``
  removes the row; a connection error, timeout, ``408``, ``429`` or ``5xx``
  keeps it and retries with back-off (1 s doubling to 60 s); any other ``4xx``
  drops it with a WARNING log line (the server will never take it).
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from msgin5g.errors import ServerUnreachable
from msgin5g.msgg.outbox import Outbox

__all__ = ["UPLINK", "ServerLink", "UplinkPump"]

log = logging.getLogger(__name__)

UPLINK = "uplink"
"""Outbox queue of what goes to the MSGin5G Server."""
_REGISTRATIONS = "/msgs-gwregistration/v1/registrations"
_TOKEN = "/oauth2/token"  # noqa: S105 - a path, not a secret
_RETRYABLE = {408, 425, 429}


class ServerLink:
    """HTTP client of one gateway towards the MSGin5G Server's APIs."""

    def __init__(
        self,
        server_url: str,
        gateway_id: str,
        kind: str,
        *,
        validity: float = 300.0,
        timeout: float = 10.0,
        client_id: str | None = None,
        secret: str | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self._credentials = (client_id or gateway_id, secret) if secret else None
        self._token_until = 0.0
        self.gateway_id = gateway_id
        self.kind = kind
        self.validity = validity
        self.registered = asyncio.Event()
        self._client = httpx.AsyncClient(
            base_url=self.server_url,
            timeout=timeout,
            headers={"User-Agent": f"msgin5g-{kind.lower()}"},
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST JSON to the server (with a bearer token when configured).

        Raises:
            ServerUnreachable: no connection, no answer in time, or the token
                request was refused.
        """
        return await self._request("POST", path, body)

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        try:
            credentials = self._credentials
            if credentials and time.monotonic() >= self._token_until:
                await self._fetch_token(credentials)
            response = await self._client.request(method, path, json=body)
            if response.status_code == 401 and credentials:
                await self._fetch_token(credentials)
                response = await self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ServerUnreachable(
                f"{self.server_url}{path}: {type(exc).__name__} {exc}".strip()
            ) from exc
        return response

    async def _fetch_token(self, credentials: tuple[str, str]) -> None:
        reply = await self._client.post(
            _TOKEN, data={"grant_type": "client_credentials"}, auth=credentials
        )
        if reply.status_code != 200:
            self._token_until = 0.0
            raise ServerUnreachable(
                f"token request refused: {reply.status_code} {reply.text[:200]}"
            )
        token = reply.json()
        self._client.headers["Authorization"] = f"Bearer {token['access_token']}"
        lifetime = float(token.get("expires_in", 3600))
        self._token_until = time.monotonic() + max(1.0, lifetime - 60.0)

    async def register(self, own_uri: str, ue_service_ids: list[str]) -> list[str]:
        """Register (or refresh) the gateway; returns the UE IDs refused.

        Raises:
            ServerUnreachable: the server could not be reached or refused (4xx/5xx).
        """
        body = {
            "gwId": self.gateway_id,
            "gwType": self.kind,
            "gwUri": own_uri,
            "ueSvcIds": ue_service_ids,
            "validity": self.validity,
        }
        response = await self.post(_REGISTRATIONS, body)
        if response.status_code not in {200, 201}:
            raise ServerUnreachable(
                f"registration refused: {response.status_code} {response.text[:200]}"
            )
        results = response.json().get("ueResults", [])
        refused = [
            f"{r.get('ueSvcId')} ({r.get('failureCause')})"
            for r in results
            if r.get("result") != "SUCCESS"
        ]
        if refused:
            log.warning("server refused UEs: %s", ", ".join(refused[:10]))
        self.registered.set()
        return refused

    async def deregister(self) -> None:
        """De-register every UE of this gateway (best effort, at a clean stop)."""
        try:
            await self._request("DELETE", f"{_REGISTRATIONS}/{self.gateway_id}")
        except ServerUnreachable as exc:
            log.info("de-registration not sent: %s", exc)

    async def keep_registered(
        self, own_uri: str, ue_service_ids: Callable[[], list[str]]
    ) -> None:
        """Register now and refresh every ``validity / 3`` s (retry every 2 s)."""
        while True:
            try:
                await self.register(own_uri, ue_service_ids())
                delay = self.validity / 3
            except ServerUnreachable as exc:
                log.warning("registration with %s failed: %s", self.server_url, exc)
                delay = min(2.0, self.validity / 3)
            await asyncio.sleep(delay)


class UplinkPump:
    """Sends the outbox queue ``uplink`` to the server, in order, with back-off."""

    def __init__(self, outbox: Outbox, link: ServerLink) -> None:
        self._outbox = outbox
        self._link = link
        self._wake = asyncio.Event()
        self.sent = 0
        self.dropped = 0

    def put(self, path: str, body: dict[str, Any]) -> int:
        """Queue a POST durably and wake the pump; returns the row id."""
        row_id = self._outbox.put(UPLINK, {"path": path, "body": body})
        self._wake.set()
        return row_id

    async def run(self) -> None:
        """Drain the queue forever (cancel to stop; rows stay stored)."""
        failures = 0
        while True:
            rows = self._outbox.ready(UPLINK, exclude=set(), limit=50)
            if not rows:
                self._wake.clear()
                due = self._outbox.next_due(UPLINK)
                timeout = None if due is None else max(0.05, due - time.time())
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
                continue
            for row in rows:
                path, body = row.body["path"], row.body["body"]
                try:
                    response = await self._link.post(path, body)
                except ServerUnreachable as exc:
                    failures += 1
                    self._back_off(row.id, failures, str(exc))
                    break
                status = response.status_code
                if status in _RETRYABLE or status >= 500:
                    failures += 1
                    self._back_off(row.id, failures, f"{path} answered {status}")
                    break
                failures = 0
                self._outbox.remove(row.id)
                if status >= 400:
                    self.dropped += 1
                    log.warning(
                        "server refused %s %s: %d %s",
                        path,
                        body.get("msgId"),
                        status,
                        response.text[:300],
                    )
                    continue
                self.sent += 1
                _log_ack(path, body, response)

    def _back_off(self, row_id: int, failures: int, reason: str) -> None:
        delay = min(60.0, 2.0 ** min(failures - 1, 6))
        log.info("uplink kept (%s); retry in %.0f s", reason, delay)
        self._outbox.delay(row_id, time.time() + delay)


def _log_ack(path: str, body: dict[str, Any], response: httpx.Response) -> None:
    if not response.content:
        return
    try:
        ack = response.json()
    except ValueError:
        return
    status = ack.get("status") if isinstance(ack, dict) else None
    if status is not None:
        log.info(
            "server answered %s for %s %s (%s)",
            status,
            path.rsplit("/", 1)[-1],
            body.get("msgId"),
            ack.get("failureCause"),
        )
