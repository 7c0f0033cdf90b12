"""msgin5g: the 3GPP MSGin5G Service in Python."""
