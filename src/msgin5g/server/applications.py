"""Provisioning of OAuth2 clients for Application Servers (``msgin5g as add``).

Works directly on the storage file like ``ue add``; a running server sees the
new client at its next token request.
"""

from msgin5g.model.credentials import generate_secret
from msgin5g.runtime import SystemClock
from msgin5g.service.applications import ApplicationRegistry
from msgin5g.storage import open_backend

__all__ = ["provision_as_client"]


async def provision_as_client(
    url: str,
    client_id: str,
    secret: str | None = None,
    *,
    synchronous: str = "FULL",
    role: str = "as",
    ues: list[str] | None = None,
) -> str:
    """Provision an OAuth2 client; returns the secret (generated when not given)."""
    secret = secret or generate_secret()
    backend = open_backend(url, synchronous=synchronous)
    await backend.start()
    try:
        await ApplicationRegistry(backend, SystemClock()).add_client(
            client_id, secret, role=role, ues=ues
        )
    finally:
        await backend.aclose()
    return secret
