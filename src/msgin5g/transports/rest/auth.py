"""OAuth2 client credentials and per-AS rate limiting (TS 29.538 §10, digest §3.2).

Both YAML files declare ``security: [{}, {oAuth2ClientCredentials: []}]``: an API
may be called without a token (operator relies on e.g. mutual TLS) or with an
OAuth2 bearer token obtained with the client-credentials grant (RFC 6749 §4.4).

* ``rest.oauth2 = false`` (default): no token is required; the caller is
  anonymous and the service applies no ownership rule.
* ``rest.oauth2 = true``: ``POST /oauth2/token`` issues tokens to clients
  provisioned with ``msgin5g as add AS_ID`` (the server stores only SHA-256 of the
  secret); every API call without a valid ``Authorization: Bearer`` gets ``401``
  with ``WWW-Authenticate: Bearer``; the client id is the AS Service ID the caller
  may act for (register, send, report, de-register its own registration, else
  ``403``).

Tokens are opaque random strings kept in memory with their expiry
(``rest.token_lifetime``), so a restart invalidates them and clients fetch a new
one (the usual reaction to ``401``). The token endpoint answers RFC 6749 §5.2
errors (``invalid_client``, ``unsupported_grant_type``), not ProblemDetails: it is
not part of the TS 29.538 APIs.

The rate limiter is a token bucket per caller (the client id, or the AS Service
ID of the request when OAuth2 is off): ``rest.rate_limit`` requests per second
with bursts of ``rest.rate_burst``; an empty bucket raises
:class:`~msgin5g.errors.Overloaded` with the seconds until the next token, which
``problems.py`` turns into ``429`` + ``Retry-After``.
"""

import base64
import binascii
import math
import secrets
from collections.abc import Callable
from urllib.parse import parse_qs

from msgin5g.errors import Overloaded

__all__ = ["RateLimiter", "TokenIssuer", "parse_client_credentials"]

_MAX_TOKENS = 100_000
_MAX_BUCKETS = 100_000


class TokenIssuer:
    """Issues and checks opaque bearer tokens."""

    def __init__(self, lifetime: float, clock: Callable[[], float]) -> None:
        self._lifetime = lifetime
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}

    def issue(self, client_id: str) -> tuple[str, int]:
        """A new token for ``client_id`` and its lifetime in seconds."""
        now = self._clock()
        if len(self._tokens) >= _MAX_TOKENS:
            self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            while len(self._tokens) >= _MAX_TOKENS:
                del self._tokens[next(iter(self._tokens))]
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (client_id, now + self._lifetime)
        return token, int(self._lifetime)

    def client_of(self, authorization: str | None) -> str | None:
        """The client id of a valid ``Authorization: Bearer`` value, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        entry = self._tokens.get(token.strip())
        if entry is None:
            return None
        if entry[1] <= self._clock():
            self._tokens.pop(token.strip(), None)
            return None
        return entry[0]


def parse_client_credentials(
    body: bytes, authorization: str | None
) -> tuple[str | None, str | None, str | None]:
    """``(grant_type, client_id, client_secret)`` of a token request.

    Client authentication by HTTP Basic (RFC 6749 §2.3.1) or by the form members
    ``client_id`` / ``client_secret``.
    """
    form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

    def one(name: str) -> str | None:
        values = form.get(name)
        return values[0] if values else None

    client_id, secret = one("client_id"), one("client_secret")
    if authorization and authorization.lower().startswith("basic "):
        try:
            raw = base64.b64decode(authorization[6:].strip(), validate=True)
            user, sep, password = raw.decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, sep, password = "", "", ""
        if sep:
            client_id, secret = user, password
    return one("grant_type"), client_id, secret


class RateLimiter:
    """Token bucket per caller; ``rate`` 0 disables it."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, caller: str) -> None:
        """Take one token for ``caller``.

        Raises:
            Overloaded: the bucket is empty; ``retry_after`` in whole seconds.
        """
        if self._rate <= 0:
            return
        now = self._clock()
        tokens, last = self._buckets.get(caller, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[caller] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / self._rate)
            raise Overloaded(
                f"rate limit of {self._rate:g} requests/s exceeded by {caller}",
                retry_after=max(1, wait),
            )
        if len(self._buckets) >= _MAX_BUCKETS and caller not in self._buckets:
            self._buckets.clear()
        self._buckets[caller] = (tokens - 1.0, now)
