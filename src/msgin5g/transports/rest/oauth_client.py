"""OAuth2 client credentials for the server's own outbound calls (RFC 6749 §4.4).

Used towards peer MSGin5G Servers (MSGin5G-8) and towards a NEF (TS 29.122
§6.1, which names OAuth2 client credentials for the T8 APIs). One token per
token endpoint is cached until shortly before ``expires_in`` runs out; a ``401``
from the resource makes the caller :meth:`TokenSource.invalidate` it and ask
once more.
"""

import asyncio
import logging
import time

import httpx

from msgin5g.errors import DeliveryRejected, RecipientUnreachable

__all__ = ["TokenSource"]

log = logging.getLogger(__name__)

_MARGIN = 30.0


class TokenSource:
    """Access tokens from one ``token_url`` for one client."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
    ) -> None:
        self._client = client
        self._url = token_url
        self._id = client_id
        self._secret = client_secret
        self._scope = scope
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Forget the cached token (the resource answered 401)."""
        self._token = None

    async def header(self) -> dict[str, str]:
        """``{"Authorization": "Bearer …"}`` with a valid token.

        Raises:
            RecipientUnreachable: the token endpoint cannot be reached or 5xx.
            DeliveryRejected: the credentials were refused (4xx).
        """
        async with self._lock:
            if self._token is None or time.monotonic() >= self._expires:
                await self._fetch()
            return {"Authorization": f"Bearer {self._token}"}

    async def _fetch(self) -> None:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        try:
            response = await self._client.post(
                self._url, data=form, auth=(self._id, self._secret)
            )
        except httpx.HTTPError as exc:
            raise RecipientUnreachable(
                f"token endpoint {self._url}: {type(exc).__name__}"
            ) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise RecipientUnreachable(
                f"token endpoint {self._url} answered {response.status_code}"
            )
        try:
            body = response.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            token = None
            lifetime = 0.0
        if response.status_code != 200 or not isinstance(token, str):
            log.warning(
                "token endpoint %s refused client %s (%d)",
                self._url,
                self._id,
                response.status_code,
            )
            raise DeliveryRejected(
                f"token endpoint {self._url} refused client {self._id} "
                f"({response.status_code})"
            )
        self._token = token
        self._expires = time.monotonic() + max(lifetime - _MARGIN, lifetime / 2)
