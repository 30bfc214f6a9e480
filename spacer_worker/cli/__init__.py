"""The ``spacer-worker`` command.

    spacer-worker demo                 the whole pipeline on generated data
    spacer-worker submit MSG.json      send one message (--wait: progress bar)
    spacer-worker status|result|cancel HANDLE
    spacer-worker status --queues      depth per queue/priority, oldest job
    spacer-worker metrics              queue exporter for Prometheus
    spacer-worker config               effective settings and their sources
    spacer-worker report VALRESULT     figures + HTML page of a training
    spacer-worker check                exit 0 when workers answer (healthcheck)
    spacer-worker worker [ARGS...]     celery -A spacer_worker worker ARGS...

Exit codes: 0 success, 1 the job or check failed, 2 bad usage or input.
Everything here runs on a client install; only ``demo`` needs the worker
extra (imported by that command).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from spacer_worker import config
from spacer_worker.celery.health import check
from spacer_worker.client.jobs import Client
from spacer_worker.exceptions import RecordError, SpacerError, failures
from spacer_worker.messages.table import PROCESS_JOB, TASKS

# --task NAME -> message class, from the contract table.
_TASK_CHOICES: dict[str, type] = {
    str(row.name): row.message for row in [*TASKS.values(), PROCESS_JOB]}

# The rows a JSON file may hold, the most demanding first: a file is the
# first message whose required fields it holds (the contract table says
# which those are).
_SHAPES = sorted([*TASKS.values(), PROCESS_JOB],
                 key=lambda row: -len(row.required_keys()))


class UsageError(Exception):
    """Bad command-line input; printed without a traceback, exit code 2."""


def message_class_for(data: Any, task: str | None = None) -> type:
    """The message class of a JSON payload (``task`` forces it)."""
    if task is not None:
        return _TASK_CHOICES[task]
    if isinstance(data, dict):
        for row in _SHAPES:
            if row.shaped_like(data):
                return row.message
    names = ', '.join(row.message.__name__ for row in _SHAPES)
    raise UsageError(
        f'Cannot tell which message this file holds (expected the JSON of '
        f'one of {names}); name it with --task.')


def _read_json(path: str) -> Any:
    """The JSON in ``path``, or a UsageError that says what is wrong."""
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise UsageError(f'Cannot read {path}: {e.strerror}.') from e
    except ValueError as e:
        raise UsageError(f'{path} is not valid JSON: {e}.') from e


def load_message(path: str, task: str | None = None) -> Any:
    data = _read_json(path)
    return message_class_for(data, task).deserialize(data)


# --- commands ------------------------------------------------------------------

def cmd_config(args: argparse.Namespace) -> int:
    rows = config.describe()
    width = max(len(name) for name, _, _ in rows)
    vwidth = min(48, max(len(value) for _, value, _ in rows))
    for name, value, source in rows:
        print(f'{name:<{width}}  {value:<{vwidth}}  {source}')
    return 0


def _progress_bar(handle: Any) -> tuple[Any, Any]:
    """A tqdm bar fed by JobStatus updates; no-op without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return (lambda status: None), (lambda: None)
    bar = tqdm(desc=str(handle.task).removeprefix('spacer.'), unit='step',
               file=sys.stderr, leave=True)
    seen = {'state': None}

    def update(status: Any) -> None:
        # Progress comes from a record in Redis: numbers only are shown.
        info = status.progress or {}
        done = _count(info.get('done', info.get('epoch')))
        total = _count(info.get('total', info.get('epochs')))
        if total:
            bar.total = total
        if done is not None:
            bar.n = done
        if status.state != seen['state']:
            seen['state'] = status.state
        postfix = {'state': str(status.state)}
        ref_acc = info.get('ref_acc')
        if isinstance(ref_acc, (int, float)) and not isinstance(ref_acc,
                                                                bool):
            postfix['ref_acc'] = f'{ref_acc:.3f}'
        bar.set_postfix(postfix, refresh=False)
        bar.refresh()

    return update, bar.close


def _count(value: Any) -> int | None:
    """A step count from a progress record, None unless a sane integer."""
    if isinstance(value, int) and not isinstance(value, bool) and \
            0 <= value < 10 ** 12:
        return value
    return None


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write('\n')


def cmd_submit(args: argparse.Namespace) -> int:
    msg = load_message(args.file, args.task)
    client = Client()
    handle = client.submit(msg, queue=args.queue, priority=args.priority,
                           idempotency_key=args.idempotency_key)
    print(f'submitted {handle.task} to queue {handle.queue!r}; handle: '
          f'{handle}', file=sys.stderr)
    if not args.wait:
        print(handle)
        return 0
    update, close = _progress_bar(handle)
    try:
        result = client.result(handle, timeout=args.timeout,
                               on_status=update)
    finally:
        close()
    _print_json(result.serialize())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.queues:
        return _queue_status(args)
    if args.handle is None:
        raise UsageError('give a HANDLE, or --queues for the queue view.')
    status = Client().status(args.handle)
    if status.error_class == failures.BAD_RECORD:
        # A record that could not be read: an error, not a state.
        raise RecordError(status.error or 'its record could not be read')
    _print_json({'state': str(status.state), 'progress': status.progress,
                 'error_type': status.error_type, 'error': status.error})
    return 0


def _queue_status(args: argparse.Namespace) -> int:
    from spacer_worker import config
    from spacer_worker.celery.queues import (
        broker_redis,
        format_view,
        known_queues,
        read_broker,
    )
    queues = known_queues(args.queue or ())
    broker = config.redact('BROKER_URL', config.broker_url())
    conn = None
    try:
        conn, redis = broker_redis()
        view = read_broker(redis, queues)
    except SpacerError:
        raise
    except Exception as e:
        print(f'spacer-worker status: cannot read the queues at {broker}: '
              f'{type(e).__name__}: {e}', file=sys.stderr)
        return 1
    finally:
        if conn is not None:
            conn.release()
    print(f'broker {broker}')
    for line in format_view(view):
        print(line)
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from spacer_worker import config
    from spacer_worker.celery import app
    from spacer_worker.celery.exporter import serve
    from spacer_worker.celery.queues import known_queues

    queues = known_queues(args.queue or ())
    port = args.port if args.port is not None else \
        config.get('METRICS_EXPORTER_PORT')
    bind = args.bind or config.get('METRICS_BIND')
    try:
        server = serve(app, queues, bind, port, config.get('METRICS_AUTH'))
    except OSError as e:
        print(f'spacer-worker metrics: cannot listen on {bind}:{port}: '
              f'{e.strerror}', file=sys.stderr)
        return 1
    auth = 'basic auth' if config.get('METRICS_AUTH') else 'no auth'
    print(f'queue metrics of {", ".join(queues)} on '
          f'http://{bind}:{server.server_port}/metrics ({auth}); broker '
          f"{config.redact('BROKER_URL', config.broker_url())}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    result = Client().result(args.handle, timeout=args.timeout)
    _print_json(result.serialize() if hasattr(result, 'serialize') else result)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    Client().cancel(args.handle, terminate=args.terminate)
    print(f'revoked {args.handle}', file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    ok, lines = check(node=args.node, queues=args.queue, timeout=args.timeout)
    for line in lines:
        print(line, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def cmd_worker(args: argparse.Namespace) -> int:
    argv = [sys.executable, '-m', 'celery', '-A', 'spacer_worker', 'worker',
            *args.celery_args]
    os.execv(sys.executable, argv)
    return 1  # not reached


def _load_json_message(path: str, class_name: str) -> Any:
    from spacer_worker import messages
    from spacer_worker.data_classes import ValResults
    cls = ValResults if class_name == 'ValResults' else \
        getattr(messages, class_name)
    data = _read_json(path)
    try:
        return cls.deserialize(data)
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f'{path} is not a {class_name} serialization: '
                         f'{type(e).__name__}: {e}') from e


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from spacer_worker.report import (
        build_report,
        load_label_names,
        write_report_dir,
    )
    val_results = _load_json_message(args.valresult, 'ValResults')
    train_result = None if args.train_result is None else \
        _load_json_message(args.train_result, 'TrainClassifierReturnMsg')
    names = None if args.labels is None else load_label_names(args.labels)
    out = args.out or str(Path(args.valresult).with_suffix('')) + '_report'
    report = build_report(val_results, names, train_result,
                          title=args.title or
                          f'Training report: {Path(args.valresult).name}')
    index = write_report_dir(report, out)
    print(f'report: {index.resolve()} ({len(report.figures)} figures as PNG '
          f'beside it)')
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from spacer_worker.cli.demo import run_demo  # needs the worker extra
    try:
        report = run_demo(out_dir=args.out, images=args.images,
                          points=args.points, epochs=args.epochs,
                          mode=args.mode, seed=args.seed)
    except ValueError as e:
        raise UsageError(str(e)) from e
    except RuntimeError as e:
        print(f'spacer-worker demo: {e}', file=sys.stderr)
        return 1
    return 0 if report.ok else 1


# --- parser --------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='spacer-worker',
        description="PySpacer's jobs (feature extraction, classifier "
                    "training, classification) on Celery workers.")
    sub = parser.add_subparsers(dest='command', required=True,
                                metavar='COMMAND')

    p = sub.add_parser('demo', help='run the whole pipeline on generated '
                                    'data (embedded unless '
                                    'SPACER_BROKER_URL is set)')
    p.add_argument('--out', default=None,
                   help='output folder (default: ./spacer-demo)')
    p.add_argument('--images', type=int, default=10,
                   help='images to generate (default 10)')
    p.add_argument('--points', type=int, default=40,
                   help='annotated points per image (default 40)')
    p.add_argument('--epochs', type=int, default=50,
                   help='training epochs (default 50)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--mode', choices=['auto', 'embedded', 'broker'],
                   default='auto',
                   help="'broker': SPACER_BROKER_URL and running workers; "
                        "'embedded': in-process broker and workers; 'auto' "
                        "(default): broker when SPACER_BROKER_URL is set")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser('submit', help='send one message from a JSON file')
    p.add_argument('file', help='JSON of a PySpacer message (Msg.serialize())')
    p.add_argument('--task', choices=sorted(_TASK_CHOICES),
                   help='message type, when it cannot be told from the keys')
    p.add_argument('--queue', help="override the contract's queue")
    p.add_argument('--priority', type=int, choices=range(10), metavar='0-9',
                   help='0 is served first (expedite)')
    p.add_argument('--idempotency-key', metavar='KEY',
                   help='one job per KEY while it is pending or running '
                        '(default: the task name and job token)')
    p.add_argument('--wait', action='store_true',
                   help='wait, with a progress bar, and print the result')
    p.add_argument('--timeout', type=float, default=None,
                   help='seconds to wait at most (with --wait)')
    p.set_defaults(func=cmd_submit)

    for name, func, text in (('status', cmd_status, "a job's state, or "
                                                    'the queues (--queues)'),
                             ('result', cmd_result, "wait for a job's result"),
                             ('cancel', cmd_cancel, 'revoke a job')):
        p = sub.add_parser(name, help=text)
        p.add_argument('handle', help='handle printed by submit (or task id)',
                       nargs='?' if name == 'status' else None)
        if name == 'status':
            p.add_argument('--queues', action='store_true',
                           help='depth of each queue per priority and the '
                                "oldest waiting job's age")
            p.add_argument('--queue', action='append', metavar='NAME',
                           help='also show this queue (repeatable)')
        if name == 'result':
            p.add_argument('--timeout', type=float, default=None)
        if name == 'cancel':
            p.add_argument('--terminate', action='store_true',
                           help='also stop it if running (prefork workers)')
        p.set_defaults(func=func)

    p = sub.add_parser('config', help='effective settings, where each came '
                                      'from (secrets redacted)')
    p.set_defaults(func=cmd_config)

    p = sub.add_parser('report', help='figures and an HTML page of a '
                                      "training's validation results")
    p.add_argument('valresult', help="a ValResults JSON (the training's "
                                     'valresult_loc)')
    p.add_argument('--labels', metavar='NAMES.json',
                   help='label names: {"<label id>": "<name>", ...}')
    p.add_argument('--train-result', metavar='RESULT.json',
                   help="the training's TrainClassifierReturnMsg JSON: adds "
                        'accuracy per epoch and the previous classifiers')
    p.add_argument('--out', metavar='DIR',
                   help='output folder (default: VALRESULT without its '
                        'extension + _report)')
    p.add_argument('--title', help='page title')
    p.set_defaults(func=cmd_report)

    p = sub.add_parser('metrics', help='serve queue lengths, oldest job age '
                                       'and live workers for Prometheus')
    p.add_argument('--port', type=int, default=None,
                   help='default: METRICS_EXPORTER_PORT (9809)')
    p.add_argument('--bind', default=None,
                   help='default: METRICS_BIND (127.0.0.1)')
    p.add_argument('--queue', action='append', metavar='NAME',
                   help='also export this queue (repeatable)')
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser('check', help='exit 0 when the broker and workers '
                                     'answer (container healthcheck)')
    p.add_argument('--node', help="worker name to ping, e.g. 'extract@host' "
                                  "(default: any worker)")
    p.add_argument('--queue', action='append',
                   help='require a worker consuming this queue (repeatable)')
    p.add_argument('--timeout', type=float, default=5.0)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser('worker', help='celery -A spacer_worker worker ...',
                       add_help=False)
    p.add_argument('celery_args', nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['worker']:
        # Everything after 'worker' is Celery's, --help included.
        return cmd_worker(argparse.Namespace(celery_args=argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f'spacer-worker {args.command}: {e}', file=sys.stderr)
        return 2
    except SpacerError as e:
        print(f'spacer-worker {args.command}: {type(e).__name__}: {e}',
              file=sys.stderr)
        return 1
    except TimeoutError as e:
        print(f'spacer-worker {args.command}: {e}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

