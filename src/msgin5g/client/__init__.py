"""MSGin5G Client: the device-side library (TS 24.538 client procedures).

Example::

    async with Client("meter-1", secret="s3cret", server="coap://127.0.0.1:5683") as ue:
        await ue.register()
        await ue.send("valve-7", b"OPEN", report=True)
        async for item in ue:
            print(item)
"""

from msgin5g.client.core import Client, Received

__all__ = ["Client", "Received"]
