# The hacontrol controller with its HTTP API. Build context: the repository root.
# BASE_IMAGE defaults to Debian from Docker Hub; without a registry, build
# hacontrol-base:bookworm with compose/build-base. Wheels in compose/wheels/ (made
# by compose/build-images) are installed without any package index; when there are
# none, hacontrol is installed from the source with its dependencies from PyPI.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

RUN set -eu; \
    if ! python3 -c 'import ensurepip' 2>/dev/null; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --system hacontrol; \
    useradd --system --gid hacontrol --home-dir /var/lib/hacontrol --create-home hacontrol

COPY compose/wheels/ /tmp/wheels/
COPY pyproject.toml README.md /tmp/src/
COPY hacontrol/ /tmp/src/hacontrol/
RUN set -eu; \
    python3 -m venv /opt/hacontrol; \
    if ls /tmp/wheels/hacontrol-*.whl >/dev/null 2>&1; then \
        /opt/hacontrol/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels hacontrol; \
    else \
        /opt/hacontrol/bin/pip install --no-cache-dir /tmp/src; \
    fi; \
    rm -rf /tmp/wheels /tmp/src; \
    ln -s /opt/hacontrol/bin/hacontrol /usr/local/bin/hacontrol

COPY compose/hacontrol.toml /etc/hacontrol/hacontrol.toml
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1
USER hacontrol
WORKDIR /var/lib/hacontrol
EXPOSE 8008
ENTRYPOINT ["hacontrol"]
CMD ["run", "--config", "/etc/hacontrol/hacontrol.toml"]
