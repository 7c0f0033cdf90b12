"""UE Service ID ↔ MSISDN mapping and the gateway's own numbers (provisioned).

The mapping file has one UE per line, ``<UE Service ID>,<MSISDN>`` (``#``
starts a comment, blank lines are ignored); ``msgin5g l3g --ue ID=MSISDN``
adds entries on the command line. MSISDNs are digits, optionally with a
leading ``+`` (dropped: SMPP addresses are sent without it).

The gateway's numbers say where a mobile-originated SMS sent *to* them goes
(``--number NUMBER=TARGET``):

* ``reply`` — to whoever last sent an SMS to that MSISDN through this gateway
  (the mapping "kept from the earlier outgoing message", digest §2.10.4);
* ``ue:<UE Service ID>`` — to an MSGin5G UE (P2P);
* ``as:<AS Service ID>`` — to an Application Server (P2A).

The source number of mobile-terminated SMS (``--source``) is ``reply`` by
default, so a Legacy UE's answer reaches the sender.
"""

from pathlib import Path

from msgin5g.errors import ConfigError

__all__ = ["Directory", "Target"]

Target = tuple[str, str] | None
"""``("UE" | "AS", id)``, or None for ``reply``."""


def _msisdn(text: str, where: str) -> str:
    number = text.strip().removeprefix("+")
    if not number.isdigit() or not 3 <= len(number) <= 20:
        raise ConfigError(f"{where}: {text!r} is not an MSISDN (3-20 digits)")
    return number


class Directory:
    """Both directions of the UE mapping, and the numbers table."""

    def __init__(self) -> None:
        self._msisdn: dict[str, str] = {}
        self._ue: dict[str, str] = {}
        self.numbers: dict[str, Target] = {}

    def __len__(self) -> int:
        return len(self._msisdn)

    def add(self, ue_service_id: str, msisdn: str, where: str = "--ue") -> None:
        """Map a UE Service ID to an MSISDN (both must be unique)."""
        ue = ue_service_id.strip()
        number = _msisdn(msisdn, where)
        if not ue:
            raise ConfigError(f"{where}: empty UE Service ID")
        if self._ue.get(number, ue) != ue or self._msisdn.get(ue, number) != number:
            raise ConfigError(f"{where}: {ue} / {number} mapped twice")
        self._msisdn[ue] = number
        self._ue[number] = ue

    def load(self, path: Path) -> None:
        """Read a mapping file (see the module docstring)."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"--ues-file {path}: {exc.strerror}") from None
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            ue, sep, msisdn = text.partition(",")
            if not sep:
                raise ConfigError(f"{path}:{number}: expected UE_SERVICE_ID,MSISDN")
            self.add(ue, msisdn, f"{path}:{number}")

    def add_number(self, spec: str) -> None:
        """``NUMBER=reply|ue:<id>|as:<id>``."""
        number, sep, target = spec.partition("=")
        if not sep:
            raise ConfigError(f"--number {spec!r}: expected NUMBER=TARGET")
        key = _msisdn(number, "--number")
        kind, _, ident = target.partition(":")
        if target == "reply":
            self.numbers[key] = None
        elif kind in {"ue", "as"} and ident:
            self.numbers[key] = (kind.upper(), ident)
        else:
            raise ConfigError(f"--number {spec!r}: TARGET is reply, ue:<id> or as:<id>")

    def msisdn_of(self, ue_service_id: str) -> str | None:
        """The MSISDN of a UE this gateway represents."""
        return self._msisdn.get(ue_service_id)

    def ue_of(self, msisdn: str) -> str | None:
        """The UE Service ID of an MSISDN (a leading ``+`` is ignored)."""
        return self._ue.get(msisdn.removeprefix("+"))

    def ue_service_ids(self) -> list[str]:
        """Every represented UE Service ID, sorted."""
        return sorted(self._msisdn)
