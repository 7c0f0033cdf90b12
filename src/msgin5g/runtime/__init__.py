"""Run-time plumbing shared by every layer: one clock and one task supervisor.

Nothing here knows about MSGin5G; the modules import nothing from the rest of
``msgin5g``, so the device side (``client``, ``gateway``) and the server side may
all depend on them.

* :mod:`msgin5g.runtime.clock`: :class:`Clock` (wall time, monotonic time,
  ``sleep``, ``call_later``) and :func:`wait_for` on top of it; tests inject
  :class:`msgin5g.testing.ManualClock` and never sleep for real.
* :mod:`msgin5g.runtime.supervisor`: :class:`Supervisor`, the one owner of
  background tasks (an :class:`asyncio.TaskGroup` that logs and counts task
  failures instead of dropping them).
"""

from msgin5g.runtime.clock import Clock, SystemClock, Timer, wait_for
from msgin5g.runtime.supervisor import Supervisor

__all__ = ["Clock", "Supervisor", "SystemClock", "Timer", "wait_for"]
