# PostgreSQL 15 node: primary or streaming replica, chosen by PRIMARY_HOST on the
# first start (see node-entrypoint.sh). BASE_IMAGE defaults to Debian from Docker
# Hub; without a registry, build hacontrol-base:bookworm with compose/build-base.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# The local base already has PostgreSQL; a stock Debian image installs it here.
RUN set -eu; \
    if [ ! -x /usr/lib/postgresql/15/bin/postgres ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            postgresql-15 postgresql-client-15; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    rm -rf /var/lib/postgresql/15/main /etc/postgresql/15/main; \
    mkdir -p /var/lib/postgresql; \
    chown postgres:postgres /var/lib/postgresql

COPY compose/node-entrypoint.sh /usr/local/bin/hacontrol-node
ENV PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
USER postgres
WORKDIR /var/lib/postgresql
EXPOSE 5432
# Fast shutdown on docker stop (SIGTERM would wait for every session to end).
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s \
    CMD ["/usr/lib/postgresql/15/bin/pg_isready", "-q", "-h", "127.0.0.1"]
ENTRYPOINT ["/usr/local/bin/hacontrol-node"]
