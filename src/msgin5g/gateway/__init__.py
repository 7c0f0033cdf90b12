"""MSGin5G Gateway UE: bulk registration, relay and configuration for constrained UEs.

:class:`Gateway` runs a gateway (``msgin5g gateway``); :class:`ConstrainedUE` is
the device side of MSGin5G-5/-6 (a simulated constrained UE, ``msgin5g ue
register --via-gateway``). See ``docs/gateway.md``.
"""

from msgin5g.gateway.config import GatewayConfig
from msgin5g.gateway.core import Gateway
from msgin5g.gateway.device import ConstrainedUE, Registration

__all__ = ["ConstrainedUE", "Gateway", "GatewayConfig", "Registration"]
