"""One MSGin5G service identifier: ``coap.service_id``, followed by SEAL (issue 11 item 8).

TS 23.554 uses the MSGin5G service identifier as the SEAL VAL service ID
(digest §1.2): ``seal.val_service_id`` follows ``coap.service_id`` unless set.
"""

from pathlib import Path

import pytest

from msgin5g.coap.endpoint import Endpoint
from msgin5g.coap.message import CoapMessage, encode_uint, uri_path_options
from msgin5g.coap.numbers import Code, Type
from msgin5g.codec.ue_payload import decode_uplink, encode
from msgin5g.config import SealConfig, load_config
from msgin5g.errors import ConfigError, DecodeError
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Reg, UECredentialInfo
from msgin5g.server import Server, provision_ue
from msgin5g.spec.delivery import MSGIN5G_SERVICE_ID


def test_the_defaults_agree() -> None:
    config = load_config(None, {}, {})
    assert config.coap.service_id == MSGIN5G_SERVICE_ID == "org.3gpp.msgin5g"
    assert config.seal.val_service_id == config.coap.service_id
    assert SealConfig().val_service_id == MSGIN5G_SERVICE_ID


def test_seal_follows_coap_service_id_from_every_source() -> None:
    by_option = load_config(None, {}, {"coap.service_id": "acme.msg"})
    assert by_option.seal.val_service_id == "acme.msg"
    by_env = load_config(None, {"MSGIN5G_COAP_SERVICE_ID": "env.msg"}, {})
    assert (by_env.coap.service_id, by_env.seal.val_service_id) == ("env.msg",) * 2


def test_an_explicit_val_service_id_is_kept() -> None:
    config = load_config(
        None, {}, {"coap.service_id": "acme.msg", "seal.val_service_id": "seal.msg"}
    )
    assert (config.coap.service_id, config.seal.val_service_id) == (
        "acme.msg",
        "seal.msg",
    )


@pytest.mark.parametrize("bad", ["", "x" * 256, "tab\there"])
def test_an_unusable_service_id_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"coap\.service_id"):
        load_config(None, {}, {"coap.service_id": bad})


def _reg(service_id: str) -> bytes:
    return encode(
        Reg(
            ue_service_id="ue1",
            ue_credential_info=UECredentialInfo(auth_type="NONE"),
            msgin5g_service_id=service_id,
        )
    )


def test_the_codec_checks_the_configured_value() -> None:
    assert decode_uplink(_reg("acme.msg"), service_id="acme.msg").ue_service_id == "ue1"
    with pytest.raises(DecodeError, match=r"acme\.msg") as refused:
        decode_uplink(_reg(MSGIN5G_SERVICE_ID), service_id="acme.msg")
    assert refused.value.member == "msgin5gServiceId"
    with pytest.raises(DecodeError):
        decode_uplink(_reg("acme.msg"))  # default: the project's value


async def test_the_server_accepts_its_configured_value(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    await provision_ue(url, "ue1", "s1")
    overrides = {
        "coap.bind": "127.0.0.1:0",
        "coap.service_id": "acme.msg",
        "storage.url": url,
        "rest.enabled": "false",
    }
    reg = Reg(
        ue_service_id="ue1",
        ue_credential_info=UECredentialInfo(
            auth_type="PSK_TOKEN", credential=psk_token("s1", "ue1")
        ),
        msgin5g_service_id="acme.msg",
    )
    async with (
        Server(load_config(None, {}, overrides)) as server,
        await Endpoint.create(("127.0.0.1", 0)) as endpoint,
    ):
        request = CoapMessage(
            Type.CON,
            Code.POST,
            options=[*uri_path_options(("msgin5g",)), (12, encode_uint(50))],
            payload=encode(reg),
        )
        response = await endpoint.request(request, server.coap_address, timeout=5)
    assert response.code == Code.CREATED, response.payload
