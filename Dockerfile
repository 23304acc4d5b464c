# stream-risk engine image: `stream-risk run` by default (see docker-compose.yml).
#
#   docker build -t stream-risk .
#   docker run --rm -p 8080:8080 -e STREAM_RISK_BOOTSTRAP_SERVERS=kafka:9092 stream-risk
#
# Every setting is an env var STREAM_RISK_* (DESIGN §7); the sidecar listens on 0.0.0.0:8080.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STREAM_RISK_HTTP_HOST=0.0.0.0 \
    STREAM_RISK_HTTP_PORT=8080

# The package only (tests, benchmarks and docs stay out: see .dockerignore).
COPY pyproject.toml README.md LICENSE /tmp/src/
COPY stream_risk /tmp/src/stream_risk
RUN pip install /tmp/src && rm -rf /tmp/src \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin stream-risk

USER stream-risk
WORKDIR /home/stream-risk
EXPOSE 8080

HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

# SIGTERM stops consuming, flushes, commits and leaves the group (exit 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["stream-risk"]
CMD ["run"]
