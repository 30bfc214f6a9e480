#!/bin/sh
# Snapshot Redis to dump.rdb in its data directory, and wait until written.
# Runs inside the redis container (password from config/redis.env):
#   docker compose exec -T redis sh -s < docker/redis-backup.sh
#   docker compose cp redis:/data/dump.rdb "redis-backup/dump-$(date +%Y%m%d-%H%M%S).rdb"
set -eu
export REDISCLI_AUTH="${REDIS_PASSWORD:?REDIS_PASSWORD is not set}"
cli() { redis-cli -p "${REDIS_PORT:-6379}" "$@"; }

before=$(cli lastsave)
# LASTSAVE counts seconds: make sure the new snapshot gets a later one.
sleep 1
cli bgsave schedule >/dev/null
until [ "$(cli lastsave)" != "$before" ] &&
    cli info persistence | grep -q 'rdb_bgsave_in_progress:0'; do
    sleep 0.5
done
if ! cli info persistence | grep -q 'rdb_last_bgsave_status:ok'; then
    echo "redis-backup: BGSAVE failed; see the redis log" >&2
    exit 1
fi
echo "redis-backup: snapshot written to $(cli config get dir | tail -n 1)/dump.rdb"
