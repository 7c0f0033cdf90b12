"""Numbers, enumerations and constants copied from the 3GPP specifications.

No logic lives here and nothing from the rest of ``msgin5g`` is imported, so every
other layer may depend on it.
"""
