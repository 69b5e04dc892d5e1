from rest_framework.routers import DefaultRouter

from .views import ApiRootView


class OptionalSlashRouter(DefaultRouter):
    """A ``DefaultRouter`` where every path takes an optional trailing slash.

    The ``/?`` pattern matches ``/todos`` and ``/todos/`` alike, and Django's
    ``reverse()`` drops the optional slash, so links read ``/todos/7``.
    Format suffixes (``/todos.json``) are off: the contract has none.
    """

    include_format_suffixes = False
    APIRootView = ApiRootView

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"
