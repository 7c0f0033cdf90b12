"""Non-3GPP Message Gateway (TS 23.554 §5.3.4.3; digest §2.10.3, §2.10.5).

Reaches devices that know nothing of MSGin5G over plain MQTT through a broker
(:mod:`.gateway`).
"""
