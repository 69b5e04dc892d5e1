"""The WSGI callable the gateway mounts under its public prefixes."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backends.django_site.settings")

application = get_wsgi_application()

from backends.database import ensure_embedded_schema  # noqa: E402  (Django is set up by now)

ensure_embedded_schema()
