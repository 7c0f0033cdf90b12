"""The ``messageType`` member alone, for error bodies (:func:`.ue_payload.message_type_of`).

Its own module, kept interpreted, so that :mod:`.ue_payload` can be compiled
with mypyc: a ``msgspec.Struct`` defined in a compiled module loses its class
keywords (``rename="camel"`` here) and its annotations (docs/performance.md,
"Compiled hot path").
"""

import msgspec

__all__ = ["MessageTypeOnly"]


class MessageTypeOnly(msgspec.Struct, rename="camel"):
    """Just the ``messageType`` of a payload."""

    message_type: object = None
