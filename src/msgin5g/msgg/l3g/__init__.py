"""Legacy 3GPP Message Gateway (TS 23.554 §5.3.4.2; digest §2.10.2, §2.10.4).

Reaches Legacy 3GPP UEs with SMS through an operator's SMSC over SMPP 3.4,
acting as an ESME (:mod:`.esme`, on the ``aiosmpplib`` library); maps UE
Service IDs to MSISDNs (:mod:`.directory`); :mod:`.gateway` is the process.
"""
