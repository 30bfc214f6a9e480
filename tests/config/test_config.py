"""Settings come from the same sources, in the same order, as PySpacer's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spacer_worker import config
from spacer_worker.exceptions import ConfigError


@pytest.fixture
def secrets_file(tmp_path, monkeypatch):
    path = tmp_path / 'secrets.json'

    def write(data: dict) -> None:
        path.write_text(json.dumps(data))
        monkeypatch.setenv('SPACER_SECRETS_PATH', str(path))
        config.reload()
    return write


def test_defaults_when_nothing_is_set():
    assert config.get('MAX_IMAGE_PIXELS') == 10000 * 10000
    assert config.lookup('MAX_POINTS_PER_IMAGE') == (1000, 'default')
    assert config.broker_url() == 'redis://localhost:6379/0'
    assert config.result_backend_url() == config.broker_url()


def test_environment_wins_over_secrets_file(secrets_file, monkeypatch):
    secrets_file({'MAX_POINTS_PER_IMAGE': 50, 'AWS_REGION': 'eu-west-1'})
    monkeypatch.setenv('SPACER_MAX_POINTS_PER_IMAGE', '20')
    assert config.lookup('MAX_POINTS_PER_IMAGE') == (
        20, 'environment (SPACER_MAX_POINTS_PER_IMAGE)')
    value, source = config.lookup('AWS_REGION')
    assert value == 'eu-west-1' and source.startswith('secrets file')


def test_module_attributes_read_at_access_time(monkeypatch):
    monkeypatch.setenv('SPACER_MAX_IMAGE_PIXELS', '1234')
    assert config.MAX_IMAGE_PIXELS == 1234
    monkeypatch.setenv('SPACER_MAX_IMAGE_PIXELS', '99')
    assert config.MAX_IMAGE_PIXELS == 99


def test_bad_value_names_setting_and_source(monkeypatch):
    monkeypatch.setenv('SPACER_AWS_ANONYMOUS', 'maybe')
    with pytest.raises(ConfigError, match=r'AWS_ANONYMOUS.*SPACER_AWS_ANONYMOUS.*maybe'):
        config.get('AWS_ANONYMOUS')


def test_unreadable_secrets_file_is_a_config_error(tmp_path, monkeypatch):
    path = tmp_path / 'secrets.json'
    path.write_text('{not json')
    monkeypatch.setenv('SPACER_SECRETS_PATH', str(path))
    config.reload()
    with pytest.raises(ConfigError, match='secrets.json'):
        config.get('AWS_REGION')


def test_unknown_setting_is_rejected():
    with pytest.raises(ConfigError, match='NO_SUCH_THING'):
        config.get('NO_SUCH_THING')


def test_secrets_are_redacted(monkeypatch):
    monkeypatch.setenv('SPACER_AWS_SECRET_ACCESS_KEY', 'hunter2')
    monkeypatch.setenv('SPACER_BROKER_URL', 'redis://:s3cret@redis.example:6379/0')
    described = {name: (value, source) for name, value, source in config.describe()}
    assert described['AWS_SECRET_ACCESS_KEY'][0] == '***'
    assert 's3cret' not in described['BROKER_URL'][0]
    assert 'redis.example:6379/0' in described['BROKER_URL'][0]


DJANGO_PROBE = '''
import django
from django.conf import settings
settings.configure(SPACER={"AWS_REGION": "from-django", "MAX_POINTS_PER_IMAGE": 7})
django.setup()
from spacer_worker import config
print(config.lookup("AWS_REGION"), config.lookup("MAX_POINTS_PER_IMAGE"))
'''


def test_django_settings_used_when_no_secrets_file(tmp_path):
    env = {'PATH': '/usr/bin:/bin', 'SPACER_SECRETS_PATH': str(tmp_path / 'none.json')}
    out = subprocess.run([sys.executable, '-c', DJANGO_PROBE], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "('from-django', 'Django settings.SPACER')" in out
    assert "(7, 'Django settings.SPACER')" in out


def test_importing_the_package_reads_no_settings(tmp_path):
    # A broken secrets file would raise if anything read settings at import.
    bad = tmp_path / 'secrets.json'
    bad.write_text('{broken')
    probe = ('import spacer_worker, spacer_worker.config, spacer_worker.tasks,'
             ' spacer_worker.exceptions; print("imported")')
    out = subprocess.run([sys.executable, '-c', probe], capture_output=True,
                         text=True, env={'PATH': '/usr/bin:/bin',
                                         'SPACER_SECRETS_PATH': str(bad)})
    assert out.returncode == 0, out.stderr
    assert 'imported' in out.stdout
