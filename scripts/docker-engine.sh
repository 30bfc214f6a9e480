#!/usr/bin/env bash
# A running Docker Engine for tests/deploy/test_compose_up.py, where one can
# be had: as root on Debian, installs docker.io (Engine 20.10), docker-compose
# (v1, Debian 12's compose) and debootstrap when missing, and starts dockerd
# in the background when no daemon answers. Exits non-zero, saying why,
# when it cannot; the test then skips with that reason.
set -euo pipefail

if docker info >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "not root: cannot install or start Docker (start dockerd yourself)" >&2
  exit 1
fi
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 ||
  missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  log=/var/log/spacer-test-dockerd.log
  echo "starting dockerd (log: $log)"
  nohup dockerd >"$log" 2>&1 &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 1
  done
  echo "dockerd did not answer within 60 s; see $log" >&2
  tail -5 "$log" >&2
  exit 1
fi
