# Stackgate: one uvicorn process serving the gateway and both stacks.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STACKGATE_DATA_DIR=/data

WORKDIR /app

RUN groupadd --system --gid 10001 stackgate \
    && useradd --system --uid 10001 --gid stackgate --home-dir /app --shell /usr/sbin/nologin stackgate \
    && mkdir -p /data \
    && chown stackgate:stackgate /data

COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY backends ./backends
RUN pip install --no-cache-dir .

COPY config.toml ./config.toml

USER 10001:10001
EXPOSE 8000
VOLUME ["/data"]

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/_stackgate/health', timeout=2).status != 200)"]

CMD ["stackgate", "run", "--config", "/app/config.toml", "--host", "0.0.0.0", "--port", "8000"]
