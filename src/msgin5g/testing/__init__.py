"""Test helpers shipped with msgin5g (never imported by the rest of ``src``)."""

from msgin5g.testing.clock import ManualClock
from msgin5g.testing.fakes import FakeClock, RecordingDeliverer

__all__ = ["FakeClock", "ManualClock", "RecordingDeliverer"]
