"""Client of MSGG_L3GDelivery / MSGG_N3GDelivery: the server delivers to gateways.

TS 29.538 (digest §3.6, §3.7, §2.10.2): a Legacy 3GPP Message Gateway serves
``{apiRoot}/msgg-l3gdelivery/v1``, a Non-3GPP one ``{apiRoot}/msgg-n3gdelivery/v1``,
each with

* ``POST /deliver-message`` — body ``L3gMessageDelivery`` / ``N3gMessageDelivery``
  (``oriAddr``, ``destAddr``, ``appId``, ``msgId``, ``delivStReqInd``,
  ``payload``, ``segInd``, ``segParams``), answered ``204``;
* ``POST /deliver-report`` — body ``DeliveryStatusReport`` (a report for a
  message the gateway's UE sent), answered ``204``.

:class:`HttpGatewayDeliverer` implements both the
:class:`~msgin5g.service.ports.ASDeliverer` and the
:class:`~msgin5g.service.ports.GatewayDeliverer` port with one connection pool,
the same ``rest.target_networks`` pinning and the same outcome mapping
(:mod:`.outbound`): ``2xx`` delivered; connection error, timeout, ``408``,
``429``, ``5xx`` → retried with back-off; another ``4xx`` → dropped with a
failure report to the originator.
"""

import json
from typing import Any

from msgin5g.codec.openapi_json import report_from_imdn, ue_delivery_from_msg
from msgin5g.errors import DeliveryRejected
from msgin5g.model.messages import Imdn, Msg
from msgin5g.transports.rest.outbound import HttpASDeliverer

__all__ = ["API_NAMES", "HttpGatewayDeliverer", "gateway_message_body"]

API_NAMES = {"L3G": "msgg-l3gdelivery", "N3G": "msgg-n3gdelivery"}
"""API name in the URI, by gateway kind."""

_GATEWAY_MEMBERS = (
    "oriAddr",
    "destAddr",
    "appId",
    "msgId",
    "delivStReqInd",
    "payload",
    "segInd",
    "segParams",
)


def gateway_message_body(msg: Msg) -> dict[str, Any]:
    """The ``L3gMessageDelivery`` / ``N3gMessageDelivery`` object for ``msg``."""
    wire = ue_delivery_from_msg(msg).wire()
    return {k: wire[k] for k in _GATEWAY_MEMBERS if k in wire}


class HttpGatewayDeliverer(HttpASDeliverer):
    """The server's HTTP client towards ASs and Message Gateways."""

    async def deliver_to_gateway(
        self, kind: str, api_root: str, item: Msg | Imdn
    ) -> None:
        """POST ``item`` to the gateway's MSGG API; see the module docstring."""
        name = API_NAMES.get(kind)
        if name is None:
            raise DeliveryRejected(f"unknown Message Gateway kind {kind!r}")
        base = f"{api_root.rstrip('/')}/{name}/v1"
        if isinstance(item, Msg):
            body = _json(gateway_message_body(item))
            await self.post(base + "/deliver-message", body)
        else:
            body = report_from_imdn(item).model_dump_json(
                by_alias=True, exclude_none=True
            )
            await self.post(base + "/deliver-report", body)


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))
