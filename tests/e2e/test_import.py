"""``msgin5g ue import`` next to a running server: imported UEs register at once.

Real processes: ``msgin5g serve`` on a private SQLite file and port, the import
CLI writing to the same file (WAL: a second writer process), and UEs
registering with ``msgin5g ue register`` over CoAP on loopback.
"""

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess, msgin5g

pytestmark = pytest.mark.timeout(120)


def _register(server: ServerProcess, ue: str, secret: str) -> dict[str, object]:
    result = msgin5g(
        "ue", "register", ue, "--secret", secret, "--server", server.url,
        "--bind", "127.0.0.1:0", check=False,
    )  # fmt: skip
    answer: dict[str, object] = json.loads(result.stdout.splitlines()[0])
    return answer


def test_ues_imported_while_the_server_runs_register(
    server: ServerProcess, tmp_path: Path
) -> None:
    ues = tmp_path / "ues.csv"
    rows = "".join(f"imp-{n},secret-{n}\n" for n in range(2_000))
    ues.write_text("ueServiceId,secret\n" + rows + "ue1,not-the-provisioned-one\n")

    result = msgin5g("ue", "import", str(ues), "--storage", server.storage, check=False)
    assert result.returncode == 1  # ue1 was provisioned before, no --force
    assert "line 2002: ueServiceId 'ue1' is already provisioned" in result.stderr
    assert "imported 2,000 UEs, 1 bad lines" in result.stderr

    for n in (0, 1_999):
        answer = _register(server, f"imp-{n}", f"secret-{n}")
        assert answer["registrationResult"] == "SUCCESS", answer
    wrong = msgin5g(
        "ue", "register", "imp-5", "--secret", "secret-6", "--server", server.url,
        "--bind", "127.0.0.1:0", check=False,
    )  # fmt: skip
    assert wrong.returncode != 0
    assert "AUTHENTICATION_FAILED" in wrong.stderr
    assert _register(server, "ue1", "s1")["registrationResult"] == "SUCCESS"


def test_digests_exported_from_one_server_import_into_another(
    server: ServerProcess, tmp_path: Path
) -> None:
    exported = msgin5g("ue", "export", "--storage", server.storage).stdout
    other = ServerProcess(tmp_path / "other.db")
    (tmp_path / "digests.csv").write_text(exported)
    msgin5g("ue", "import", str(tmp_path / "digests.csv"), "--storage", other.storage)
    other.start()
    try:
        assert _register(other, "ue2", "s2")["registrationResult"] == "SUCCESS"
    finally:
        err = other.stop()
    assert "Traceback" not in err, err
