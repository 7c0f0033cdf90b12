"""MSGG_BGDelivery, ``{apiRoot}/msgg-bgdelivery/v1`` (TS 29.538; digest §2.14).

Skeleton: the route arrives with the broadcast work (issue #4).
"""

from fastapi import APIRouter

from msgin5g.transports.rest.asgi import RestContext

__all__ = ["PREFIX", "router"]

PREFIX = "/msgg-bgdelivery/v1"


def router(ctx: RestContext) -> APIRouter:
    """The MSGG_BGDelivery routes bound to ``ctx``."""
    return APIRouter(prefix=PREFIX)
