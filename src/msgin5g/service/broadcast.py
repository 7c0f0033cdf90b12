"""Broadcast areas (TS 23.554 §8.4.3, §8.6; digest §2.14).

Skeleton: areas arrive with the broadcast work (issue #4). Until then every
Broadcast Area ID is unknown.
"""

from msgin5g.config import DeliveryConfig
from msgin5g.model.messages import Msg
from msgin5g.service.ports import Clock
from msgin5g.spec.causes import FailureCause
from msgin5g.storage.base import Backend

__all__ = ["BroadcastRegistry"]


class BroadcastRegistry:
    """Broadcast areas and the UEs in them."""

    def __init__(self, backend: Backend, clock: Clock, config: DeliveryConfig) -> None:
        self._backend = backend
        self._clock = clock
        self._config = config

    async def members(self, area_id: str) -> list[str] | None:
        """UE Service IDs registered in the area; None if the area is unknown."""
        return None

    def refusal(self, msg: Msg, area_id: str) -> FailureCause | None:
        """Why the originator of ``msg`` may not broadcast there (None: allowed)."""
        return None
