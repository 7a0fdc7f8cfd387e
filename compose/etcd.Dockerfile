# etcd for the compose cluster's controllers on etcd (docker-compose.ha.yml). The
# binary is the host's Debian etcd (apt-get install etcd-server), copied in by
# compose/build-images, so the build needs no registry and no network.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
COPY compose/etcd /usr/local/bin/etcd
RUN useradd --system --home-dir /var/lib/etcd --create-home etcd
USER etcd
WORKDIR /var/lib/etcd
EXPOSE 2379
ENTRYPOINT ["/usr/local/bin/etcd"]
