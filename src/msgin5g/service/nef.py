"""UE reachability monitoring and device triggering through a NEF (TS 23.554 §8.9.2, §8.9.3).

The server is the AF (SCS/AS) of TS 29.122's T8 APIs (architecture digest §2.17,
§2.18, §4; docs/nef.md). This module decides *what* to ask and what the answers
mean; :mod:`msgin5g.transports.rest.nef_client` speaks HTTP and
:mod:`msgin5g.transports.rest.nef_callbacks` receives the notifications.

* **Whom to monitor**: a registered UE that gave a UE identifier (``externalId``
  or ``msisdn`` of its ``triggeringInfo``) and either announced a
  ``commAvailability`` at registration or has items stored for it. Two
  MonitoringEvent subscriptions per UE: ``UE_REACHABILITY`` and
  ``LOSS_OF_CONNECTIVITY`` (``monitorExpireTime`` = now + ``nef.monitor_duration``),
  deleted on de-registration, created again after the NEF cancels them
  (``cancelInd``) while the UE is still registered.
* **Reports**: ``UE_REACHABILITY`` → the delivery engine releases the UE and
  delivers what is stored; ``LOSS_OF_CONNECTIVITY`` → the engine holds it: new
  items are stored without a delivery attempt and the periodic retry skips it.
* **Device triggering**: when items wait for a registered UE that gave its
  identifier and a client port, a DeviceTriggering transaction is created (at
  most one per UE per ``nef.trigger_min_interval``), payload the JSON of
  protocol digest §3.15, ``priority`` ``PRIORITY`` when a waiting message has
  priority HIGH; not before the UE's next communication window unless one is
  HIGH (protocol digest §3.15 step 2). Its delivery report: ``FAILURE`` holds the UE;
  ``UNKNOWN``/``EXPIRED`` allow the next trigger at once; ``SUCCESS`` waits
  for the client's registration, which delivers.

NEF failures never reach the UE's traffic: a refused or failed request is
logged (one line, the NEF's status) and retried at the next occasion.
"""

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from msgin5g.config_network import NefConfig
from msgin5g.errors import MSGin5GError
from msgin5g.runtime import Clock, Supervisor
from msgin5g.service.delivery import DeliveryEngine
from msgin5g.service.registry import Registry
from msgin5g.service.schedule import window_of
from msgin5g.spec.delivery import MSGIN5G_SERVICE_ID

__all__ = [
    "LOSS_OF_CONNECTIVITY",
    "UE_REACHABILITY",
    "MonitoringReport",
    "NefApi",
    "Reachability",
    "UeIdentity",
    "trigger_payload",
]

log = logging.getLogger(__name__)

UE_REACHABILITY = "UE_REACHABILITY"
LOSS_OF_CONNECTIVITY = "LOSS_OF_CONNECTIVITY"
MONITORING_TYPES = (UE_REACHABILITY, LOSS_OF_CONNECTIVITY)


@dataclass(frozen=True, slots=True)
class UeIdentity:
    """How the NEF knows a UE: ``externalId`` or ``msisdn`` (TS 29.122)."""

    external_id: str | None = None
    msisdn: str | None = None


@dataclass(frozen=True, slots=True)
class MonitoringReport:
    """What the server reads of a ``MonitoringEventReport``."""

    monitoring_type: str
    external_id: str | None = None
    msisdn: str | None = None


class NefApi(Protocol):
    """The T8 requests the server makes (the HTTP client implements it)."""

    async def subscribe(
        self, ue: UeIdentity, monitoring_type: str, expire: datetime
    ) -> str:
        """Create a MonitoringEvent subscription; returns its resource URI.

        Raises:
            UpstreamError: the NEF refused, failed or answered garbage.
        """
        ...

    async def unsubscribe(self, subscription: str) -> None:
        """Delete a MonitoringEvent subscription (404: already gone)."""
        ...

    async def trigger(
        self, ue: UeIdentity, port: int, payload: bytes, validity: int, urgent: bool
    ) -> str:
        """Create a DeviceTriggering transaction; returns its resource URI."""
        ...


def trigger_payload(ue_service_id: str, pending: int) -> bytes:
    """The trigger payload of protocol digest §3.15 (compact JSON, UTF-8)."""
    body = {
        "msgin5gServiceId": MSGIN5G_SERVICE_ID,
        "ueServiceId": ue_service_id,
        "pending": pending,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _profile(raw: str) -> dict[str, object]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _identity_and_port(
    profile: dict[str, object],
) -> tuple[UeIdentity | None, int | None]:
    info = profile.get("triggering_info")
    if not isinstance(info, dict):
        return None, None
    ext, msisdn = info.get("externalId"), info.get("msisdn")
    ident = UeIdentity(
        external_id=ext if isinstance(ext, str) else None,
        msisdn=msisdn if isinstance(msisdn, str) else None,
    )
    if ident.external_id is None and ident.msisdn is None:
        return None, None
    port = None
    for ports in (info.get("clientPorts"), profile.get("client_ports")):
        if isinstance(ports, list) and ports and isinstance(ports[0], dict):
            value = ports[0].get("port")
            if isinstance(value, int):
                port = value
                break
    return ident, port


class Reachability:
    """The NEF side of delivery; a :class:`~msgin5g.service.ports.Watcher`."""

    def __init__(
        self,
        config: NefConfig,
        api: NefApi,
        *,
        registry: Registry,
        delivery: DeliveryEngine,
        clock: Clock,
        tasks: Supervisor,
    ) -> None:
        self._config = config
        self._api = api
        self._registry = registry
        self._delivery = delivery
        self._clock = clock
        self._tasks = tasks
        self._subscriptions: dict[str, str] = {}  # subscription URI -> UE
        self._by_ue: dict[str, dict[str, str]] = {}  # UE -> {monitoring type: URI}
        self._pending_subscribe: set[str] = set()
        self._transactions: dict[str, str] = {}  # transaction URI -> UE
        self._last_trigger: dict[str, float] = {}
        self.triggers = 0
        self.nef_failures = 0

    # Watcher --------------------------------------------------------------------

    def registered(self, ue_service_id: str) -> None:
        """Monitor a UE that announced a communication schedule."""
        registration = self._registry.get(ue_service_id)
        if registration is None:
            return
        if "comm_availability" in _profile(registration.profile):
            self._ensure_monitoring(ue_service_id)

    def deregistered(self, ue_service_id: str) -> None:
        """Stop monitoring; forget trigger state."""
        self._last_trigger.pop(ue_service_id, None)
        for uri in self._by_ue.pop(ue_service_id, {}).values():
            self._subscriptions.pop(uri, None)
            self._tasks.spawn(self._unsubscribe(uri), name="nef unsubscribe")

    def waiting(self, ue_service_id: str, urgent: bool) -> None:
        """Items wait for a registered UE: monitor it and maybe trigger it."""
        self._ensure_monitoring(ue_service_id)
        self._maybe_trigger(ue_service_id, urgent)

    # notifications (from the callback endpoint) ----------------------------------

    def is_subscription(self, uri: str) -> bool:
        """Whether ``uri`` is one of this server's live subscriptions."""
        return uri in self._subscriptions

    def is_transaction(self, uri: str) -> bool:
        """Whether ``uri`` is a trigger transaction this server created."""
        return uri in self._transactions

    def notified(
        self, subscription: str, reports: list[MonitoringReport], cancelled: bool
    ) -> None:
        """A ``MonitoringNotification`` for ``subscription`` (known: checked)."""
        ue = self._subscriptions.get(subscription)
        if ue is None:
            return
        for report in reports:
            if report.monitoring_type == UE_REACHABILITY:
                log.info("NEF: %s is reachable; delivering what is stored", ue)
                self._delivery.release(ue)
            elif report.monitoring_type == LOSS_OF_CONNECTIVITY:
                log.info("NEF: %s lost connectivity; storing its messages", ue)
                self._delivery.hold(ue)
        if cancelled:
            self._subscriptions.pop(subscription, None)
            kinds = self._by_ue.get(ue, {})
            for kind, uri in list(kinds.items()):
                if uri == subscription:
                    del kinds[kind]
            if self._registry.get(ue) is not None:
                log.info("NEF cancelled monitoring of %s; subscribing again", ue)
                self._ensure_monitoring(ue)

    def trigger_reported(self, transaction: str, result: str) -> None:
        """A ``DeviceTriggeringDeliveryReportNotification`` (known: checked)."""
        ue = self._transactions.get(transaction)
        if ue is None:
            return
        log.info("NEF: trigger of %s: %s", ue, result)
        if result in {"TRIGGERED", "UNCONFIRMED"}:
            return  # still in progress
        self._transactions.pop(transaction, None)
        if result == "FAILURE":
            self._delivery.hold(ue)
        elif result in {"UNKNOWN", "EXPIRED"}:
            self._last_trigger.pop(ue, None)  # the next waiting item triggers

    # internals ----------------------------------------------------------------------

    def _identity(self, ue_service_id: str) -> tuple[UeIdentity | None, int | None]:
        registration = self._registry.get(ue_service_id)
        if registration is None:
            return None, None
        return _identity_and_port(_profile(registration.profile))

    def _ensure_monitoring(self, ue_service_id: str) -> None:
        if ue_service_id in self._pending_subscribe:
            return
        have = self._by_ue.get(ue_service_id, {})
        missing = [kind for kind in MONITORING_TYPES if kind not in have]
        if not missing:
            return
        ident, _ = self._identity(ue_service_id)
        if ident is None:
            return
        self._pending_subscribe.add(ue_service_id)
        self._tasks.spawn(
            self._subscribe(ue_service_id, ident, missing), name="nef subscribe"
        )

    async def _subscribe(
        self, ue_service_id: str, ident: UeIdentity, kinds: list[str]
    ) -> None:
        expire = datetime.fromtimestamp(
            self._clock.now() + self._config.monitor_duration, tz=UTC
        )
        try:
            for kind in kinds:
                uri = await self._api.subscribe(ident, kind, expire)
                self._subscriptions[uri] = ue_service_id
                self._by_ue.setdefault(ue_service_id, {})[kind] = uri
        except MSGin5GError as exc:
            self.nef_failures += 1
            log.warning("NEF monitoring of %s failed: %s", ue_service_id, exc)
        finally:
            self._pending_subscribe.discard(ue_service_id)

    async def _unsubscribe(self, uri: str) -> None:
        try:
            await self._api.unsubscribe(uri)
        except MSGin5GError as exc:
            self.nef_failures += 1
            log.warning("NEF: deleting %s failed: %s", uri, exc)

    def _maybe_trigger(self, ue_service_id: str, urgent: bool) -> None:
        registration = self._registry.get(ue_service_id)
        if registration is None:
            return
        profile = _profile(registration.profile)
        ident, port = _identity_and_port(profile)
        if ident is None or port is None:
            return  # no triggering information: wait (digest §4 rule 92)
        now = self._clock.now()
        window = window_of(registration.profile)
        if not urgent and window is not None:
            is_open, opens_in = window.state(now)
            if not is_open and opens_in is not None:
                return  # its next window delivers (protocol digest §3.15 step 2)
        last = self._last_trigger.get(ue_service_id)
        if last is not None and now - last < self._config.trigger_min_interval:
            return
        self._last_trigger[ue_service_id] = now
        pending = max(1, self._delivery.quotas.usage(ue_service_id)[0])
        self._tasks.spawn(
            self._trigger(ue_service_id, ident, port, pending, urgent),
            name="nef trigger",
        )

    async def _trigger(
        self,
        ue_service_id: str,
        ident: UeIdentity,
        port: int,
        pending: int,
        urgent: bool,
    ) -> None:
        payload = trigger_payload(ue_service_id, pending)
        try:
            uri = await self._api.trigger(
                ident, port, payload, self._config.trigger_validity, urgent=urgent
            )
        except MSGin5GError as exc:
            self.nef_failures += 1  # next try after trigger_min_interval
            log.warning("NEF trigger of %s failed: %s", ue_service_id, exc)
            return
        self.triggers += 1
        self._transactions[uri] = ue_service_id
        log.info("NEF: triggered %s (%s)", ue_service_id, uri)
