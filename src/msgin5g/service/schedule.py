"""Delivery inside the UE's communication windows (``commAvailability``, TS 23.554 Table 8.2.1-3).

A UE may announce at registration when it will be reachable: from
``scheduledCommTime`` for ``commDurationTime`` seconds, again every
``periodicCommInterval`` seconds when ``periodicCommIndicator`` is true
(protocol digest §3.8 step 1, architecture digest §2.17 last paragraph). Outside
its window the delivery engine **holds** the UE (items are stored, no delivery
attempt, no periodic retry); when a window opens it **releases** it (stored
items go out) and holds it again when the window closes. Timers run on the
injected clock.

What ends a hold early: any uplink from the UE or a new registration (it is
evidently awake; the engine clears the hold itself), or a NEF reachability
report (:mod:`.nef`). A one-off window that is over puts no hold: nothing more
is known about the UE, so it is treated as reachable until a delivery fails.
"""

import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime

from msgin5g.runtime import Clock, Timer
from msgin5g.service.delivery import DeliveryEngine
from msgin5g.service.registry import Registry

__all__ = ["CommSchedule", "Window", "window_of"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Window:
    """A communication window: ``start`` (epoch s), ``duration``, ``period`` (0: once)."""

    start: float
    duration: float
    period: float = 0.0

    def state(self, now: float) -> tuple[bool, float | None]:
        """(open now?, seconds until it next opens or closes; None: never again)."""
        if now < self.start:
            return False, self.start - now
        if self.period <= 0:
            end = self.start + self.duration
            return (True, end - now) if now < end else (False, None)
        cycles = math.floor((now - self.start) / self.period)
        opened = self.start + cycles * self.period
        if now < opened + self.duration:
            return True, opened + self.duration - now
        return False, opened + self.period - now


def window_of(profile: str) -> Window | None:
    """The window a stored registration profile announces, or None."""
    if '"comm_availability"' not in profile:  # most UEs: no JSON parse per REG
        return None
    try:
        avail = json.loads(profile).get("comm_availability")
        start = datetime.fromisoformat(avail["scheduledCommTime"]).timestamp()
        duration = float(avail["commDurationTime"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    period = 0.0
    if avail.get("periodicCommIndicator") and avail.get("periodicCommInterval"):
        period = float(avail["periodicCommInterval"])
    if period and duration >= period:
        return None  # always open: nothing to schedule
    return Window(start, duration, period)


class CommSchedule:
    """Holds and releases UEs by their windows; a :class:`~.ports.Watcher`."""

    def __init__(
        self, registry: Registry, delivery: DeliveryEngine, clock: Clock
    ) -> None:
        self._registry = registry
        self._delivery = delivery
        self._clock = clock
        self._timers: dict[str, Timer] = {}
        self._windows: dict[str, Window] = {}

    def registered(self, ue_service_id: str) -> None:
        """Plan the UE's windows (a new registration replaces the old plan)."""
        self._cancel(ue_service_id)
        registration = self._registry.get(ue_service_id)
        window = None if registration is None else window_of(registration.profile)
        if window is None:
            return
        self._windows[ue_service_id] = window
        is_open, delay = window.state(self._clock.now())
        if not is_open and delay is not None:
            log.info("%s: outside its window for %.0f s; storing", ue_service_id, delay)
            self._delivery.hold(ue_service_id)
        self._plan(ue_service_id, delay)

    def deregistered(self, ue_service_id: str) -> None:
        """Forget the UE's windows."""
        self._cancel(ue_service_id)

    def waiting(self, ue_service_id: str, urgent: bool) -> None:
        """Nothing to do: the next window delivers."""

    def _plan(self, ue_service_id: str, delay: float | None) -> None:
        if delay is None:
            self._windows.pop(ue_service_id, None)
            return
        self._timers[ue_service_id] = self._clock.call_later(
            max(delay, 0.0), lambda: self._edge(ue_service_id)
        )

    def _edge(self, ue_service_id: str) -> None:
        self._timers.pop(ue_service_id, None)
        window = self._windows.get(ue_service_id)
        if window is None or self._registry.get(ue_service_id) is None:
            return
        # a hair past the edge, so that state() lands inside the new phase
        is_open, delay = window.state(self._clock.now() + 1e-6)
        if is_open:
            log.info("%s: window open; delivering", ue_service_id)
            self._delivery.release(ue_service_id)
        elif delay is not None:  # closed until the next window
            self._delivery.hold(ue_service_id)
        self._plan(ue_service_id, delay)

    def _cancel(self, ue_service_id: str) -> None:
        timer = self._timers.pop(ue_service_id, None)
        if timer is not None:
            timer.cancel()
        self._windows.pop(ue_service_id, None)

    def planned(self) -> int:
        """UEs with a window timer (diagnostics)."""
        return len(self._timers)
