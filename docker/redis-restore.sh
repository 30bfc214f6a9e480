#!/bin/sh
# Restore Redis from a dump.rdb snapshot. With AOF on, Redis ignores
# dump.rdb at start, so: load it with AOF off, switch AOF on (Redis rewrites
# the AOF from memory), shut down; the next normal start loads that AOF.
# Everything must be stopped first (docker compose stop). Then:
#   docker compose run --rm --no-deps -T -v "$PWD/redis-backup/dump-....rdb:/backup/dump.rdb:ro" \
#       redis sh -s < docker/redis-restore.sh
#   docker compose up -d
set -eu
data=${DATA_DIR:-/data}
backup=${BACKUP:-/backup/dump.rdb}
conf=${REDIS_CONF:-/usr/local/etc/redis/redis.conf}
port=${REDIS_PORT:-6379}
cli() { redis-cli -p "$port" "$@"; }

[ -f "$backup" ] || { echo "redis-restore: no snapshot at $backup" >&2; exit 1; }
rm -rf "$data/appendonlydir"
cp "$backup" "$data/dump.rdb"
cd "$data"
# No password: this Redis listens on the container's loopback only
# (protected mode) and lives for a few seconds.
redis-server "$conf" --port "$port" --bind 127.0.0.1 --appendonly no \
    --daemonize yes
until cli ping 2>/dev/null | grep -q PONG; do sleep 0.2; done
cli config set appendonly yes >/dev/null
until cli info persistence | grep -q 'aof_rewrite_in_progress:0' &&
    cli info persistence | grep -q 'aof_rewrite_scheduled:0' &&
    ls "$data"/appendonlydir/*.manifest >/dev/null 2>&1; do
    sleep 0.5
done
keys=$(cli dbsize)
cli shutdown >/dev/null 2>&1 || true
echo "redis-restore: restored $backup ($keys keys in db 0) into $data"
