"""The API at the root of whatever prefix the gateway mounts this site under.

No admin here: Django's admin has its own URL table (``admin_urls``), served
only through the gateway's admin route (``mounts.AdminOnlyAtItsMount``), so
``/v2/admin/`` is a 404 and a policy on ``/v2`` never governs the admin.
"""

from .todos.routers import OptionalSlashRouter
from .todos.views import TodoViewSet

router = OptionalSlashRouter()
router.register("todos", TodoViewSet, basename="todo")

urlpatterns = [
    *router.urls,
]

handler400 = "backends.django_site.todos.errors.bad_request"
handler404 = "backends.django_site.todos.errors.not_found"
handler500 = "backends.django_site.todos.errors.server_error"
