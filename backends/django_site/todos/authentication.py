"""The API's caller: ``REMOTE_USER`` as the gateway set it, without a database row.

DRF's ``RemoteUserAuthentication`` asks the ``RemoteUserBackend``, which runs
``User.objects.get_or_create`` on every request (a query, and an insert per
new consumer) although the API only needs the name. The gateway already
authenticated the caller; this class keeps DRF's semantics (``REMOTE_USER``
from the WSGI environ, never from a header) and skips the database.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from rest_framework.authentication import RemoteUserAuthentication


class GatewayUser(AnonymousUser):
    """An authenticated identity with a username and no row in ``auth_user``."""

    def __init__(self, username: str) -> None:
        self.username = username

    def __str__(self) -> str:
        return self.username

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GatewayUser) and other.username == self.username

    def __hash__(self) -> int:
        return hash(self.username)

    @property
    def is_anonymous(self) -> bool:
        return False

    @property
    def is_authenticated(self) -> bool:
        return True

    def get_username(self) -> str:
        return self.username


class GatewayRemoteUserAuthentication(RemoteUserAuthentication):
    def authenticate(self, request):
        username = request._request.META.get(self.header)
        if not username:
            return None
        return GatewayUser(username), None
