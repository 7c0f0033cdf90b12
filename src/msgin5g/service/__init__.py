"""Domain logic of the MSGin5G Server (use cases). No wire formats, no drivers.

Transports call :class:`~msgin5g.service.messaging.MessagingService`; outbound
delivery goes through the :class:`~msgin5g.service.ports.Deliverer` port that the
transports implement and ``msgin5g.server`` wires in.
"""

from msgin5g.service.messaging import MessagingService, RegistrationOutcome
from msgin5g.service.ports import Clock, Deliverer, SystemClock

__all__ = [
    "Clock",
    "Deliverer",
    "MessagingService",
    "RegistrationOutcome",
    "SystemClock",
]
