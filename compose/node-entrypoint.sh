#!/bin/sh
# Entrypoint of the PostgreSQL node image.
#
# First start: with PRIMARY_HOST unset the node initialises a new cluster (the
# primary); with PRIMARY_HOST set it clones that node with pg_basebackup and
# streams from it (a replica). Later starts (docker start/restart) run the server
# on the existing data directory whatever it was last: a returning old primary
# starts as a primary, and it is the controller's job to fence it.
#
# Environment: NODE_NAME (cluster_name and the replica's application_name),
# PRIMARY_HOST, PRIMARY_PORT (5432), PGDATA, BASEBACKUP_WAIT (seconds, 120).
# Arguments are passed to postgres (e.g. -c fsync=off).
#
# Authentication: trust for every address. For demos and tests on a private
# Docker network only; published ports must stay on 127.0.0.1.
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
: "${NODE_NAME:=$(hostname)}"
: "${PRIMARY_HOST:=}"
: "${PRIMARY_PORT:=5432}"
: "${BASEBACKUP_WAIT:=120}"
BIN=/usr/lib/postgresql/15/bin
export PGDATA

log() { echo "node-entrypoint[$NODE_NAME]: $*" >&2; }

write_conf() {
    cat >>"$PGDATA/postgresql.conf" <<CONF

# hacontrol node image
listen_addresses = '*'
port = 5432
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '512MB'
wal_log_hints = on
hot_standby = on
max_connections = 50
shared_buffers = '32MB'
unix_socket_directories = '/tmp'
log_line_prefix = '%m [%p] %q%a '
include_if_exists = 'postgresql.node.conf'
CONF
}

init_primary() {
    log "initialising a new cluster (primary)"
    "$BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
        --no-instructions >/dev/null
    write_conf
    cat >"$PGDATA/pg_hba.conf" <<HBA
# hacontrol node image: trust on the container network (demo and test clusters only)
local all all trust
local replication all trust
host all all all trust
host replication all all trust
HBA
}

init_replica() {
    waited=0
    until "$BIN/pg_isready" -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -t 2; do
        waited=$((waited + 1))
        if [ "$waited" -ge "$BASEBACKUP_WAIT" ]; then
            log "$PRIMARY_HOST:$PRIMARY_PORT did not accept connections within ${BASEBACKUP_WAIT} s"
            exit 1
        fi
        sleep 1
    done
    log "cloning $PRIMARY_HOST:$PRIMARY_PORT (replica)"
    rm -rf "$PGDATA.partial"
    "$BIN/pg_basebackup" \
        -d "host=$PRIMARY_HOST port=$PRIMARY_PORT user=postgres application_name=$NODE_NAME" \
        -D "$PGDATA.partial" -R -X stream -c fast
    # A clone interrupted half-way must not look like a data directory next time.
    mv "$PGDATA.partial" "$PGDATA"
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "$PRIMARY_HOST" ]; then
        init_primary
    else
        init_replica
    fi
fi
echo "cluster_name = '$NODE_NAME'" >"$PGDATA/postgresql.node.conf"
# A server killed outright leaves its pid file; the PID may be reused in a new container.
rm -f "$PGDATA/postmaster.pid"
exec "$BIN/postgres" -D "$PGDATA" "$@"
