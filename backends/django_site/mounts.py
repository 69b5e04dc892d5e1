"""Which URL table a request gets, by the mount it came through (its ``SCRIPT_NAME``).

The gateway mounts this one site under several prefixes; with the prefix
stripped it arrives as ``SCRIPT_NAME``. Only the admin's own mount
(``settings.ADMIN_MOUNT``) gets the admin's URL table: closing that route
closes the admin, and no other route's policy (``/v2``'s) ever applies to it.
"""

from django.conf import settings

ADMIN_URLCONF = "backends.django_site.admin_urls"


class AdminOnlyAtItsMount:
    def __init__(self, get_response):
        self.get_response = get_response
        self.mount = settings.ADMIN_MOUNT

    def __call__(self, request):
        if self.mount and request.META.get("SCRIPT_NAME", "") == self.mount:
            request.urlconf = ADMIN_URLCONF
        return self.get_response(request)
