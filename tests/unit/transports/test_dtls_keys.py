"""The sealed DTLS key store, the coaps:// settings and identity binding (no sockets)."""

import os
import sqlite3
import stat
from pathlib import Path

import msgspec
import pytest

from msgin5g.cli.main import main
from msgin5g.coap.dtls_records import identity_of, identity_peer
from msgin5g.config import CoapConfig, load_config
from msgin5g.errors import ConfigError, NotAuthorized
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Msg, Reg, UECredentialInfo
from msgin5g.transports.coap.keystore import PskKeyStore, key_file_for
from msgin5g.transports.coap.secure import bind_identity, is_secure_contact


def test_keys_are_sealed_at_rest_and_bound_to_their_identity(tmp_path: Path) -> None:
    path = str(tmp_path / "psk.db")
    keys = PskKeyStore(path)
    keys.put("ue1", b"token-of-ue1")
    keys.put("ue2", b"token-of-ue2")
    assert keys.get("ue1") == b"token-of-ue1"
    assert keys.get("nobody") is None
    assert len(keys) == 2
    assert "token" not in repr(keys)
    keys.close()
    raw = Path(path).read_bytes()
    assert b"token-of-ue1" not in raw  # only ciphertext on disk
    key_file = key_file_for(path)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # a row copied under another identity does not open (identity is the AAD)
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT nonce, sealed, tag FROM dtls_psk WHERE identity='ue1'")
        nonce, sealed, tag = row.fetchone()
        db.execute(
            "UPDATE dtls_psk SET nonce=?, sealed=?, tag=? WHERE identity='ue2'",
            (nonce, sealed, tag),
        )
    keys = PskKeyStore(path)
    assert keys.get("ue2") is None
    assert keys.remove("ue1") and not keys.remove("ue1")
    keys.close()


def test_key_file_must_be_private_and_well_formed(tmp_path: Path) -> None:
    path = str(tmp_path / "psk.db")
    PskKeyStore(path).close()
    key_file = key_file_for(path)
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        PskKeyStore(path)
    os.chmod(key_file, 0o600)
    key_file.write_text("not hex\n")
    with pytest.raises(ConfigError, match="32 octets"):
        PskKeyStore(path)
    with pytest.raises(ConfigError, match="does not exist"):
        PskKeyStore(str(tmp_path / "other.db"), create=False)
    # another server key cannot open the rows sealed under the first
    key_file.write_text(os.urandom(32).hex())
    assert PskKeyStore(path).get("anything") is None


def test_plain_coap_is_off_by_default_only_when_coaps_is_configured() -> None:
    assert CoapConfig().insecure_allowed  # the quick start is unchanged
    assert CoapConfig().secure_address is None
    secure = CoapConfig(secure_bind="0.0.0.0")
    assert not secure.insecure_allowed
    assert secure.secure_address == ("0.0.0.0", 5684)
    assert CoapConfig(
        secure_bind="0.0.0.0:5684", allow_insecure="true"
    ).insecure_allowed
    config = load_config(None, {}, {"coap.allow_insecure": True})
    assert config.coap.insecure_allowed
    with pytest.raises(ConfigError, match="allow_insecure"):
        CoapConfig(allow_insecure="maybe")
    with pytest.raises(ConfigError, match="dtls_key_length"):
        CoapConfig(dtls_key_length=44)
    with pytest.raises(ConfigError, match="dtls_max_per_host"):
        CoapConfig(dtls_max_per_host=0)


class _Keys:
    def __init__(self, keys: dict[str, bytes]) -> None:
        self._keys = keys

    def get(self, identity: str) -> bytes | None:
        return self._keys.get(identity)


def test_a_session_registers_only_its_own_identity() -> None:
    keys = _Keys({"ue1": b"T1"})
    reg = Reg(
        ue_service_id="ue1",
        ue_credential_info=UECredentialInfo(auth_type="NONE", credential=""),
    )
    peer = identity_peer("ue1")
    assert identity_of(peer) == "ue1" and is_secure_contact(peer[0])
    assert identity_of(("127.0.0.1", 5684)) is None
    bound = bind_identity(reg, peer, keys)  # type: ignore[arg-type]
    assert bound.ue_credential_info == UECredentialInfo(
        auth_type="PSK_TOKEN", credential="T1"
    )
    other = msgspec.structs.replace(reg, ue_service_id="ue2")
    with pytest.raises(NotAuthorized, match="registers only itself"):
        bind_identity(other, peer, keys)  # type: ignore[arg-type]
    with pytest.raises(NotAuthorized, match="no DTLS key"):
        bind_identity(reg, peer, _Keys({}))  # type: ignore[arg-type]
    msg = Msg(
        originating_ue_service_id="ue1",
        recipient_ue_service_id="ue2",
        message_id="m",
        payload=b"x",
    )
    assert bind_identity(msg, peer, keys) is msg  # type: ignore[arg-type]


def test_ue_add_dtls_stores_the_token_and_ue_remove_forgets_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = str(tmp_path / "psk.db")
    monkeypatch.setenv("MSGIN5G_COAP_PSK_STORE", store)
    common = ["--storage", f"sqlite:///{tmp_path / 'x.db'}"]
    assert main(["ue", "add", "ue1", "--secret", "s1", "--dtls", *common]) == 0
    assert main(["ue", "add", "ue2", "--secret", "s2", *common]) == 0
    keys = PskKeyStore(store, create=False)
    assert keys.get("ue1") == psk_token("s1", "ue1").encode()
    assert keys.get("ue2") is None  # digest-only unless asked
    keys.close()
    assert main(["ue", "remove", "ue1", *common]) == 0
    keys = PskKeyStore(store, create=False)
    assert keys.get("ue1") is None
    keys.close()
    capsys.readouterr()


def test_serve_help_explains_coaps(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--coaps" in out and "DTLS" in out
