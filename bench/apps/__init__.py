"""Tiny ASGI apps for the configurations that are not Stackgate: (c) and (f)."""
