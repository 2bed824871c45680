#!/bin/bash
# Throughput of one-contact transactions (pgbench, prepared, durable
# commits) with no feed position, and with each way of schema.sql, on one
# tenant; the ways alternate, round after round.
#
#   bash benches/feed_positions/run.sh [seconds] [rounds] [clients ...]
#
# Makes (and at the end drops) the database crm_feed_positions on
# $PGHOST (default 127.0.0.1), user postgres.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-15}; rounds=${2:-3}; shift $(( $# < 2 ? $# : 2 ))
clients=("${@:-1}"); [ $# -eq 0 ] && clients=(1 8)
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
db=crm_feed_positions
psql -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
trap 'psql -qc "DROP DATABASE IF EXISTS $db"' EXIT
psql -q -d $db -f "$here/schema.sql"
for r in $(seq "$rounds"); do
  for c in "${clients[@]}"; do
    for v in none a b c; do
      psql -q -d $db -c "ALTER TABLE events DISABLE TRIGGER ta; ALTER TABLE events DISABLE TRIGGER tb; ALTER TABLE events DISABLE TRIGGER tc"
      if [ "$v" != none ]; then psql -q -d $db -c "ALTER TABLE events ENABLE TRIGGER t$v"; fi
      tps=$(pgbench -n -M prepared -c "$c" -j "$c" -T "$secs" -f "$here/tx.sql" $db 2>/dev/null | grep -oP "tps = \K[0-9.]+")
      echo "round $r clients $c variant $v tps $tps"
    done
  done
done
