"""The API at the root of whatever prefix the gateway mounts this site under, plus the admin."""

from django.contrib import admin
from django.urls import path

from .todos.routers import OptionalSlashRouter
from .todos.views import TodoViewSet

router = OptionalSlashRouter()
router.register("todos", TodoViewSet, basename="todo")

urlpatterns = [
    path("admin/", admin.site.urls),
    *router.urls,
]

handler400 = "backends.django_site.todos.errors.bad_request"
handler404 = "backends.django_site.todos.errors.not_found"
handler500 = "backends.django_site.todos.errors.server_error"
