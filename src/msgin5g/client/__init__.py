"""MSGin5G Client: the device-side library (TS 24.538 client procedures).

Example::

    async with Client("meter-1", secret="s3cret", server="coap://127.0.0.1:5683") as ue:
        await ue.register()
        await ue.send("valve-7", b"OPEN", report=True)
        async for item in ue:
            print(item)

Layout: ``core`` (the :class:`Client`: lifecycle, the request API, registration),
``messaging`` (uplink messaging procedures), ``inbox`` (reception, reports,
reassembly), ``transport`` (the transport protocol, CoAP and in-memory),
``wire`` (MSGin5G-1-over-CoAP helpers shared with the gateway).
"""

from msgin5g.client.core import Client, Received
from msgin5g.client.transport import ClientTransport, CoapTransport, MockTransport

__all__ = ["Client", "ClientTransport", "CoapTransport", "MockTransport", "Received"]
