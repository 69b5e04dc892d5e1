"""``/_stackgate/...``: the gateway's own endpoints."""

from gateway.admin.app import AdminApp

__all__ = ["AdminApp"]
