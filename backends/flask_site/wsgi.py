"""The WSGI application the gateway mounts."""

from backends.flask_site import create_app

app = create_app()
