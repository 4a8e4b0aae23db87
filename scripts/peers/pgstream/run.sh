#!/bin/bash
# pgstream's webhooks target measured as `relay bench --only latency`
# measures relay: a throwaway cluster with relay's embedded settings
# (fsync and synchronous_commit on), relay.outbox from relay's own
# migrations, 8 producers inserting one ~500-byte event per transaction at
# 1,000 events/s, a plain-HTTP receiver in its own process that takes the
# receipt time once the request line and headers are read and parses
# pgstream's JSON for the event_id. pgstream runs with the subscription
# cache on (refreshed every second) and its other settings at their
# defaults; wal2json must be installed on the server
# (apt-get install postgresql-15-wal2json).
#
#   PGSTREAM=/path/to/pgstream scripts/peers/pgstream/run.sh [30s]
#
# pgstream is not built here: build it from its repository
# (github.com/xataio/pgstream, `go build -o pgstream .`). Stop 27 measured
# commit 19763069.
set -euo pipefail
DUR=${1:-30s}
: "${PGSTREAM:?set PGSTREAM to a pgstream binary}"
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
RELAY=${RELAY:-$ROOT/bin/relay}
PGBIN=${PGBIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
PORT=${PORT:-56100}
D=$(mktemp -d /tmp/pgstream-peer.XXXXXX)
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else bash -c "$*"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$D"
(cd "$HERE" && go build -o "$D/peer" .)
as_pg "$PGBIN/initdb -D $D/data -A trust -U postgres" >/dev/null
as_pg "$PGBIN/pg_ctl -D $D/data -l $D/pg.log -o '-p $PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c wal_level=logical -c max_replication_slots=64 -c max_wal_senders=64 -c max_connections=200' start" >/dev/null
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	as_pg "$PGBIN/pg_ctl -D $D/data stop -m fast" >/dev/null 2>&1 || true
	rm -rf "$D"
}
trap cleanup EXIT
URL="postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable"
"$RELAY" migrate up --database-url "$URL" >"$D/migrate.log" 2>&1
"$PGSTREAM" init --postgres-url "$URL" --replication-slot peer_slot >"$D/init.log" 2>&1
cat >"$D/cfg.yaml" <<YAML
source:
  postgres:
    url: "$URL"
    mode: replication
    replication:
      replication_slot: peer_slot
target:
  webhooks:
    subscriptions:
      store:
        url: "$URL"
        cache:
          enabled: true
          refresh_interval: 1
YAML
"$D/peer" receiver >"$D/recv.addr" 2>"$D/recv.log" &
PIDS+=($!)
for _ in $(seq 1 50); do [ -s "$D/recv.addr" ] && break; sleep 0.1; done
ADDR=$(head -1 "$D/recv.addr")
"$PGSTREAM" run -c "$D/cfg.yaml" --log-level error >"$D/pgstream.log" 2>&1 &
PGS=$!
PIDS+=($PGS)
# pgstream's subscription server listens on :9900 once it has started.
for _ in $(seq 1 100); do
	curl -sf -o /dev/null http://localhost:9900/webhooks/subscribe -X POST -H 'Content-Type: application/json' \
		-d "{\"url\": \"http://$ADDR/hook\", \"schema\": \"relay\", \"table\": \"outbox\", \"event_types\": [\"I\"]}" && break
	sleep 0.2
done
sleep 2 # the subscription cache refreshes every second
"$D/peer" -db "$URL" -pid "$PGS" -recv "$ADDR" -duration "$DUR"
