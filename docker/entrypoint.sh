#!/usr/bin/env bash
# Entrypoint of the spacer_worker images.
#
#   worker NAME [celery worker options]
#       One Celery worker node, NAME@<container hostname>. Compose gives each
#       replica its own hostname, so `--scale train-worker=4` yields four
#       nodes that Flower tells apart.
#   gpu-workers NAME [celery worker options]
#       One worker node per GPU visible in the container, NAME-gpu<i>@<host>,
#       each started with CUDA_VISIBLE_DEVICES set to its GPU alone and
#       WORKER_TASKS_PER_GPU pool processes (default 1). With more than one,
#       the worker runs one shared network process for its GPU that batches
#       the patches of all its tasks (SPACER_EXTRACT_SHARED_NETWORK, on
#       unless set otherwise). Stops them all (warm) on SIGTERM/SIGINT; if
#       one dies, stops the others and exits non-zero so the container is
#       restarted.
#   flower [flower options]
#       Flower for the configured broker (auth and port from FLOWER_* vars);
#       refuses the shipped placeholder password when SERVICE_BIND (the
#       address compose publishes it on) is beyond localhost.
#   anything else
#       Run as given: `spacer-worker config`, `bash`, ...
#
# Variables: CELERY_APP (default spacer_worker); WORKER_NODES_FILE (node
# names for the healthcheck); WORKER_GPUS (comma list of GPU indexes or
# UUIDs; default: every GPU nvidia-smi lists); WORKER_TASKS_PER_GPU (images
# decoded and cut at once per GPU, default 1); CELERY_WORKER_* options are
# read by Celery itself (e.g. CELERY_WORKER_CONCURRENCY).
set -euo pipefail

app=${CELERY_APP:-spacer_worker}
nodes_file=${WORKER_NODES_FILE:-/tmp/spacer-worker/nodes}
# What Celery's %h expands to (socket.gethostname()).
host=$(uname -n)

die() {
    echo "spacer-entrypoint: $*" >&2
    exit 64
}

check_name() {
    [[ -n "${1:-}" && "$1" != -* ]] ||
        die "'$2' needs a node name first, e.g. '$2 train --queues=train'."
    [[ "$1" != *@* ]] ||
        die "node name '$1' must not contain '@': the hostname is added for you."
}

record_nodes() {
    mkdir -p "$(dirname "$nodes_file")"
    printf '%s\n' "$@" >"$nodes_file"
}

warn_default_broker() {
    if [[ -z "${SPACER_BROKER_URL:-}" && -z "${SPACER_SECRETS_PATH:-}" ]]; then
        echo "spacer-entrypoint: warning: neither SPACER_BROKER_URL nor" \
            "SPACER_SECRETS_PATH is set, so Celery will look for Redis on" \
            "localhost inside this container. Set one in config/spacer.env." >&2
    fi
}

list_gpus() {
    if [[ -n "${WORKER_GPUS:-}" ]]; then
        tr ',' '\n' <<<"$WORKER_GPUS" | sed '/^[[:space:]]*$/d'
    elif command -v nvidia-smi >/dev/null 2>&1; then
        # UUIDs, not indexes: they name the same GPU whatever the numbering.
        nvidia-smi --query-gpu=uuid --format=csv,noheader
    else
        # A throwaway process: CUDA is never initialised in the workers'
        # parents, which fork their pool children.
        python -c 'try:
    import torch
except ImportError:  # the CPU image: no GPU to list
    raise SystemExit(0)
for i in range(torch.cuda.device_count()):
    print(i)'
    fi
}

run_gpu_workers() {
    local name=$1
    shift
    local gpus=()
    mapfile -t gpus < <(list_gpus)
    if [[ ${#gpus[@]} -eq 0 ]]; then
        die "no GPU is visible in this container (nvidia-smi lists none and" \
            "WORKER_GPUS is unset). On a host without GPU run the CPU" \
            "extraction worker instead: docker compose --profile cpu up -d"
    fi
    local tasks=${WORKER_TASKS_PER_GPU:-1}
    [[ "$tasks" =~ ^[1-9][0-9]*$ ]] ||
        die "WORKER_TASKS_PER_GPU='$tasks': expected a whole number of 1 or more."
    if ((tasks > 1)); then
        # One network per GPU, fed by every pool process: not one per process.
        export SPACER_EXTRACT_SHARED_NETWORK=${SPACER_EXTRACT_SHARED_NETWORK:-true}
    fi
    local nodes=() i
    for i in "${!gpus[@]}"; do
        nodes+=("${name}-gpu${i}@${host}")
    done
    record_nodes "${nodes[@]}"

    local pids=()
    for i in "${!gpus[@]}"; do
        echo "spacer-entrypoint: starting ${nodes[$i]} on GPU ${gpus[$i]}" >&2
        CUDA_VISIBLE_DEVICES="${gpus[$i]}" celery -A "$app" worker \
            --hostname="${nodes[$i]}" --concurrency="$tasks" \
            --loglevel="${SPACER_LOG_LEVEL:-INFO}" "$@" &
        pids+=($!)
    done

    local stopping=0 status=0
    forward() {
        stopping=1
        kill "-$1" "${pids[@]}" 2>/dev/null || true
    }
    trap 'forward TERM' TERM INT
    trap 'forward QUIT' QUIT

    local rc alive pid
    while true; do
        rc=0
        wait -n || rc=$?
        alive=0
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=$((alive + 1)); fi
        done
        if [[ $alive -eq 0 ]]; then
            break
        fi
        if [[ $stopping -eq 0 && $alive -lt ${#pids[@]} ]]; then
            # A worker died on its own: stop the rest so the container
            # restarts whole and the healthcheck never hides a dead GPU.
            echo "spacer-entrypoint: a GPU worker exited (status $rc);" \
                "stopping the others so the container restarts." >&2
            status=$((rc == 0 ? 1 : rc))
            forward TERM
        fi
    done
    exit "$status"
}

command=${1:-}
case "$command" in
worker)
    shift
    check_name "${1:-}" worker
    name=$1
    shift
    warn_default_broker
    record_nodes "${name}@${host}"
    exec celery -A "$app" worker --hostname="${name}@${host}" \
        --loglevel="${SPACER_LOG_LEVEL:-INFO}" "$@"
    ;;
gpu-workers)
    shift
    check_name "${1:-}" gpu-workers
    name=$1
    shift
    warn_default_broker
    run_gpu_workers "$name" "$@"
    ;;
flower)
    shift
    # Published on FLOWER_BIND (compose passes it as SERVICE_BIND): beyond
    # localhost, the shipped basic-auth password must have been changed.
    sh "$(dirname "$0")/refuse-placeholders.sh" "${SERVICE_BIND:-127.0.0.1}" \
        "FLOWER_BASIC_AUTH=${FLOWER_BASIC_AUTH:-}" || exit 64
    warn_default_broker
    exec celery -A "$app" flower "$@"
    ;;
"")
    die "no command given; expected worker, gpu-workers, flower or a program."
    ;;
*)
    exec "$@"
    ;;
esac
