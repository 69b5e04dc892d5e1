"""Tiny WSGI stacks for rollout tests: one clean, and targets with one injected regression each.

Faults are deterministic per process (a counter), so a share is exact:
``errors`` answers 500 on every 20th request (5 %), ``slow`` adds 50 ms to
each, ``drift`` changes one field on every 10th answer (10 %).
"""

from __future__ import annotations

import itertools
import json
import time


def _make(name: str, error_every: int = 0, delay: float = 0.0, drift_every: int = 0):
    counter = itertools.count(1)

    def app(environ, start_response):
        environ["wsgi.input"].read()
        n = next(counter)
        if delay:
            time.sleep(delay)
        if error_every and n % error_every == 0:
            body = json.dumps({"error": "injected"}).encode()
            start_response("500 Internal Server Error", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        data = {"path": environ["PATH_INFO"], "title": "water the plants", "done": False}
        if drift_every and n % drift_every == 0:
            data["title"] = "WATER THE PLANTS"
        body = json.dumps(data).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


clean = _make("clean")
clean_too = _make("clean_too")
errors = _make("errors", error_every=20)
slow = _make("slow", delay=0.05)
drift = _make("drift", drift_every=10)


def _django_with_fault():
    """The demo's Django stack, answering 500 on every 10th request once the file ``$ROLLOUT_FAULT_FILE`` exists."""
    import os

    from backends.django_site.wsgi import application

    counter = itertools.count(1)

    def app(environ, start_response):
        flag = os.environ.get("ROLLOUT_FAULT_FILE")
        if flag and os.path.exists(flag) and next(counter) % 10 == 0:
            environ["wsgi.input"].read()
            body = json.dumps({"error": "injected"}).encode()
            start_response("500 Internal Server Error", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return application(environ, start_response)

    return app


def __getattr__(name: str):
    if name == "django_with_fault":  # imported only by the tests that serve it
        value = globals()[name] = _django_with_fault()
        return value
    raise AttributeError(name)
