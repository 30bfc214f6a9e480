"""The compose `monitoring` profile: Prometheus, its alert rules, Grafana's
provisioning and the dashboard agree with each other and with the metrics
the code exports. Prometheus's own promtool (Debian's prometheus package,
installed by scripts/test.sh) checks the config and runs the alert rules
on made-up series."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from spacer_worker.config import SETTINGS
from spacer_worker.metrics import METRICS
from tests.deploy.conftest import CONFIG_DIR, REPO, read_env_file, require_tool

PROMETHEUS_DIR = CONFIG_DIR / 'prometheus'
GRAFANA_DIR = CONFIG_DIR / 'grafana' / 'provisioning'
DASHBOARD = REPO / 'docs' / 'grafana' / 'spacer-worker.json'
HISTOGRAM_SUFFIXES = ('_bucket', '_sum', '_count')


def promtool() -> str:
    return require_tool('promtool', 'apt-get install prometheus; '
                                    'scripts/test.sh does it')


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r'\bspacer_[a-z_]+\b', expr))


def known(name: str) -> bool:
    if name in METRICS:
        return True
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and METRICS.get(base) and \
                METRICS[base].kind == 'histogram':
            return True
    return False


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(panel['title'], target['expr']) for panel in board['panels']
            for target in panel['targets']]


def alert_rules() -> list[dict]:
    rules = yaml.safe_load((PROMETHEUS_DIR / 'alerts.yml').read_text())
    return [rule for group in rules['groups'] for rule in group['rules']]


def test_the_prometheus_config_and_rules_are_valid(tmp_path):
    # The container paths of compose.yaml, mapped onto the repository.
    config = (PROMETHEUS_DIR / 'prometheus.yml').read_text().replace(
        '/etc/prometheus/alerts.yml', str(PROMETHEUS_DIR / 'alerts.yml'))
    (tmp_path / 'prometheus.yml').write_text(config)

    checked = subprocess.run([promtool(), 'check', 'config',
                              str(tmp_path / 'prometheus.yml')],
                             capture_output=True, text=True, timeout=60)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert 'SUCCESS: 10 rules found' in checked.stdout


def test_alerts_fire_on_a_growing_queue_a_lost_worker_and_failures(tmp_path):
    tests = (Path(__file__).parent / 'prometheus' / 'alerts_test.yml')
    (tmp_path / 'alerts_test.yml').write_text(tests.read_text().replace(
        'RULES', str(PROMETHEUS_DIR / 'alerts.yml')))

    ran = subprocess.run([promtool(), 'test', 'rules',
                          str(tmp_path / 'alerts_test.yml')],
                         capture_output=True, text=True, timeout=60)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    names = {rule['alert'] for rule in alert_rules()}
    assert {'SpacerQueueGrowing', 'SpacerWorkerMissing',
            'SpacerFailureRateSpike'} <= names


def test_dashboard_and_alerts_use_only_exported_metrics():
    exprs = [expr for _, expr in dashboard_exprs()] + \
        [rule['expr'] for rule in alert_rules()]
    used = set().union(*(metric_names(e) for e in exprs))
    assert used and all(known(name) for name in used), \
        sorted(n for n in used if not known(n))


def test_the_dashboard_has_the_panels_operators_asked_for():
    board = json.loads(DASHBOARD.read_text())
    exprs = ' '.join(expr for _, expr in dashboard_exprs())
    titles = {panel['title'] for panel in board['panels']}
    assert {'Queue depth', 'Throughput (tasks/s)', 'Task latency p50',
            'Task latency p99', 'Failures by error class',
            'Workers alive'} <= titles
    assert 'histogram_quantile(0.5,' in exprs
    assert 'histogram_quantile(0.99,' in exprs
    ids = [panel['id'] for panel in board['panels']]
    assert len(ids) == len(set(ids))
    # Every panel reads the provisioned data source.
    source = yaml.safe_load((GRAFANA_DIR / 'datasources' /
                             'prometheus.yml').read_text())['datasources'][0]
    assert {p['datasource']['uid'] for p in board['panels']} == {source['uid']}
    assert source['url'] == 'http://prometheus:9090'


def test_grafana_finds_the_dashboard_where_compose_mounts_it(compose):
    grafana = compose['services']['grafana']
    provider = yaml.safe_load((GRAFANA_DIR / 'dashboards' / 'spacer.yml')
                              .read_text())['providers'][0]
    mounts = dict(volume.rsplit(':', 1)[0].split(':', 1)
                  for volume in grafana['volumes'] if volume.startswith('./'))
    assert mounts['./docs/grafana'] == provider['options']['path']
    assert mounts['./config/grafana/provisioning'] == '/etc/grafana/provisioning'
    home = read_env_file(CONFIG_DIR / 'grafana.env')[
        'GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH']
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


def test_prometheus_scrapes_the_ports_the_workers_serve(compose):
    config = yaml.safe_load((PROMETHEUS_DIR / 'prometheus.yml').read_text())
    jobs = {job['job_name']: job for job in config['scrape_configs']}
    spacer = read_env_file(CONFIG_DIR / 'spacer.env')

    workers = jobs['spacer-workers']['dns_sd_configs'][0]
    assert workers['port'] == int(spacer['SPACER_METRICS_PORT'])
    assert spacer['SPACER_METRICS_BIND'] == '0.0.0.0'
    worker_services = {name for name, svc in compose['services'].items()
                       if svc.get('command', [''])[0] in ('worker',
                                                          'gpu-workers')}
    static = {t.partition(':')[0]: int(t.partition(':')[2])
              for group in jobs['spacer-workers']['static_configs']
              for t in group['targets']}
    assert set(workers['names']) | set(static) == worker_services
    assert set(static.values()) == {int(spacer['SPACER_METRICS_PORT'])}
    # Scaled services are found by DNS (one target per replica); a static
    # name would be answered by any one replica in turn.
    from tests.deploy.test_consistency import SCALABLE
    assert set(SCALABLE) <= set(workers['names'])
    assert not set(SCALABLE) & set(static)

    exporter = compose['services']['metrics-exporter']
    assert exporter['command'] == ['spacer-worker', 'metrics']
    target = jobs['spacer-queues']['static_configs'][0]['targets'][0]
    assert target == \
        f"metrics-exporter:{SETTINGS['METRICS_EXPORTER_PORT'].default}"
    for name in ('prometheus', 'grafana', 'metrics-exporter'):
        assert compose['services'][name]['profiles'] == ['monitoring']


@pytest.mark.parametrize('service', ['prometheus', 'grafana'])
def test_monitoring_ports_stay_on_localhost_by_default(compose, service):
    ports = compose['services'][service]['ports']
    assert all(port.startswith('${') and ':-127.0.0.1}' in port
               for port in ports)
