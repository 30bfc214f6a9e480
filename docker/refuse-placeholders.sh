#!/bin/sh
# refuse-placeholders.sh BIND NAME=VALUE...
#
# Exits 64 when BIND (the host address compose publishes the service on) is
# not a loopback address and any VALUE still holds the placeholder password
# shipped in config/*.env. On a laptop (127.0.0.1, the default) the
# placeholders are fine; once a port is reachable from the network they
# would let anyone in (Redis: run any job; Flower: revoke tasks; MinIO: read
# every image). Used by compose.yaml (redis, minio, minio-init, grafana) and
# docker/entrypoint.sh (flower). POSIX sh: the redis, minio and mc images
# have no bash.
placeholder=change-me-local-only
bind=${1:-127.0.0.1}
shift
case "$bind" in
127.* | localhost | ::1 | "[::1]") exit 0 ;;
esac
for pair in "$@"; do
    name=${pair%%=*}
    value=${pair#*=}
    case "$value" in
    *"$placeholder"*)
        echo "refusing to start: $name still holds the shipped placeholder" \
            "password '$placeholder', and this service is published on" \
            "$bind, beyond localhost. Set a long random value (openssl rand" \
            "-hex 32) in config/*.env; docs/operations.md, 'Passwords'." >&2
        exit 64
        ;;
    esac
done
exit 0
