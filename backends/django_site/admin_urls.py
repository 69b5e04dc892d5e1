"""Django's admin, at the root of its own mount (``settings.ADMIN_MOUNT``, the gateway's ``/admin`` route)."""

from django.contrib import admin
from django.urls import path

urlpatterns = [
    path("", admin.site.urls),
]

handler404 = "backends.django_site.todos.errors.not_found"
handler500 = "backends.django_site.todos.errors.server_error"
