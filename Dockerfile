# device-cloud-exporter image.
#   docker build -t device-cloud-exporter .
#   docker run -v ./config.yaml:/etc/device-cloud-exporter/config.yaml:ro \
#     -e PARQEX_TOKEN=... -e LAMETRIC_TOKEN=... -p 9862:9862 device-cloud-exporter
# See README.md, "Docker".

# Stage 1: build the exporter's wheel and the wheels of its dependencies.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip wheel --wheel-dir /wheels .

# Stage 2: install those wheels only (no sources, no network) and run as a non-root user.
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels device-cloud-exporter \
 && rm -rf /wheels \
 && groupadd --system --gid 10001 exporter \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin exporter \
 && mkdir -p /etc/device-cloud-exporter
USER 10001:10001
EXPOSE 9862
# /-/healthy answers as long as the HTTP server runs; it does not call the clouds.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9862/-/healthy', timeout=4)"]
ENTRYPOINT ["device-cloud-exporter"]
# Mount the configuration here (README.md, "Docker"); flags given to `docker run` replace this.
CMD ["--config.file=/etc/device-cloud-exporter/config.yaml"]
