"""``repr()`` of an object holding a secret never shows the secret (issue 11 item 7).

A REG, a cached gateway request, an OAuth2 client record or a gateway
configuration ends up in a log line, a traceback or a failed assertion by its
``repr()``; the wire encoding keeps every value.
"""

import logging

import msgspec
import pytest

from msgin5g.codec.ue_payload import decode_uplink, encode
from msgin5g.gateway import GatewayConfig
from msgin5g.model.application import ASClient
from msgin5g.model.credentials import REDACTED, credential_digest, psk_token
from msgin5g.model.messages import Reg, UECredentialInfo

SECRET = "s3cr3t-never-shown"
TOKEN = psk_token(SECRET, "ue1")


def _reg() -> Reg:
    return Reg(
        ue_service_id="ue1",
        ue_credential_info=UECredentialInfo(auth_type="PSK_TOKEN", credential=TOKEN),
    )


def test_credential_info_and_the_reg_holding_it_hide_the_token() -> None:
    reg = _reg()
    for text in (repr(reg), str(reg), repr([reg]), repr(reg.ue_credential_info)):
        assert TOKEN not in text
        assert REDACTED in text
    assert "ue1" in repr(reg) and "PSK_TOKEN" in repr(reg)


def test_a_decoded_reg_hides_the_token_and_the_wire_keeps_it() -> None:
    wire = encode(_reg())
    assert TOKEN.encode() in wire
    decoded = decode_uplink(wire)
    assert TOKEN not in repr(decoded)
    assert msgspec.json.decode(encode(decoded))["ueCredentialInfo"]["credential"] == (
        TOKEN
    )


def test_an_absent_credential_is_still_shown_as_empty() -> None:
    info = UECredentialInfo(auth_type="NONE")
    assert repr(info) == "UECredentialInfo(auth_type='NONE', credential='')"


def test_as_client_hides_the_secret_digest() -> None:
    digest = credential_digest(SECRET)
    client = ASClient(client_id="as1", secret_digest=digest)
    assert repr(digest) not in repr(client)
    assert digest.hex() not in repr(client)
    assert "as1" in repr(client) and REDACTED in repr(client)


def test_gateway_config_hides_the_secret() -> None:
    config = GatewayConfig(ue_service_id="gw", secret=SECRET)
    assert SECRET not in repr(config)
    assert "gw" in repr(config)
    assert config.secret == SECRET


def test_logging_a_reg_with_percent_r_shows_no_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("msgin5g.test").info("received %r", _reg())
    assert caplog.records
    assert TOKEN not in caplog.text
