"""Composition root: builds backend, service and transports from a ServerConfig."""

from msgin5g.server.admin import list_ues, provision_ue, remove_ue
from msgin5g.server.app import Server

__all__ = ["Server", "list_ues", "provision_ue", "remove_ue"]
