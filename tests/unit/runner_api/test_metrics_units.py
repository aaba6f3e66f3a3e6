# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""runner_api/metrics.py without a database: the metrics settings, a worker's endpoint and its labels,
the API's /metrics refusals, the database collector's shape, and the Grafana dashboard against the
metric names the code exports. (tests/integration/test_runner_api_metrics.py has the database,
a real worker and gunicorn.)"""

import json
import re
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runner_api import cli, metrics  # noqa: E402
from runner_api.app import create_app  # noqa: E402
from runner_api.settings import Settings, SettingsError  # noqa: E402
from runner_api.worker import Worker  # noqa: E402

DB = 'postgresql://cloudpods:pw@127.0.0.1:5432/cloudpods'
PLANS_FILE = str(ROOT / 'playbooks' / 'vars' / 'plans.yml')
DASHBOARD = ROOT / 'deploy' / 'grafana' / 'cloudpods.json'
SCRAPE_CONFIG = ROOT / 'deploy' / 'prometheus' / 'cloudpods.yml'
TOKEN = 'm' * 12 + '-metrics-token-0123456789'
# Metrics a panel may name that this process does not export (none: the metering gauges are read here too).
FUTURE_METRICS = set()


def settings(**env):
    return Settings.from_env(dict({'DATABASE_URL': DB, 'CLOUDPODS_PLANS_FILE': PLANS_FILE}, **env))


# ---------------------------------------------------------------- settings

def test_metrics_settings_default_to_loopback_and_off():
    values = settings()
    assert (values.metrics_token, values.worker_metrics_host, values.worker_metrics_port) == (None, '127.0.0.1', 0)


def test_metrics_token_is_a_secret_never_in_repr():
    values = settings(CLOUDPODS_METRICS_TOKEN=TOKEN)
    assert values.metrics_token == TOKEN
    assert TOKEN in values.secrets()
    assert TOKEN not in repr(values)


@pytest.mark.parametrize('env, message', [
    ({'CLOUDPODS_METRICS_TOKEN': 'short'}, 'CLOUDPODS_METRICS_TOKEN must be at least 24 printable characters'),
    ({'CLOUDPODS_WORKER_METRICS_PORT': '70000'}, 'CLOUDPODS_WORKER_METRICS_PORT must be at most 65535, got 70000'),
    ({'CLOUDPODS_WORKER_METRICS_PORT': 'ninety'}, "CLOUDPODS_WORKER_METRICS_PORT must be an integer, got 'ninety'"),
    ({'CLOUDPODS_WORKER_METRICS_PORT': '9400', 'CLOUDPODS_WORKER_METRICS_HOST': '0.0.0.0'},
     "CLOUDPODS_WORKER_METRICS_HOST is '0.0.0.0', not a loopback address: set CLOUDPODS_METRICS_TOKEN too"),
], ids=['short-token', 'port-range', 'port-not-a-number', 'open-host-without-token'])
def test_bad_metrics_settings_are_named(env, message):
    with pytest.raises(SettingsError) as caught:
        settings(**env)
    assert message in str(caught.value)
    if 'CLOUDPODS_METRICS_TOKEN' in env:
        assert repr(env['CLOUDPODS_METRICS_TOKEN']) not in str(caught.value)  # a token's value is never echoed


def test_an_open_worker_host_is_allowed_with_the_token():
    values = settings(CLOUDPODS_WORKER_METRICS_PORT='9400', CLOUDPODS_WORKER_METRICS_HOST='10.0.0.5',
                      CLOUDPODS_METRICS_TOKEN=TOKEN)
    assert (values.worker_metrics_host, values.worker_metrics_port) == ('10.0.0.5', 9400)
    assert settings(CLOUDPODS_WORKER_METRICS_PORT='9400', CLOUDPODS_WORKER_METRICS_HOST='::1').worker_metrics_port


# ---------------------------------------------------------------- a worker's metrics

@contextmanager
def served(worker_metrics, token=None):
    host, port = worker_metrics.serve('127.0.0.1', 0, token)
    try:
        yield 'http://%s:%d' % (host, port)
    finally:
        worker_metrics.stop()


def families(text):
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_worker_endpoint_serves_what_was_observed_and_asks_for_the_token():
    observed = metrics.WorkerMetrics()
    observed.ended('CREATE_CONTAINER', 'completed', 42.0)
    observed.ended('CREATE_CONTAINER', 'retry', 3.0)
    observed.failed('CREATE_CONTAINER', 'pod_container : Create the container')
    with served(observed, TOKEN) as url:
        assert requests.get(url + '/metrics', timeout=5).status_code == 401
        assert requests.get(url + '/metrics', headers={'Authorization': 'Bearer ' + TOKEN + 'x'},
                            timeout=5).status_code == 401
        assert requests.get(url + '/', headers={'Authorization': 'Bearer ' + TOKEN}, timeout=5).status_code == 404
        response = requests.get(url + '/metrics', headers={'Authorization': 'Bearer ' + TOKEN}, timeout=5)
    assert response.status_code == 200
    assert response.headers['Content-Type'] == metrics.CONTENT_TYPE
    found = families(response.text)
    durations = {(s.labels['operation'], s.labels['outcome']): s.value
                 for s in found['cloudpods_operation_duration_seconds'].samples if s.name.endswith('_sum')}
    assert durations == {('CREATE_CONTAINER', 'completed'): 42.0, ('CREATE_CONTAINER', 'retry'): 3.0}
    failures = [(s.labels, s.value) for s in found['cloudpods_operation_failures'].samples if s.name.endswith('_total')]
    assert failures == [({'operation': 'CREATE_CONTAINER', 'step': 'pod_container : Create the container'}, 1.0)]


def test_worker_endpoint_without_a_token_is_open_on_loopback():
    with served(metrics.WorkerMetrics()) as url:
        assert requests.get(url + '/metrics', timeout=5).status_code == 200


def test_labels_stay_bounded():
    observed = metrics.WorkerMetrics()
    with pytest.raises(ValueError):
        observed.ended('CREATE_CONTAINER', 'exploded', 1.0)
    observed.ended('NOT_AN_OPERATION', 'failed', 1.0)
    observed.failed('CREATE_CONTAINER', None)
    observed.failed('CREATE_CONTAINER', 'x' * 500)
    for number in range(metrics.STEP_LABELS_LIMIT + 50):
        observed.failed('CREATE_CONTAINER', 'step %d' % number)
    steps = {s.labels['step'] for family in observed.registry.collect() for s in family.samples
             if 'step' in s.labels}
    assert 'worker' in steps and 'x' * metrics.STEP_LABEL_LENGTH in steps
    assert 'other' in steps
    assert len(steps) == metrics.STEP_LABELS_LIMIT + 2  # the named steps up to the limit, "worker" and "other"
    operations = {s.labels['operation'] for family in observed.registry.collect() for s in family.samples}
    assert operations == {'CREATE_CONTAINER', 'other'}


# ---------------------------------------------------------------- the API's /metrics

class Unreachable(object):
    """A pool whose connections fail, as when the database is down."""

    @contextmanager
    def connection(self):
        raise OSError('connection refused')
        yield  # pylint: disable=unreachable


class Rows(object):
    """A pool whose every query answers ``rows`` (SET statements included)."""

    def __init__(self, rows):
        self.rows = rows
        self.statements = []

    @contextmanager
    def connection(self):
        yield self

    @contextmanager
    def transaction(self):
        yield

    def execute(self, sql):
        self.statements.append(' '.join(sql.split()))
        return self

    def fetchall(self):
        return self.rows


class FakeRepository(object):
    def __init__(self, pool):
        self.pool = pool


def test_api_metrics_are_off_without_a_token_and_refuse_other_tokens():
    off = create_app(settings(), FakeRepository(Unreachable())).test_client()
    response = off.get('/metrics', headers={'Authorization': 'Bearer ' + TOKEN})
    assert response.status_code == 404 and 'CLOUDPODS_METRICS_TOKEN' in response.get_json()['detail']
    on = create_app(settings(CLOUDPODS_METRICS_TOKEN=TOKEN), FakeRepository(Unreachable())).test_client()
    assert on.get('/metrics').status_code == 401
    assert on.get('/metrics', headers={'Authorization': 'Basic ' + TOKEN}).status_code == 401
    assert on.get('/metrics', headers={'Authorization': 'Bearer ' + TOKEN[:-1]}).status_code == 401


def test_a_database_that_does_not_answer_gives_database_up_0_and_no_queue(caplog):
    app = create_app(settings(CLOUDPODS_METRICS_TOKEN=TOKEN), FakeRepository(Unreachable())).test_client()
    for _index in range(3):
        response = app.get('/metrics', headers={'Authorization': 'Bearer ' + TOKEN})
        assert response.status_code == 200
        found = families(response.get_data(as_text=True))
        assert [s.value for s in found['cloudpods_database_up'].samples] == [0]
        assert 'cloudpods_queue_tasks' not in found
    assert TOKEN not in caplog.text


def test_database_gauges_from_rows_zero_filled_in_one_read_only_transaction():
    # The fake answers every query with these rows: each reading takes the columns it names.
    pool = Rows([{'operation': 'RESTART', 'state': 'running', 'tasks': 2, 'oldest_waiting': 0,
                  'backlog': 7, 'oldest': 12.5, 'cluster': 'https://pve:8006/api2/json', 'lag': 42.0, 'pods': 900,
                  'node': 'pve2', 'resource': 'memory', 'free': 3 << 30, 'online': 1}])
    found = {family.name: family for family in metrics.DatabaseCollector(pool).collect()}
    assert pool.statements[:2] == ['SET TRANSACTION READ ONLY', 'SET LOCAL statement_timeout = %d'
                                   % metrics.DB_STATEMENT_TIMEOUT_MS]
    queue = {(s.labels['operation'], s.labels['state']): s.value for s in found['cloudpods_queue_tasks'].samples}
    assert queue[('RESTART', 'running')] == 2
    assert queue[('CREATE_CONTAINER', 'waiting')] == 0  # zero-filled: every queued operation, every state
    assert len(queue) == len(metrics._queued_operations()) * len(metrics.QUEUE_STATES)
    assert [s.value for s in found['cloudpods_webhook_backlog_events'].samples] == [7]
    assert [s.value for s in found['cloudpods_database_up'].samples] == [1]
    assert [(s.labels, s.value) for s in found['cloudpods_metering_lag_seconds'].samples] == [
        ({'cluster': 'https://pve:8006/api2/json'}, 42.0)]
    assert [(s.labels, s.value) for s in found['cloudpods_node_free_bytes'].samples] == [
        ({'node': 'pve2', 'resource': 'memory'}, float(3 << 30))]


# ---------------------------------------------------------------- the dashboard and the scrape example

def exported_names():
    """Every sample name the code can export: the worker's, the API's and the database gauges."""
    collected = list(metrics.WorkerMetrics().registry.collect())
    collected += list(metrics.API_REQUESTS.collect()) + list(metrics.API_LATENCY.collect())
    collected += list(metrics.DatabaseCollector(Rows([])).collect())
    suffixes = {'counter': ('_total',), 'histogram': ('_bucket', '_count', '_sum'), 'gauge': ('',)}
    return {family.name + suffix for family in collected for suffix in suffixes[family.type]}


def dashboard_panels():
    def walk(panels):
        for panel in panels:
            yield panel
            yield from walk(panel.get('panels', []))
    return list(walk(json.loads(DASHBOARD.read_text())['panels']))


def test_dashboard_expressions_name_only_exported_metrics():
    exported = exported_names()
    used = set()
    for panel in dashboard_panels():
        if panel['type'] == 'row':
            continue
        assert panel['datasource'] == {'type': 'prometheus', 'uid': '${DS_PROMETHEUS}'}, panel['title']
        assert panel['targets'], panel['title']
        for target in panel['targets']:
            assert target['datasource']['uid'] == '${DS_PROMETHEUS}', panel['title']
            names = set(re.findall(r'\bcloudpods_[a-z0-9_]+', target['expr']))
            assert names, (panel['title'], target['expr'])
            assert names <= exported | FUTURE_METRICS, (panel['title'], names - exported - FUTURE_METRICS)
            used |= names
    # Every family the code exports has a panel.
    families_used = {re.sub(r'_(total|bucket|count|sum)$', '', name) for name in used}
    for name in exported:
        assert re.sub(r'_(total|bucket|count|sum)$', '', name) in families_used, name
    assert FUTURE_METRICS <= used


def test_dashboard_datasource_is_a_variable_and_its_queries_use_exported_metrics():
    document = json.loads(DASHBOARD.read_text())
    variables = {variable['name']: variable for variable in document['templating']['list']}
    assert variables['DS_PROMETHEUS']['type'] == 'datasource'
    assert variables['DS_PROMETHEUS']['query'] == 'prometheus'
    for variable in variables.values():
        if variable['type'] == 'query':
            names = set(re.findall(r'\bcloudpods_[a-z0-9_]+', variable['query']['query']))
            assert names and names <= exported_names()
    assert len({panel['id'] for panel in dashboard_panels()}) == len(dashboard_panels())


def test_scrape_example_sends_the_token_from_a_file_never_inline():
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    jobs = {job['job_name']: job for job in config['scrape_configs']}
    assert set(jobs) == {'cloudpods-api', 'cloudpods-workers'}
    for job in jobs.values():
        assert job['metrics_path'] == metrics.METRICS_PATH
        assert job['authorization'] == {'type': 'Bearer', 'credentials_file': '/etc/prometheus/cloudpods-metrics.token'}


# ---------------------------------------------------------------- cloudpods worker --metrics-port-offset

def test_worker_port_is_the_setting_plus_the_instance_number(capsys):
    parser = cli.build_parser()
    assert parser.parse_args(['worker', '--metrics-port-offset', '3']).metrics_port_offset == 3
    assert parser.parse_args(['worker']).metrics_port_offset == 0
    assert cli._metrics_port(settings(CLOUDPODS_WORKER_METRICS_PORT='9400'), 3) == 9403
    assert cli._metrics_port(settings(), 3) == 0  # no endpoint: the offset does not make one
    with pytest.raises(SystemExit) as caught:
        cli._metrics_port(settings(CLOUDPODS_WORKER_METRICS_PORT='65535'), 1)
    assert caught.value.code == 2
    assert 'past 65535' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(['worker', '--metrics-port-offset', 'a'])
    assert "the systemd unit's instance name must be a number" in capsys.readouterr().err


def test_worker_endpoint_on_ipv6_loopback():
    probe = socket.socket(socket.AF_INET6)
    try:
        probe.bind(('::1', 0))
    except OSError:
        pytest.skip('no IPv6 loopback here')
    finally:
        probe.close()
    observed = metrics.WorkerMetrics()
    host, port = observed.serve('::1', 0)
    try:
        assert host == '::1'
        assert requests.get('http://[::1]:%d/metrics' % port, timeout=5).status_code == 200
    finally:
        observed.stop()


def test_a_port_in_use_is_logged_and_the_worker_goes_on(caplog):
    first = metrics.WorkerMetrics()
    _host, port = first.serve('127.0.0.1', 0)
    try:
        worker = Worker(settings(CLOUDPODS_METRICS_TOKEN=TOKEN), worker_id='w-metrics', executor=object(),
                        repository=object(), metrics_port=port)
        worker._serve_metrics()  # pylint: disable=protected-access
    finally:
        first.stop()
    assert worker.metrics.server is None
    assert 'worker w-metrics: no metrics: cannot listen on 127.0.0.1 port %d' % port in caplog.text
    assert TOKEN not in caplog.text
