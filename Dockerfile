# device-cloud-exporter image.
#   docker build -t device-cloud-exporter .
#   docker run -v ./config.yaml:/etc/device-cloud-exporter/config.yaml:ro \
#     -e PARQEX_TOKEN=... -e LAMETRIC_TOKEN=... -p 9862:9862 device-cloud-exporter
# See README.md, "Docker". scripts/test-image builds and runs it in the test command.
#
# BASE_IMAGE: any Debian-like image with python3 (3.11 or later) and its venv module; the
# test builds on a locally bootstrapped Debian because it cannot reach a container registry.
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: a virtual environment with the pinned dependencies (wheels only: no compiler) and the
# exporter, then without pip and setuptools. It is all the final image takes from this stage.
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY exporter ./exporter
# The optional build secret `ca` is a CA bundle for a TLS-intercepting proxy between the build
# and PyPI (`--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt`); a secret is mounted
# for this step only and never stored in a layer.
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && python3 -m venv /opt/device-cloud-exporter \
 && /opt/device-cloud-exporter/bin/pip install --quiet --no-deps --only-binary=:all: \
        --requirement requirements.lock \
 && /opt/device-cloud-exporter/bin/pip install --quiet --no-deps --no-build-isolation . \
 && /opt/device-cloud-exporter/bin/pip check \
 && /opt/device-cloud-exporter/bin/python -m pip uninstall --quiet --yes pip setuptools

# Stage 2: the base image, that environment and an unprivileged user; nothing else.
FROM ${BASE_IMAGE}
ENV PATH=/opt/device-cloud-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/device-cloud-exporter /opt/device-cloud-exporter
RUN groupadd --system --gid 10001 exporter \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin exporter \
 && mkdir -p /etc/device-cloud-exporter
USER 10001:10001
EXPOSE 9862
# /-/healthy answers as long as the HTTP server runs; it does not call the clouds.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/device-cloud-exporter/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9862/-/healthy', timeout=4)"]
ENTRYPOINT ["/opt/device-cloud-exporter/bin/device-cloud-exporter"]
# Mount the configuration here (README.md, "Docker"); flags given to `docker run` replace this.
CMD ["--config.file=/etc/device-cloud-exporter/config.yaml"]
