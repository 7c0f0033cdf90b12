"""SS_GroupManagement, ``{apiRoot}/ss-gm/v1`` (TS 29.549; digest §5).

Skeleton: the routes arrive with the SEAL group management work (issue #4).
"""

from fastapi import APIRouter

from msgin5g.transports.rest.asgi import RestContext

__all__ = ["PREFIX", "router"]

PREFIX = "/ss-gm/v1"


def router(ctx: RestContext) -> APIRouter:
    """The SS_GroupManagement routes bound to ``ctx``."""
    return APIRouter(prefix=PREFIX)
