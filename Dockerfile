# Stackgate: one uvicorn process serving the gateway and both stacks.
#
# The image serves on 0.0.0.0, so its bootstrap checks refuse to start with the
# demo config it carries (published demo keys, passwords and JWT secret; Django's
# fallback SECRET_KEY): it exits with status 3 and one
# log line per setting to fix (docs/security.md#bootstrap-checks). Supply:
#
# - a config: mount a folder holding config.toml over /etc/stackgate (a folder,
#   not the file, so that an edit, even one that replaces the file, reloads it):
#     -v "$PWD/site:/etc/stackgate:ro"
#   (or point STACKGATE_CONFIG elsewhere); `docker kill --signal HUP NAME`
#   reloads it too;
# - secrets from the environment (`-e`, `--env-file`), never in the file:
#   config.toml reads them as ${NAME}, e.g. STACKGATE_JWT_SECRET; Django reads
#   DJANGO_SECRET_KEY; list your host names in [gateway] allowed_hosts;
# - the data: /data is a volume (the embedded SQLite), or DATABASE_URL.
#
#   docker run -p 8000:8000 --env-file stackgate.env \
#       -v "$PWD/site:/etc/stackgate:ro" -v stackgate-data:/data stackgate
#   docker exec -it CONTAINER stackgate createsuperuser   # the admin's first user
#
# STACKGATE_ALLOW_INSECURE=1 serves despite insecure settings (logged at every start).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    STACKGATE_CONFIG=/etc/stackgate/config.toml \
    STACKGATE_DATA_DIR=/data \
    STACKGATE_HOST=0.0.0.0 \
    STACKGATE_PORT=8000

WORKDIR /app

RUN groupadd --system --gid 10001 stackgate \
    && useradd --system --uid 10001 --gid stackgate --home-dir /app --shell /usr/sbin/nologin stackgate \
    && mkdir -p /data /etc/stackgate \
    && chown stackgate:stackgate /data

COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir .
# The demo stacks the default config serves: not in the wheel, importable from /app (PYTHONPATH).
COPY backends ./backends
# Their bytecode now: PYTHONDONTWRITEBYTECODE, and a read-only /app, would make every start compile them.
RUN python -m compileall -q backends

# The demo config: the checks refuse it on 0.0.0.0. Mount your own folder over /etc/stackgate.
COPY config.toml /etc/stackgate/config.toml

USER 10001:10001
EXPOSE 8000
VOLUME ["/data"]

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/_stackgate/health' % os.environ.get('STACKGATE_PORT', '8000'), timeout=2).status != 200)"]

CMD ["stackgate", "run"]
