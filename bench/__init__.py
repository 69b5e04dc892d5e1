"""The benchmark harness: Stackgate against nginx -> gunicorn on the same cores.

``bench/run`` (or ``.venv/bin/python -m bench``) installs what is missing,
seeds a throw-away SQLite database, then starts each configuration on
loopback, drives it with wrk and stops it, in interleaved repeats. See
``docs/performance.md``.
"""
