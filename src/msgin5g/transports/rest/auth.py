"""OAuth2 client credentials, scopes and rate limits (TS 29.538 §10, digest §3.2).

Both YAML files declare ``security: [{}, {oAuth2ClientCredentials: []}]``: an API
may be called without a token (operator relies on e.g. mutual TLS) or with an
OAuth2 bearer token obtained with the client-credentials grant (RFC 6749 §4.4).

* ``rest.oauth2 = false`` (default): no token is required; the caller is
  anonymous and the service applies no ownership rule.
* ``rest.oauth2 = true``: ``POST /oauth2/token`` issues tokens to clients
  provisioned with ``msgin5g as add ID [--role as|gateway|operator]`` (the
  server stores only SHA-256 of the secret); every API call without a valid
  ``Authorization: Bearer`` gets ``401`` with ``WWW-Authenticate: Bearer``. The
  client's role decides what it may act for (docs/security-rest.md); a token
  carries scopes (RFC 6749 §3.3, one per API: ``msgs-asregistration``,
  ``msgs-msgdelivery``, ``msgs-topicsub``, ``msgg-bgdelivery``, ``ss-gm``): the
  request's ``scope`` (a subset of what the role allows, else
  ``invalid_scope``) or, without one, all the role allows. An API called with a
  token lacking its scope gets ``403`` ``INSUFFICIENT_SCOPE`` and
  ``WWW-Authenticate: Bearer error="insufficient_scope"`` (RFC 6750 §3.1).

Tokens are signed JWTs (RFC 9068) issued and verified by
:class:`~msgin5g.transports.rest.jwt_tokens.JwtIssuer`: every node of a cluster
accepts every node's tokens, and a restart keeps them valid until they expire
(``rest.token_lifetime``). :class:`Token` is what a verified token stands for.
The token endpoint answers RFC 6749 §5.2 errors (``invalid_client``,
``unsupported_grant_type``, ``invalid_scope``), not ProblemDetails: it is not
part of the TS 29.538 APIs.

Failed client authentications are throttled (:class:`AuthThrottle`): a token
bucket per client id and one per source IP (``rest.auth_failure_burst``
failures at once, ``rest.auth_failure_rate`` regained per second). While
either bucket is empty the endpoint answers ``429`` with ``Retry-After`` and
``{"error": "invalid_client"}`` without checking the secret (so guessing goes
no faster with the right secret in the batch).

The rate limiter is a token bucket per caller (the client id, or the AS Service
ID of the request when OAuth2 is off): ``rest.rate_limit`` requests per second
with bursts of ``rest.rate_burst``; an empty bucket raises
:class:`~msgin5g.errors.Overloaded` with the seconds until the next token, which
``problems.py`` turns into ``429`` + ``Retry-After``.
"""

import base64
import binascii
import math
from collections.abc import Callable
from urllib.parse import parse_qs

import msgspec

from msgin5g.errors import Overloaded

__all__ = [
    "AuthThrottle",
    "RateLimiter",
    "Token",
    "parse_client_credentials",
]

_MAX_BUCKETS = 100_000


class Token(msgspec.Struct, frozen=True, gc=False):
    """What an access token stands for."""

    client_id: str
    scopes: frozenset[str]
    expires_at: float


class AuthThrottle:
    """Token buckets of failed authentications, per client id and per source IP."""

    def __init__(self, burst: int, rate: float, clock: Callable[[], float]) -> None:
        self._burst = float(burst)
        self._rate = rate
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def _level(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self._burst, now))
        return min(self._burst, tokens + (now - last) * self._rate)

    def retry_after(self, client_id: str, address: str) -> int:
        """Seconds to wait before the next attempt may be checked (0: go ahead)."""
        now = self._clock()
        wait = 0.0
        for key in (f"c:{client_id}", f"a:{address}"):
            level = self._level(key, now)
            if level < 1.0:
                wait = max(wait, (1.0 - level) / self._rate)
        return math.ceil(wait)

    def failed(self, client_id: str, address: str) -> None:
        """Count one failed authentication against both buckets."""
        now = self._clock()
        if len(self._buckets) >= _MAX_BUCKETS:
            self._forget_full(now)
        for key in (f"c:{client_id}", f"a:{address}"):
            self._buckets[key] = (max(0.0, self._level(key, now) - 1.0), now)

    def _forget_full(self, now: float) -> None:
        """Drop refilled buckets; if that is not enough, the oldest half."""
        self._buckets = {
            k: v for k, v in self._buckets.items() if self._level(k, now) < self._burst
        }
        if len(self._buckets) >= _MAX_BUCKETS:
            keep = list(self._buckets.items())[len(self._buckets) // 2 :]
            self._buckets = dict(keep)


def parse_client_credentials(
    body: bytes, authorization: str | None
) -> tuple[str | None, str | None, str | None, str | None]:
    """``(grant_type, client_id, client_secret, scope)`` of a token request.

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
    return one("grant_type"), client_id, secret, one("scope")


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
