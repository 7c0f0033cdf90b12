"""RFC 9068 access tokens: what they carry, and every way a bad one is refused
(401 with ProblemDetails as TS 29.571 defines it)."""

import base64
import json
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from msgin5g.config import RestConfig
from msgin5g.errors import ConfigError
from msgin5g.testing import FakeClock
from msgin5g.transports.rest.jwt_tokens import KEY_KIND, JwtIssuer, SigningKey
from tests.problem_schema import assert_problem_details

from .conftest import Rig, make_rig
from .test_security import REG, TOKEN, bearer, oauth_rig


def claims_of(token: str) -> tuple[dict[str, object], dict[str, object]]:
    header, payload, _ = token.split(".")

    def part(text: str) -> dict[str, object]:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))  # type: ignore[no-any-return]

    return part(header), part(payload)


async def refused(rig: Rig, authorization: str) -> None:
    resp = await rig.http.post(
        REG, json={"asSvcId": "as1"}, headers={"Authorization": authorization}
    )
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["www-authenticate"].startswith("Bearer")
    body = resp.json()
    assert body["status"] == 401
    assert_problem_details(body)


@pytest.fixture
async def rig() -> "Rig":  # type: ignore[misc]
    rig, backend = await oauth_rig()
    yield rig
    await rig.http.aclose()
    await rig.service.aclose()
    await backend.aclose()


async def test_token_is_an_rfc9068_jwt(rig: Rig) -> None:
    resp = await rig.http.post(
        TOKEN,
        data={
            "grant_type": "client_credentials",
            "client_id": "as1",
            "client_secret": "secret-as1",
            "scope": "msgs-asregistration",
        },
    )
    assert resp.status_code == 200
    token = resp.json()["access_token"]
    header, claims = claims_of(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    assert isinstance(header["kid"], str)
    assert claims["iss"] == "msgin5g"
    assert claims["aud"] == "msgin5g"
    assert claims["sub"] == claims["client_id"] == "as1"
    assert claims["scope"] == "msgs-asregistration"
    assert claims["exp"] == claims["iat"] + 3600  # type: ignore[operator]
    assert claims["jti"]
    ok = await rig.http.post(
        REG, json={"asSvcId": "as1"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert ok.status_code == 201, ok.text


async def test_expired_token_is_401(rig: Rig) -> None:
    headers = await bearer(rig, "as1")
    rig.clock.advance(3599)
    ok = await rig.http.post(REG, json={"asSvcId": "as1"}, headers=headers)
    assert ok.status_code == 201
    rig.clock.advance(1)
    await refused(rig, headers["Authorization"])


async def test_tampered_tokens_are_401(rig: Rig) -> None:
    token = (await bearer(rig, "as2"))["Authorization"].split()[1]
    header, payload, signature = token.split(".")
    claims = claims_of(token)[1]
    claims["client_id"] = claims["sub"] = "op"  # become the operator

    def b64(data: dict[str, object]) -> str:
        raw = json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    await refused(rig, f"Bearer {header}.{b64(claims)}.{signature}")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    await refused(rig, f"Bearer {header}.{payload}.{flipped}")
    # alg "none", and HS256 keyed with anything: never accepted
    kid = claims_of(token)[0]["kid"]
    unsigned = jwt.encode(
        claims, None, algorithm="none", headers={"kid": kid, "typ": "at+jwt"}
    )
    await refused(rig, f"Bearer {unsigned}")
    hmac_token = jwt.encode(
        claims, "a-guessed-secret-of-at-least-32-bytes!!", algorithm="HS256",
        headers={"kid": kid, "typ": "at+jwt"},
    )  # fmt: skip
    await refused(rig, f"Bearer {hmac_token}")
    await refused(rig, "Bearer not.a.jwt")


async def test_other_audience_and_issuer_are_refused() -> None:
    rig, backend = await oauth_rig()
    other_rig, _ = await make_rig(RestConfig(oauth2=True, jwt_audience="elsewhere"))
    try:
        ours = (await bearer(rig, "as1"))["Authorization"].split()[1]
        claims = claims_of(ours)[1]
        key_record = (await backend.load_records(KEY_KIND, SigningKey))[0]
        key = serialization.load_pem_private_key(key_record.private_pem.encode(), None)
        for change in ({"aud": "elsewhere"}, {"iss": "someone"}):
            forged = jwt.encode(
                {**claims, **change}, key, algorithm="RS256",  # type: ignore[arg-type]
                headers={"kid": key_record.kid, "typ": "at+jwt"},
            )  # fmt: skip
            await refused(rig, f"Bearer {forged}")
        wrong_typ = jwt.encode(
            claims, key, algorithm="RS256",  # type: ignore[arg-type]
            headers={"kid": key_record.kid, "typ": "JWT"},
        )  # fmt: skip
        await refused(rig, f"Bearer {wrong_typ}")
    finally:
        await rig.http.aclose()
        await rig.service.aclose()
        await other_rig.http.aclose()
        await other_rig.service.aclose()


async def test_two_nodes_starting_at_once_accept_each_others_tokens() -> None:
    """Both create a key (no create-if-absent): each verifies the other's."""
    rig_a, backend = await make_rig(RestConfig(oauth2=True))
    try:
        clock = FakeClock()
        clock.advance(1_000_000)
        node_a = JwtIssuer(rig_a.service, lifetime=60, clock=clock.now,
                           issuer="msgin5g", audience="msgin5g")  # fmt: skip
        node_b = JwtIssuer(rig_a.service, lifetime=60, clock=clock.now,
                           issuer="msgin5g", audience="msgin5g")  # fmt: skip
        # both find no key and store their own before seeing the other's
        created = [node_a._generate(), node_b._generate()]
        for record in created:
            await rig_a.service.backend.put_record(KEY_KIND, record.kid, record)
        token_a, _ = await node_a.issue("as1", frozenset({"x"}))
        token_b, _ = await node_b.issue("as2", frozenset({"x"}))
        assert node_a.kids == node_b.kids == sorted(r.kid for r in created)
        got = await node_b.verify(f"Bearer {token_a}")
        assert got is not None and got.client_id == "as1"
        got = await node_a.verify(f"Bearer {token_b}")
        assert got is not None and got.client_id == "as2"
    finally:
        await rig_a.http.aclose()
        await rig_a.service.aclose()
        await backend.aclose()


async def test_unknown_kid_reloads_the_stored_keys() -> None:
    rig, _ = await make_rig(RestConfig(oauth2=True))
    try:
        clock = FakeClock()
        node_a = JwtIssuer(rig.service, lifetime=60, clock=clock.now,
                           issuer="msgin5g", audience="msgin5g")  # fmt: skip
        node_b = JwtIssuer(rig.service, lifetime=60, clock=clock.now,
                           issuer="msgin5g", audience="msgin5g")  # fmt: skip
        await node_b.ensure_keys()  # B loads (and creates) first
        late = node_a._generate()
        late = SigningKey("!" + late.kid, late.private_pem, late.created_at)
        await rig.service.backend.put_record(KEY_KIND, late.kid, late)
        token, _ = await node_a.issue("as1", frozenset({"x"}))  # signs with "!…"
        assert await node_b.verify(f"Bearer {token}") is None  # reloaded < 1 s ago
        clock.advance(1.5)
        got = await node_b.verify(f"Bearer {token}")
        assert got is not None and got.client_id == "as1"
    finally:
        await rig.http.aclose()
        await rig.service.aclose()


def write_key(path: Path) -> rsa.RSAPrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key


async def test_key_file_is_shared_and_nothing_is_stored(tmp_path: Path) -> None:
    key_file = tmp_path / "jwt.pem"
    write_key(key_file)
    rig_a, backend_a = await make_rig(
        RestConfig(oauth2=True, jwt_key_file=str(key_file))
    )
    rig_b, _ = await make_rig(RestConfig(oauth2=True, jwt_key_file=str(key_file)))
    try:
        await rig_a.service.applications.add_client("as1", "secret-as1")
        headers = await bearer(rig_a, "as1")
        ok = await rig_b.http.post(REG, json={"asSvcId": "as1"}, headers=headers)
        assert ok.status_code == 201, ok.text
        assert await backend_a.load_records(KEY_KIND, SigningKey) == []
    finally:
        for rig in (rig_a, rig_b):
            await rig.http.aclose()
            await rig.service.aclose()


async def test_bad_key_file_is_a_config_error(tmp_path: Path) -> None:
    small = tmp_path / "small.pem"
    small.write_bytes(
        rsa.generate_private_key(65537, 1024).private_bytes(  # noqa: S505 - on purpose
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    rig, _ = await make_rig(RestConfig(oauth2=True))
    try:
        for path, match in ((small, "2048"), (tmp_path / "absent.pem", "cannot read")):
            issuer = JwtIssuer(rig.service, lifetime=60, clock=FakeClock().now,
                               issuer="i", audience="a", key_file=str(path))  # fmt: skip
            with pytest.raises(ConfigError, match=match):
                await issuer.ensure_keys()
    finally:
        await rig.http.aclose()
        await rig.service.aclose()


async def test_secrets_stay_out_of_reprs(rig: Rig) -> None:
    await bearer(rig, "as1")
    records = await rig.service.backend.load_records(KEY_KIND, SigningKey)
    assert "PRIVATE KEY" not in repr(records)
    issuer = rig.http._transport.app.state.ctx.tokens  # type: ignore[attr-defined]
    assert "PRIVATE" not in repr(issuer)


async def test_token_endpoint_still_refuses_bad_clients(rig: Rig) -> None:
    resp = await rig.http.post(
        TOKEN,
        data={"grant_type": "client_credentials", "client_id": "as1",
              "client_secret": "wrong"},
    )  # fmt: skip
    assert resp.status_code == 401
    assert resp.json() == {"error": "invalid_client"}
    assert isinstance(rig.http, httpx.AsyncClient)


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_garbage_bearer_values_never_raise(value: str) -> None:
    issuer = JwtIssuer(None, lifetime=60, clock=FakeClock().now,  # type: ignore[arg-type]
                       issuer="i", audience="a")  # fmt: skip
    issuer._public = {"k": _PUBLIC}
    known = base64.urlsafe_b64encode(
        b'{"alg":"RS256","kid":"k","typ":"at+jwt"}'
    ).decode()
    for header in (
        f"Bearer {value}",
        value,
        f"bearer {value}.{value}.{value}",
        f"Bearer {known}.{value}.{value}",  # a known kid: the verifier runs
    ):
        assert issuer.token_of(header) is None


_PUBLIC = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
