"""Message Gateways: the Legacy 3GPP (``l3g``) and Non-3GPP (``n3g``) gateways.

Each gateway is its own process (``msgin5g l3g`` / ``msgin5g n3g``) and talks to
the MSGin5G Server only over HTTP, like any TS 29.538 consumer (digest §2.4,
§2.10, §3.5-§3.7):

* it serves ``MSGG_L3GDelivery`` / ``MSGG_N3GDelivery`` (:mod:`.api`) to the
  server: messages for its UEs and reports for messages its UEs sent;
* it registers the UE Service IDs it represents with the server
  (:mod:`.server_link`, the project's ``/msgs-gwregistration/v1``) and refreshes
  that registration;
* it sends what its UEs originate (``deliver-ue-message``) and their delivery
  reports (``deliver-report``) through ``MSGS_MSGDelivery``, from a durable
  SQLite outbox (:mod:`.outbox`), so neither an outage of the server nor of the
  gateway's own network (SMSC, MQTT broker) loses what was acknowledged.

Shared parts live here once; ``l3g`` adds SMPP 3.4 towards an SMSC, ``n3g``
plain MQTT towards devices. Nothing here imports the server's service,
storage or server packages (import-linter contract).
"""
