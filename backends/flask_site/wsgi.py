"""The WSGI application the gateway mounts."""

from backends.database import ensure_embedded_schema
from backends.flask_site import create_app

ensure_embedded_schema()  # Django's migrations own the shared schema
app = create_app()
