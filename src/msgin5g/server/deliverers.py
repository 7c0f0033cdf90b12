"""The service's one ``Deliverer``, over every binding a UE may be reached on.

The delivery engine knows one port; a UE's contact says which binding reaches
it: an MQTT contact (:attr:`~msgin5g.model.registry.Contact.is_mqtt`) goes to
the MQTT transport, every other to the CoAP transport. The dispatch is one
attribute test per delivery, so a CoAP-only server pays nothing for MQTT.
"""

import asyncio

from msgin5g.model.messages import DownlinkItem
from msgin5g.model.registry import Contact
from msgin5g.service.ports import Deliverer

__all__ = ["BindingDeliverer"]


class BindingDeliverer:
    """Delivers through ``coap``, or through ``mqtt`` for MQTT contacts."""

    def __init__(self, coap: Deliverer, mqtt: Deliverer) -> None:
        self._coap = coap
        self._mqtt = mqtt

    def _for(self, contact: Contact) -> Deliverer:
        return self._mqtt if contact.is_mqtt else self._coap

    async def deliver(self, contact: Contact, item: DownlinkItem) -> None:
        """Deliver ``item`` to the UE at ``contact`` (see ``Deliverer``)."""
        await self._for(contact).deliver(contact, item)

    def deliver_nowait(
        self, contact: Contact, item: DownlinkItem
    ) -> asyncio.Future[None]:
        """Start delivering ``item``; the future ends as :meth:`deliver` would."""
        return self._for(contact).deliver_nowait(contact, item)

    def abandon(self, contact: Contact) -> None:
        """Give up on outstanding deliveries to ``contact``."""
        self._for(contact).abandon(contact)
