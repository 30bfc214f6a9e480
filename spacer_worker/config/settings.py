"""Settings, read when first needed, from the same sources as PySpacer.

Precedence for each setting: the ``SPACER_<NAME>`` environment variable,
then ``secrets.json``, or else Django's ``settings.SPACER`` (a secrets file,
when present, shuts Django out, as in PySpacer), then the default below.

``config.MAX_IMAGE_PIXELS`` style attribute access works as in PySpacer, but
each access reads the sources (files are cached until :func:`reload`), so
nothing is read as a side effect of ``import spacer_worker``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from spacer_worker.constants import ClassifierType, StorageType, TaskName, TrainerName
from spacer_worker.exceptions import ConfigError

ENV_PREFIX = 'SPACER_'

# PySpacer's constant lists, for code that checks membership in them, read
# from the enums in spacer_worker.constants.
TASKS = [t.value for t in TaskName]
CLASSIFIER_TYPES = [c.value for c in ClassifierType]
TRAINER_NAMES = [t.value for t in TrainerName]
STORAGE_TYPES = [s.value for s in StorageType]


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    secret: bool = False


_DEFAULT_BROKER = 'redis://localhost:6379/0'

SETTINGS: dict[str, Setting] = {s.name: s for s in [
    # --- PySpacer's own settings -------------------------------------
    Setting('AWS_ACCESS_KEY_ID', str, None, 'S3 access key id.', True),
    Setting('AWS_SECRET_ACCESS_KEY', str, None, 'S3 secret key.', True),
    Setting('AWS_SESSION_TOKEN', str, None, 'S3 session token.', True),
    Setting('AWS_PROFILE_NAME', str, None, 'Named AWS profile to use.'),
    Setting('AWS_ANONYMOUS', bool, False,
            'Unsigned S3 requests (public buckets).'),
    Setting('AWS_REGION', str, None, 'S3 region.'),
    Setting('EXTRACTORS_CACHE_DIR', str, None,
            'Local cache for remote extractor weights (s3/url).'),
    Setting('MAX_IMAGE_PIXELS', int, 10000 * 10000,
            'Largest image (width*height) accepted, checked before decoding.'),
    Setting('MAX_POINTS_PER_IMAGE', int, 1000,
            'Most points one extraction may ask for.'),
    Setting('TRAINING_BATCH_LABEL_COUNT', int, 5000,
            'Labels per training mini-batch.'),
    Setting('LOG_DESTINATION', str, None,
            "'console', a file path, or unset for no logging setup."),
    Setting('LOG_LEVEL', str, 'INFO', 'Log level when LOG_DESTINATION set.'),
    # --- storage ----------------------------------------------------------
    Setting('S3_ENDPOINT_URL', str, None,
            'S3-compatible endpoint (MinIO, moto...); unset for AWS.'),
    Setting('URL_TIMEOUT', float, 30.0,
            'Seconds before a URL download (connect or read) gives up.'),
    Setting('URL_MAX_BYTES', int, 512 * 1024 * 1024,
            'Largest URL download accepted, in bytes.'),
    Setting('URL_DOWNLOAD_TIMEOUT', float, 600.0,
            'Seconds a whole URL download may take (stops slow trickles).'),
    Setting('S3_MAX_ATTEMPTS', int, 3,
            'Attempts boto makes per S3 call (throttling, 5xx) before the '
            'error goes to the task retry.'),
    # --- sandbox: what a broker message may touch (issue 9) ----------------
    # Enforced for messages from the broker only; a direct call of
    # spacer_worker.tasks trusts its caller, as PySpacer does.
    Setting('FILESYSTEM_READ_ROOTS', str, '',
            "Directories (':'-separated, absolute) a worker may read files "
            "under; write roots are readable too. Unset: no file reads."),
    Setting('FILESYSTEM_WRITE_ROOTS', str, '',
            "Directories (':'-separated, absolute) a worker may write files "
            "under. Unset: no file writes."),
    Setting('S3_READ_BUCKETS', str, '',
            "S3 buckets a worker may read, comma-separated 'bucket' or "
            "'bucket/prefix'; write buckets are readable too. Unset: none."),
    Setting('S3_WRITE_BUCKETS', str, '',
            "S3 buckets a worker may write, comma-separated 'bucket' or "
            "'bucket/prefix'. Unset: none."),
    Setting('URL_ALLOWED_HOSTS', str, '',
            'Host names or CIDR networks (comma-separated) that url '
            'locations may reach although private; public hosts are always '
            'allowed, cloud metadata addresses never.'),
    Setting('MEMORY_STORAGE_ALLOWED', bool, False,
            "Whether broker messages may use 'memory' locations (a worker "
            "process's own RAM; useful only with the embedded mode)."),
    Setting('FILESYSTEM_MAX_BYTES', int, 2 * 1024 ** 3,
            'Largest file read from filesystem storage, in bytes.'),
    Setting('S3_MAX_BYTES', int, 2 * 1024 ** 3,
            'Largest S3 object read, in bytes.'),
    Setting('FEATURE_ARRAY_MAX_BYTES', int, 256 * 1024 * 1024,
            'Largest array inside a feature file (npz), inflated, in bytes; '
            'checked from its header before inflating.'),
    Setting('MESSAGE_MAX_BYTES', int, 256 * 1024 * 1024,
            'Largest broker message payload (its JSON), in bytes.'),
    Setting('MAX_LABELS_PER_TRAINING', int, 5_000_000,
            'Most annotations (train + ref + val) one broker training may '
            'carry.'),
    Setting('MAX_EPOCHS', int, 500,
            'Most epochs (nbr_epochs) one broker training may ask for.'),
    Setting('MAX_HIDDEN_UNITS', int, 8192,
            'Largest sum of mlp_hidden_layer_sizes a broker training may '
            'ask for.'),
    Setting('MAX_TASKS_PER_JOB', int, 1000,
            'Most tasks one broker JobMsg may carry.'),
    # --- extraction ---------------------------------------------------------
    Setting('EXTRA_EXTRACTOR_CLASSES', str, '',
            'Comma-separated class paths of extra allowed extractors.'),
    Setting('TORCH_DEVICE', str, 'auto',
            "'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1'..."),
    Setting('EXTRACT_PRECISION', str, 'fp32',
            "'fp32', or 'fp16' (GPU only; see docs for its feature drift)."),
    Setting('EXTRACT_BATCH_SIZE', int, 0,
            'Patches per forward pass; 0 picks a size for the device.'),
    Setting('EXTRACT_BACKEND', str, 'auto',
            "'auto' (ONNX Runtime on CPU when installed, else PyTorch), "
            "'onnxruntime' (CPU only) or 'torch'."),
    Setting('EXTRACT_FLOAT64_ABOVE', float, 100.0,
            'fp32: a patch whose features exceed this is recomputed in '
            'float64, where float32 rounding grows past PySpacer\'s '
            '(bilevel or saturated content); 0 turns that off. Patches '
            'whose features are not finite (an overflow, fp16 too) are '
            'recomputed whatever this says.'),
    Setting('EXTRACT_BLOCKED_GATES', bool, True,
            'ONNX Runtime: multiply the squeeze-excite gates in its blocked '
            'layout (5-10% faster), used only where it reproduces the plain '
            'graph bit for bit at start-up; off runs ONNX Runtime\'s own '
            'graph.'),
    Setting('EXTRACT_SHARED_NETWORK', bool, False,
            'One network process per worker serves all its pool processes '
            'and batches their patches together (GPU workers with '
            '--concurrency > 1); the pool processes only cut patches.'),
    Setting('EXTRACT_THREADS', int, 0,
            'CPU threads for the forward pass; 0 uses every CPU the process '
            'may run on (set cores / processes when running several).'),
    # --- training -----------------------------------------------------------
    Setting('EXTRA_TRAINER_CLASSES', str, '',
            'Comma-separated class paths of extra allowed trainers.'),
    Setting('TRAINING_IN_MEMORY_MB', int, 256,
            'Largest feature matrix (MiB, float32) a training keeps in RAM; '
            'a larger one goes to one file under feature_cache_dir '
            '(unless that is DISABLED).'),
    Setting('TRAINING_LOAD_THREADS', int, 0,
            'Threads reading feature files for a training; 0 picks 16 for '
            'remote (s3/url) features, else up to 4 (CPU count).'),
    Setting('TRAINING_PRECISION', str, 'float32',
            "MLP mini-batch arithmetic: 'float32' (about twice as fast) or "
            "'float64' (PySpacer's, giving its exact classifier)."),
    Setting('TRAINING_MATMUL', str, 'auto',
            "Engine of a float32 MLP step's two large products: 'numpy' "
            "(OpenBLAS), 'onnxruntime' (MLAS), or 'auto': a rule on the "
            "CPU and OpenBLAS's kernels, the same in every process (no "
            "timing race); a resumed training keeps its checkpoint's."),
    Setting('BLAS_THREADS', int, 0,
            'BLAS threads a training or classification uses; 0: the CPUs '
            'divided among the tasks the worker runs at once (1 each when '
            'it runs one per core, all of them for a single task).'),
    Setting('CLASSIFIER_CACHE_SIZE', int, 8,
            'Classifiers a worker process keeps unpickled for classify '
            'tasks, keyed by content (sha256, or inode/size/mtime for local '
            'files), so never stale; 0 disables.'),
    # --- training report (spacer_worker.report) -----------------------------
    Setting('TRAINING_REPORT', bool, False,
            "Write a training report (PNG figures, index.html) beside each "
            "trained classifier, in '<model key without extension>_report/'."),
    # --- metrics and idempotent submission (spacer_worker.metrics, client) ---
    Setting('METRICS_PORT', int, 0,
            'Port of the Prometheus endpoint a worker host serves (the first '
            'worker to bind it serves every worker of the host); 0 = off.'),
    Setting('METRICS_EXPORTER_PORT', int, 9809,
            'Port of the queue exporter (spacer-worker metrics).'),
    Setting('METRICS_BIND', str, '127.0.0.1',
            'Address both metrics endpoints listen on; 0.0.0.0 for every '
            'interface (containers).'),
    Setting('METRICS_AUTH', str, '',
            "Basic auth of the metrics endpoints, 'user:password'; empty = "
            "none.", True),
    Setting('METRICS_DIR', str, '',
            "prometheus_client's multiprocess directory shared by a host's "
            "workers (one PID namespace: a machine or a container); empty = "
            "<temp dir>/spacer-worker-metrics-<port>-<hostname>."),
    Setting('SUBMIT_DEDUPE', str, 'active',
            "Submitting a (task, job token) or idempotency key again returns "
            "the earlier job: 'active' while it is pending or running, "
            "'all' also once it finished (until SUBMIT_DEDUPE_WINDOW), "
            "'off' never."),
    Setting('SUBMIT_DEDUPE_WINDOW', int, 7 * 24 * 3600,
            'Seconds a submission is remembered for deduplication.'),
    # --- classifier pickles (untrusted input) ------------------------------
    Setting('CLASSIFIER_MAX_BYTES', int, 256 * 1024 * 1024,
            'Largest classifier pickle a worker unpickles, in bytes '
            '(PySpacer MLPs on 1280-dim features are ~10 MB); loading '
            'needs at most about 3x this in memory.'),
    # --- hostile input, round two (issue 28): bounds and remote control ----
    Setting('WORKER_CONTROL_COMMANDS', str,
            'ping,stats,active_queues,registered,scheduled,active,reserved,'
            'revoked,conf,query_task,report,clock,hello,enable_events,revoke',
            "Celery remote control commands a worker accepts "
            "(comma-separated; read at worker start). The default serves "
            "Flower's views, health checks and revoke; shutdown, "
            "pool_restart, time_limit, rate_limit, add_consumer, autoscale "
            "and the rest are refused. Empty refuses every command."),
    Setting('IMAGE_MAX_DECODED_BYTES', int, 1536 * 1024 ** 2,
            'Most memory (bytes) an image may decode to: width x height x '
            'bands x bytes per sample, every frame counted, and its largest '
            'tile or strip; checked from the header before decoding.'),
    Setting('WEIGHTS_MAX_TENSOR_BYTES', int, 1024 ** 3,
            'Most bytes the storages of one weights file may declare, and '
            'the tensors built from them may take (each on its own; '
            'VGG16 needs 553 MB); storages must be stored uncompressed, so '
            'none declares more than the file holds.'),
    Setting('PICKLE_ARRAY_MAX_BYTES', int, 256 * 1024 ** 2,
            'Largest numpy array a classifier pickle may rebuild, in bytes '
            '(an element counts at least one byte, so zero-size dtypes are '
            'bounded too); checked before the array is allocated.'),
    Setting('FEATURE_JSON_MAX_BYTES', int, 256 * 1024 ** 2,
            'Largest legacy JSON feature file parsed, in bytes; the arrays '
            'built from it obey FEATURE_ARRAY_MAX_BYTES as npz ones do.'),
    Setting('FEATURE_MAX_POINTS', int, 10_000,
            'Most points a stored feature file may hold, for every task '
            'reading one (training, classification); checked from its '
            'header before its vectors are inflated.'),
    Setting('RESULT_MAX_BYTES', int, 64 * 1024 ** 2,
            'Largest task result (its JSON) a worker writes to the result '
            'backend; a larger one fails the task with a typed error.'),
    # --- Celery -------------------------------------------------------------
    Setting('BROKER_URL', str, _DEFAULT_BROKER, 'Celery broker URL.', True),
    Setting('RESULT_BACKEND', str, None,
            'Celery result backend URL; defaults to BROKER_URL.', True),
    Setting('QUEUE_EXTRACT', str, 'extract',
            'Queue of extract_features and classify_image (GPU workers).'),
    Setting('QUEUE_TRAIN', str, 'train',
            'Queue of train_classifier (CPU workers, long tasks).'),
    Setting('QUEUE_CLASSIFY', str, 'classify',
            'Queue of classify_features (light CPU work).'),
    Setting('EXTRACT_TIME_LIMIT', int, 1800,
            'Hard time limit (s) of extract-queue tasks; the soft limit, '
            'which fails the task cleanly, is 90% of it.'),
    Setting('TRAIN_TIME_LIMIT', int, 8 * 3600,
            'Hard time limit (s) of train-queue tasks (soft: 90%).'),
    Setting('CLASSIFY_TIME_LIMIT', int, 600,
            'Hard time limit (s) of classify-queue tasks (soft: 90%).'),
    # --- spec levels (issue 11): CoralNet's HIGH jobs, own queues ----------
    Setting('QUEUE_EXTRACT_HIGH', str, 'extract_high',
            'Queue of HIGH spec-level extractions (images of 6000 x 6000 '
            'pixels or more): high-memory extraction workers.'),
    Setting('QUEUE_TRAIN_HIGH', str, 'train_high',
            'Queue of HIGH spec-level trainings (200k annotations or more): '
            'high-memory training workers.'),
    Setting('EXTRACT_HIGH_TIME_LIMIT', int, 4 * 3600,
            'Hard time limit (s) of extract_high tasks (soft: 90%).'),
    Setting('TRAIN_HIGH_TIME_LIMIT', int, 7 * 24 * 3600,
            'Hard time limit (s) of train_high tasks: days, as CoralNet '
            'allows its high-spec Batch jobs (soft: 90%).'),
    Setting('VISIBILITY_TIMEOUT', int, 0,
            'Seconds before Redis redelivers an unacknowledged task; 0 = '
            'the longest hard time limit + 1 h, so a live task never runs '
            'twice (dead workers are handled by leases, see LEASE_TTL).'),
    Setting('LEASE_TTL', float, 30.0,
            'Worker lease lifetime (s): tasks held by a worker whose lease '
            'lapsed are requeued after about 2x this; 0 disables leases.'),
    Setting('RESULT_EXPIRES', int, 7 * 24 * 3600,
            'Seconds a finished task result is kept in the result backend.'),
    Setting('TASK_MAX_RETRIES', int, 5,
            'Retries of a task failing with a transient (storage/network) '
            'error, with exponential backoff and jitter, or whose pool '
            'process died under it (OOM kill); then it fails.'),
    Setting('RETRY_BACKOFF_MAX', int, 600,
            'Longest wait (s) between two retries of a transient error.'),
    Setting('PRELOAD_EXTRACTOR', str, '',
            'Extractor to load into each worker process at start: its JSON '
            'serialization, or a path to a JSON file; empty loads on first '
            'use.'),
    # --- PySpacer compatibility and logs (issue 11) -------------------------
    Setting('LOG_FORMAT', str, 'text',
            "'text' (PySpacer's layout) or 'json': one JSON object per line "
            "with time, level, task id and name, job token, queue, worker "
            "and duration."),
    Setting('TEST_BUCKET', str, None,
            "PySpacer's S3 bucket for its own unit tests (unused here)."),
    Setting('CN_TEST_EXTRACTORS_BUCKET', str, None,
            "PySpacer's CoralNet test-extractors bucket (unused here)."),
    Setting('CN_FIXTURES_BUCKET', str, None,
            "PySpacer's CoralNet fixtures bucket (unused here)."),
    # --- CoralNet adapter (contrib.coralnet) ---------------------------------
    # --- large payloads and long trainings (issue 10) ----------------------
    Setting('PAYLOAD_OFFLOAD_BYTES', int, 256 * 1024,
            'Senders store a task payload larger than this (JSON bytes) at '
            'PAYLOAD_LOCATION and send only its location; 0 never does.'),
    Setting('PAYLOAD_LOCATION', str, '',
            'Where offloaded payloads go (s3://bucket/prefix or an absolute '
            'directory); the same on clients and workers. Workers read '
            'stored payloads only from here. Unset: payloads stay inline.'),
    Setting('PAYLOAD_MAX_BYTES', int, 2 * 1024 ** 3,
            'Largest stored payload a worker reads, in bytes.'),
    Setting('TRAINING_CHECKPOINT', str, 'model',
            "Per-epoch training checkpoint: 'model' (beside the output "
            "model), 'feature_cache' (in the feature cache directory), an "
            "s3://bucket/prefix or absolute directory, or 'off'."),
    Setting('SOFT_SHUTDOWN_TIMEOUT', float, 0.0,
            'Seconds a stopping worker lets running tasks finish before it '
            'cancels and requeues them (Celery soft shutdown; with '
            'REMAP_SIGTERM=SIGQUIT a SIGTERM starts it). 0: Celery default.'),
    Setting('CORALNET_SPEC_QUEUES', str, '',
            "CeleryQueue: spec level -> queue, e.g. "
            "'train_classifier:high=train_highmem'; unset keeps the "
            "contract's queue."),
    # --- job records (issue 10: leases, job lifecycle) -----------------------
    Setting('JOB_MAX_QUEUE_WAIT', int, 3 * 24 * 3600,
            'Longest a submitted job may wait in its queue: its PENDING '
            'record expires this long plus the task\'s hard time limit '
            'after submission, and the job then reads LOST (a message the '
            'broker lost is not PENDING forever). Keep it above your '
            'longest backlog.'),
    # --- hostile input, round two (issue 28): records read back ---------------
    Setting('WORKER_SECRET', str, None,
            'Workers seal the commit records they keep in Redis with an '
            'HMAC under this secret and finish only sealed ones; the same '
            'on every worker of a broker. Unset: records are still bound '
            'to their message and every move they ask for is re-checked '
            'against the write roots, but a broker user can make a message '
            'skip its run.', True),
    # --- records the web process reads back from Redis (issue 28) -------
    Setting('RECORD_MAX_BYTES', int, 64 * 1024 ** 2,
            'Largest result-backend record a client reads, in bytes (after '
            'any permitted inflation); a larger one fails its own job '
            '(RecordError), read no further.'),
    Setting('RECORD_MAX_DEPTH', int, 64,
            'Deepest JSON nesting a client decodes in a result record '
            '(PySpacer results nest ~10 deep).'),
    Setting('RECORD_COMPRESSION', str, '',
            "Compressed result records (Celery's result_compression) a "
            "client inflates: comma-separated 'zlib', 'bz2', 'lzma'; unset "
            "refuses every compressed record (this project never writes "
            "one)."),
]}


def register(setting: Setting) -> None:
    """Add a setting (used by modules that own one, e.g. the Celery app)."""
    SETTINGS[setting.name] = setting


def secrets_path() -> Path | None:
    """secrets.json: $SPACER_SECRETS_PATH, else next to the package, else cwd."""
    explicit = os.environ.get(ENV_PREFIX + 'SECRETS_PATH')
    if explicit:
        return Path(explicit)
    for candidate in (Path(__file__).resolve().parents[2] / 'secrets.json',
                      Path.cwd() / 'secrets.json'):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=1)
def _secrets() -> dict | None:
    path = secrets_path()
    if path is None or not path.is_file():
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"Could not read settings file {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object of settings.")
    return data


@lru_cache(maxsize=1)
def _django_settings() -> dict | None:
    try:
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured
    except ImportError:
        return None
    try:
        value = settings.SPACER
    except (ImproperlyConfigured, AttributeError):
        return None
    return dict(value) if value else None


def reload() -> None:
    """Forget cached file sources (after editing secrets.json, in tests)."""
    _secrets.cache_clear()
    _django_settings.cache_clear()


def _cast(setting: Setting, value: Any, source: str) -> Any:
    if isinstance(value, setting.type) and not (
            setting.type is int and isinstance(value, bool)):
        return value
    if setting.type is float and isinstance(value, int):
        return float(value)
    text = str(value).strip()
    try:
        if setting.type is bool:
            lowered = text.lower()
            if lowered in ('true', '1', 'yes', 'on'):
                return True
            if lowered in ('false', '0', 'no', 'off'):
                return False
            raise ValueError(text)
        return setting.type(text)
    except ValueError:
        raise ConfigError(
            f"Setting {setting.name} from {source} must be of type "
            f"{setting.type.__name__}, got {value!r}.") from None


def lookup(name: str) -> tuple[Any, str]:
    """Return (value, source) where source names where the value came from."""
    try:
        setting = SETTINGS[name]
    except KeyError:
        raise ConfigError(f"Unknown setting {name!r}; known settings: "
                          f"{', '.join(sorted(SETTINGS))}.") from None
    env_value = os.environ.get(ENV_PREFIX + name)
    if env_value not in (None, ''):
        source = f'environment ({ENV_PREFIX}{name})'
        return _cast(setting, env_value, source), source
    secrets = _secrets()
    if secrets is not None:
        value = secrets.get(name)
        if value not in (None, ''):
            source = f'secrets file ({secrets_path()})'
            return _cast(setting, value, source), source
    else:
        django = _django_settings()
        if django is not None and django.get(name) not in (None, ''):
            source = 'Django settings.SPACER'
            return _cast(setting, django[name], source), source
    return setting.default, 'default'


def get(name: str) -> Any:
    return lookup(name)[0]


def redact(name: str, value: Any) -> str:
    if value is None:
        return 'None'
    setting = SETTINGS.get(name)
    if setting is not None and setting.secret:
        text = str(value)
        if '://' in text and '@' in text:
            # Keep the URL readable, hide only its password.
            scheme, rest = text.split('://', 1)
            creds, host = rest.rsplit('@', 1)
            user = creds.split(':', 1)[0]
            return f'{scheme}://{user}:***@{host}'
        if '://' in text:
            return text
        return '***'
    return repr(value)


def describe() -> list[tuple[str, str, str]]:
    """(name, redacted value, source) for every setting, for the CLI."""
    return [(name, redact(name, value), source)
            for name in sorted(SETTINGS)
            for value, source in [lookup(name)]]


def broker_url() -> str:
    return get('BROKER_URL')


def result_backend_url() -> str:
    return get('RESULT_BACKEND') or broker_url()
