class HeadBodyMiddleware:
    """Send HEAD answers without a body, keeping GET's headers.

    Django's WSGI handler (unlike runserver and Werkzeug) leaves the body in;
    whatever serves this app then sees the same bytes as for the Flask site.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.method == "HEAD" and not response.streaming:
            response.content = b""
        return response
