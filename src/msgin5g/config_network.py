"""Configuration of the server's network peers: the NEF (``[nef]``) and peer servers (``[peers]``).

Kept out of :mod:`msgin5g.config` (already near its size budget); that module
registers both sections, so they load from TOML, ``MSGIN5G_NEF_*`` /
``MSGIN5G_PEERS_*`` variables and ``--set`` like every other section.

* ``[nef]`` (docs/nef.md): the TS 29.122 T8 northbound API of a NEF/SCEF that
  the server uses as AF (SCS/AS) for UE reachability monitoring and device
  triggering. Off while ``url`` is empty.
* ``[peers]`` (docs/federation.md): MSGin5G-8, other MSGin5G Servers that serve
  the UE Service IDs of a domain (``ue@domain``), reached over their
  ``/msgs-msgdelivery/v1`` API.
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from msgin5g.errors import ConfigError

__all__ = ["NefConfig", "PeersConfig", "parse_routes"]


def _http_url(section: str, key: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{section}.{key}: an http:// or https:// URL, got {value!r}")


@dataclass(frozen=True, slots=True)
class NefConfig:
    """A NEF/SCEF T8 API (TS 29.122 MonitoringEvent and DeviceTriggering)."""

    url: str = ""
    """``{apiRoot}`` of the NEF (e.g. ``https://nef.operator.example``); empty:
    no reachability monitoring and no device triggering."""
    scs_as_id: str = "msgin5g"
    """The ``{scsAsId}`` (AF identifier) the NEF knows this server by."""
    callback_url: str = ""
    """Where the NEF posts notifications: this server's ``{apiRoot}`` as the
    NEF reaches it (the paths ``/nef-callbacks/v1/...`` are appended). Empty:
    ``http://`` + ``rest.bind``."""
    token_url: str = ""
    """OAuth2 token endpoint (client credentials, TS 29.122 §6.1); empty: no
    token is sent."""
    client_id: str = ""
    """OAuth2 client id of this server at the NEF."""
    client_secret: str = ""
    """OAuth2 client secret of this server at the NEF."""
    timeout: float = 5.0
    """Timeout of one request to the NEF (s)."""
    monitor_duration: float = 86400.0
    """Lifetime asked for a UE_REACHABILITY subscription (``monitorExpireTime``
    = now + this, s); renewed while the UE is still of interest."""
    reachability_type: str = "DATA"
    """``reachabilityType`` asked for: ``DATA`` (MSGin5G-1) or ``SMS``."""
    trigger_min_interval: float = 600.0
    """At most one device trigger per UE in this time (s; protocol digest
    §3.15 TRIGGER_MIN_INTERVAL)."""
    trigger_validity: int = 3600
    """``validityPeriod`` of a trigger (s) unless the oldest stored message
    expires sooner."""

    def __post_init__(self) -> None:
        if self.url:
            _http_url("nef", "url", self.url)
        for key in ("callback_url", "token_url"):
            value = getattr(self, key)
            if value:
                _http_url("nef", key, value)
        if self.reachability_type not in {"DATA", "SMS"}:
            raise ConfigError("nef.reachability_type: DATA or SMS")
        if self.timeout <= 0 or self.monitor_duration <= 0:
            raise ConfigError("nef.timeout, nef.monitor_duration: positive")
        if self.trigger_min_interval < 0 or self.trigger_validity <= 0:
            raise ConfigError("nef.trigger_min_interval >= 0, trigger_validity > 0")

    @property
    def enabled(self) -> bool:
        """Whether a NEF is configured."""
        return bool(self.url)


def parse_routes(text: str) -> dict[str, str]:
    """``"b.example=https://b:8080, c.example=http://c"`` → ``{domain: apiRoot}``.

    Raises:
        ConfigError: an entry without ``=``, an empty domain or a bad URL.
    """
    routes: dict[str, str] = {}
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        domain, sep, url = entry.partition("=")
        domain, url = domain.strip().lower(), url.strip()
        if not sep or not domain or "@" in domain:
            raise ConfigError(f"peers.routes: {entry!r} is not DOMAIN=URL")
        _http_url("peers", "routes", url)
        routes[domain] = url.rstrip("/")
    return routes


@dataclass(frozen=True, slots=True)
class PeersConfig:
    """MSGin5G-8: peer MSGin5G Servers by domain (docs/federation.md)."""

    domain: str = ""
    """This server's own domain: ``ue@<domain>`` and IDs without ``@`` are
    local. Empty: no server-to-server routing."""
    routes: str = ""
    """Static routing table, comma-separated ``DOMAIN=URL`` where URL is the
    peer's ``{apiRoot}`` (``b.example=https://msg.b.example:8443``)."""
    client_id: str = ""
    """This server's OAuth2 client id at its peers (they provision it with
    ``msgin5g as add ID --role peer``; by convention our ``domain``). Empty:
    no token is asked (peers without ``rest.oauth2``)."""
    client_secret: str = ""
    """The secret that goes with ``client_id``."""
    ca_file: str = ""
    """PEM CA bundle to verify the peers' TLS certificates (``https`` routes);
    empty: the system's CAs."""
    cert_file: str = ""
    """PEM client certificate (with ``key_file``) for mutual TLS to peers."""
    key_file: str = ""
    """PEM private key of ``cert_file``."""
    timeout: float = 10.0
    """Timeout of one request to a peer (s)."""

    def __post_init__(self) -> None:
        if "@" in self.domain:
            raise ConfigError("peers.domain: a domain, without '@'")
        table = parse_routes(self.routes)
        if table and not self.domain:
            raise ConfigError("peers.routes needs peers.domain (this server's own)")
        if self.domain.lower() in table:
            raise ConfigError("peers.routes: names this server's own domain")
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("peers.cert_file and peers.key_file go together")
        if self.timeout <= 0:
            raise ConfigError("peers.timeout: positive")

    @property
    def table(self) -> dict[str, str]:
        """The routing table, domain → ``{apiRoot}``."""
        return parse_routes(self.routes)
