"""OAuth2 access tokens as signed JWTs (RFC 9068), verifiable by every node.

What: :class:`JwtIssuer` issues and verifies the bearer tokens of the REST APIs
(``POST /oauth2/token``, client credentials grant, see :mod:`.auth`). A token is
a JWS (RS256, header ``typ: at+jwt``) with the claims of RFC 9068 §2.2: ``iss``
(``rest.jwt_issuer``), ``aud`` (``rest.jwt_audience``), ``sub`` and
``client_id`` (the OAuth2 client), ``iat``, ``exp`` (``rest.token_lifetime``),
``jti`` (random) and ``scope`` (space-separated, one scope per API).

Where the signing key comes from, so that every node of a cluster accepts the
tokens of every other node:

* ``rest.jwt_key_file`` (PEM, PKCS#8 RSA private key, at least 2048 bits): the
  operator distributes the same file to every node; ``kid`` is the RFC 7638
  thumbprint of its public key.
* otherwise the server's storage (records of kind ``rest-jwt-key``, key =
  ``kid``): at its first token request a node loads every stored key; when
  there is none it generates one (RSA 2048) and stores it under a fresh random
  ``kid``, then loads again and signs with the *smallest* ``kid`` present. Two
  nodes starting at once may each store a key (the records API has no
  create-if-absent): both keys are kept (different record keys, nothing is
  overwritten), both nodes verify with both, and both sign with the same one
  once they have seen each other's record. A token with a ``kid`` a node does
  not know makes it reload the keys (at most once a second) before answering
  ``401``. The private key in storage is a secret: protect the database (or the
  NATS account) like the key file.

Verification: RS256 only (``alg`` taken from our key, never from the token;
``none`` and HMAC are refused), the signature, ``typ``, ``iss``, ``aud`` and
``exp`` against the injected clock (no leeway: the nodes' clocks are assumed to
be NTP-synchronised). Tokens are stateless: nothing is kept per token, so a
token cannot be revoked before it expires (keep ``rest.token_lifetime``
short), and ``rest.max_tokens_per_client`` has nothing left to bound.
"""

import asyncio
import base64
import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from msgin5g.errors import ConfigError
from msgin5g.model.credentials import redacted_repr
from msgin5g.service.messaging import MessagingService
from msgin5g.transports.rest.auth import Token

__all__ = ["KEY_KIND", "JwtIssuer", "SigningKey"]

log = logging.getLogger(__name__)

KEY_KIND = "rest-jwt-key"
_ALGORITHM = "RS256"
_TYP = "at+jwt"
_RELOAD_INTERVAL = 1.0


class SigningKey(msgspec.Struct, frozen=True):
    """A stored signing key (the private key is a secret: never in a repr)."""

    kid: str
    private_pem: str
    created_at: float

    def __repr__(self) -> str:
        return redacted_repr(self, "private_pem")


def _thumbprint(public: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an RSA public key."""
    numbers = public.public_numbers()

    def b64(value: int) -> str:
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    canonical = json.dumps(
        {"e": b64(numbers.e), "kty": "RSA", "n": b64(numbers.n)},
        separators=(",", ":"),
        sort_keys=True,
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _load_private(pem: bytes, where: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: not an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise ConfigError(f"{where}: needs an RSA key of at least 2048 bits")
    return key


class JwtIssuer:
    """Issues and verifies RFC 9068 access tokens.

    Args:
        service: where stored keys live (``service.backend`` records).
        lifetime: seconds a token is valid.
        clock: epoch seconds (``exp``/``iat`` and their check).
        issuer: the ``iss`` claim.
        audience: the ``aud`` claim.
        key_file: a PEM key shared by the nodes instead of stored keys.
    """

    def __init__(
        self,
        service: MessagingService,
        *,
        lifetime: float,
        clock: Callable[[], float],
        issuer: str,
        audience: str,
        key_file: str = "",
    ) -> None:
        self._service = service
        self._lifetime = lifetime
        self._clock = clock
        self._issuer = issuer
        self._audience = audience
        self._key_file = key_file
        self._public: dict[str, rsa.RSAPublicKey] = {}
        self._signing: tuple[str, rsa.RSAPrivateKey] | None = None
        self._lock = asyncio.Lock()
        self._last_reload = float("-inf")

    def __repr__(self) -> str:
        return f"JwtIssuer(issuer={self._issuer!r}, keys={sorted(self._public)})"

    @property
    def kids(self) -> list[str]:
        """The key ids this node verifies with."""
        return sorted(self._public)

    # keys ------------------------------------------------------------------------

    async def ensure_keys(self) -> None:
        """Load (or create) the keys once.

        Raises:
            ConfigError: the key file is unreadable or not an RSA key.
            StorageError: the stored keys cannot be read or written.
        """
        if self._signing is None:
            async with self._lock:
                if self._signing is None:
                    await self._load()

    async def _load(self) -> None:
        self._last_reload = self._clock()
        if self._key_file:
            try:
                pem = await asyncio.to_thread(Path(self._key_file).read_bytes)
            except OSError as exc:
                raise ConfigError(
                    f"rest.jwt_key_file: cannot read {self._key_file}: {exc.strerror}"
                ) from exc
            key = _load_private(pem, "rest.jwt_key_file")
            kid = _thumbprint(key.public_key())
            self._public = {kid: key.public_key()}
            self._signing = (kid, key)
            return
        backend = self._service.backend
        stored = await backend.load_records(KEY_KIND, SigningKey)
        if not stored:
            created = await asyncio.to_thread(self._generate)
            await backend.put_record(KEY_KIND, created.kid, created)
            log.info("created the REST token signing key %s", created.kid)
            stored = await backend.load_records(KEY_KIND, SigningKey)
        keys = {
            record.kid: _load_private(record.private_pem.encode(), f"key {record.kid}")
            for record in stored
        }
        self._public = {kid: key.public_key() for kid, key in keys.items()}
        kid = min(keys)
        self._signing = (kid, keys[kid])

    def _generate(self) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return SigningKey(secrets.token_urlsafe(12), pem.decode(), self._clock())

    # issue and verify ----------------------------------------------------------

    async def issue(self, client_id: str, scopes: frozenset[str]) -> tuple[str, int]:
        """A signed token for ``client_id`` and its lifetime in seconds."""
        await self.ensure_keys()
        assert self._signing is not None  # noqa: S101 - set by ensure_keys
        kid, key = self._signing
        now = int(self._clock())
        lifetime = int(self._lifetime)
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": client_id,
            "client_id": client_id,
            "iat": now,
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(16),
            "scope": " ".join(sorted(scopes)),
        }
        token = jwt.encode(
            claims, key, algorithm=_ALGORITHM, headers={"kid": kid, "typ": _TYP}
        )
        return token, lifetime

    def token_of(self, authorization: str | None) -> Token | None:
        """The valid token of an ``Authorization: Bearer`` value, or None.

        Uses the keys already loaded (see :meth:`verify` for unknown ``kid``).
        """
        value = _bearer(authorization)
        if value is None:
            return None
        return self._decode(value)

    async def verify(self, authorization: str | None) -> Token | None:
        """Like :meth:`token_of`, reloading the keys once for an unknown ``kid``."""
        value = _bearer(authorization)
        if value is None:
            return None
        await self.ensure_keys()
        token = self._decode(value)
        if token is not None or self._key_file:
            return token
        kid = _kid(value)
        now = self._clock()
        if kid is None or kid in self._public:
            return None
        if now - self._last_reload < _RELOAD_INTERVAL:
            return None
        async with self._lock:
            if kid not in self._public:
                await self._load()
        return self._decode(value)

    def _decode(self, value: str) -> Token | None:
        kid = _kid(value)
        key = self._public.get(kid) if kid is not None else None
        if key is None:
            return None
        try:
            header = jwt.get_unverified_header(value)
            if header.get("typ") != _TYP:
                return None
            claims: dict[str, Any] = jwt.decode(
                value,
                key,
                algorithms=[_ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "verify_exp": False,  # checked below against our clock
                    "verify_iat": False,
                    "require": ["exp", "iat", "sub", "client_id", "jti", "scope"],
                },
            )
        except jwt.PyJWTError:
            return None
        expires = claims["exp"]
        client = claims["client_id"]
        scope = claims["scope"]
        if (
            not isinstance(expires, int | float)
            or expires <= self._clock()
            or not isinstance(client, str)
            or not isinstance(scope, str)
        ):
            return None
        return Token(client, frozenset(scope.split()), float(expires))


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _kid(value: str) -> str | None:
    try:
        kid = jwt.get_unverified_header(value).get("kid")
    except jwt.PyJWTError:
        return None
    return kid if isinstance(kid, str) else None
