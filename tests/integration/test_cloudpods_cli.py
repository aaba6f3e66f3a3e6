# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``cloudpods`` command and the services' start-up, as real processes against the lab (issue 17, part 2).

- ``cloudpods migrate`` on a new database applies the migrations; a second run is a no-op (exit 0,
  the schema unchanged).
- ``cloudpods token create``/``list``/``revoke``: the created token works against the API, the
  list shows it without its value, a revoked token gets 401.
- ``cloudpods provision --dry-run`` says what it would create and changes nothing: no task in the
  database, no Proxmox write, no DNS zone, no file on the "Proxmox host".
- A malformed setting stops a real worker and a real gunicorn at start-up, naming the setting,
  and neither starts polling or serving.
"""

import json
import os
import subprocess
import sys
import time
import uuid

import psycopg
import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from runner_api.app import create_app  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import scratch_database, with_database, worker_environment  # noqa: E402
from labenv import free_port  # noqa: E402
from pdnslab import PowerDnsLab  # noqa: E402
from test_runner_api_worker import Queue, site_vars  # noqa: E402

BIN = os.path.dirname(os.path.abspath(sys.executable))
CLOUDPODS = os.path.join(BIN, 'cloudpods')  # the pyproject entry point, as installed by tools/install
GUNICORN = os.path.join(BIN, 'gunicorn')
WRITES = ('POST', 'PUT', 'DELETE')
# What a schema is made of: columns, constraints, indexes, and the migrations recorded.
SCHEMA = """
    SELECT 'column' AS kind, table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
           || ' ' || coalesce(column_default, '') AS what
    FROM information_schema.columns WHERE table_schema = 'public'
    UNION ALL SELECT 'constraint', conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
    UNION ALL SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'public'
    ORDER BY 1, 2"""


def cloudpods(env, *argv, timeout=120):
    result = subprocess.run([CLOUDPODS] + list(argv), env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout, check=False)
    return result


def ok(result):
    assert result.returncode == 0, 'rc %s\n%s\n%s' % (result.returncode, result.stdout, result.stderr)
    return result.stdout


@pytest.fixture
def new_database(lab_env):
    """An empty database (not migrated) in the lab's PostgreSQL; dropped afterwards."""
    name = 'cloudpods_cli_%s' % uuid.uuid4().hex[:8]
    with psycopg.connect(lab_env['DATABASE_URL'], autocommit=True) as admin:
        admin.execute('CREATE DATABASE "%s"' % name)
    try:
        yield with_database(lab_env['DATABASE_URL'], name)
    finally:
        with psycopg.connect(lab_env['DATABASE_URL'], autocommit=True) as admin:
            admin.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)


def schema(url):
    with psycopg.connect(url) as connection:
        return (connection.execute(SCHEMA).fetchall(),
                connection.execute('SELECT name, sha256, applied_at FROM cloud_pod_schema_migrations ORDER BY 1').fetchall())


def test_migrate_twice_the_second_is_a_no_op(lab_env, new_database):
    assert os.access(CLOUDPODS, os.X_OK), 'no cloudpods entry point in %s: run tools/install' % BIN
    env = worker_environment(lab_env, new_database)
    first = ok(cloudpods(env, 'migrate'))
    assert first.startswith('applied: ') and '0001_cloud_pods.sql' in first, first
    tables, applied = schema(new_database)
    assert [name for kind, name in tables if name.startswith('cloud_pod_subscriptions.id ')], tables
    assert len(applied) == len(first[len('applied: '):].split(', '))
    second = ok(cloudpods(env, 'migrate'))
    assert second.strip() == 'database is up to date'
    assert schema(new_database) == (tables, applied)


def test_token_create_list_revoke(lab_env):
    with scratch_database(lab_env['DATABASE_URL']) as url:
        env = worker_environment(lab_env, url)
        created = json.loads(ok(cloudpods(env, 'token', 'create', '--name', 'cli-test', '--role', 'service',
                                          '--json')))
        token = created['token']
        assert created['role'] == 'service' and len(token) >= 32
        listing = ok(cloudpods(env, 'token', 'list'))
        assert token not in listing
        [line] = [line for line in listing.splitlines() if line.endswith('\tcli-test')]
        assert line.split('\t') == [str(created['id']), 'service', '-', 'active', 'never', 'cli-test']

        app = create_app(Settings.from_env(dict(lab_env, DATABASE_URL=url)))
        client = app.test_client()
        headers = {'Authorization': 'Bearer ' + token, 'X-Customer-Id': 'cust-cli'}
        reply = client.get('/api/cloud-pods/my-pods', headers=headers)
        assert reply.status_code == 200, reply.get_data(as_text=True)

        revoked = ok(cloudpods(env, 'token', 'revoke', str(created['id'])))
        assert 'revoked token %s (cli-test, service)' % created['id'] in revoked
        assert client.get('/api/cloud-pods/my-pods', headers=headers).status_code == 401
        [line] = [line for line in ok(cloudpods(env, 'token', 'list')).splitlines() if line.endswith('\tcli-test')]
        assert line.split('\t')[3] == 'revoked'
        again = cloudpods(env, 'token', 'revoke', str(created['id']))
        assert again.returncode == 1 and 'no active token with id %s' % created['id'] in again.stderr


def test_provision_dry_run_prints_and_changes_nothing(lab_env, lab_control, tmp_path):
    pdns = PowerDnsLab(lab_env)
    domain = 'dry-cli-%s.test' % uuid.uuid4().hex[:8]
    pod = 'dry-cli-%s' % uuid.uuid4().hex[:8]
    containers = lab_control.state()['containers']
    with scratch_database(lab_env['DATABASE_URL']) as url:
        env = worker_environment(lab_env, url, extra_vars_file=site_vars(tmp_path))
        since = time.time()
        result = cloudpods(env, 'provision', 'CLOUD_POD_STARTER', '--domain', domain, '--pod', pod,
                           '--email', 'jane@example.org', '--dry-run', timeout=300)
        out = ok(result)
        with psycopg.connect(url) as connection:
            counts = connection.execute('SELECT (SELECT count(*) FROM cloud_pod_provisioning_tasks) AS tasks, '
                                        '(SELECT count(*) FROM cloud_pod_subscriptions) AS pods, '
                                        '(SELECT count(*) FROM cloud_pod_events) AS events').fetchone()
    # What it would do: the container with the plan's size, the DNS zone, the backup cron entry.
    assert 'dry run successful (rc 0); nothing was changed' in out, out
    changed = [line.split(None, 1)[1] for line in out.splitlines() if line.lstrip().startswith('changed ')]
    assert any(step.startswith('pod_container : ') for step in changed), out
    assert any(step.startswith('pod_dns : ') for step in changed), out
    assert 'memory: null -> 1024' in out, out
    # ... and nothing happened anywhere.
    assert counts == (0, 0, 0)
    writes = [(r['method'], r['path']) for r in lab_control.requests() if r['time'] >= since and r['method'] in WRITES]
    assert writes == []
    assert lab_control.state()['containers'] == containers
    assert pdns.zone(domain) is None
    host = tmp_path / 'host'
    assert [str(p) for p in host.rglob('*') if p.is_file()] == []


def test_malformed_setting_stops_a_real_worker(lab_env, tmp_path):
    with scratch_database(lab_env['DATABASE_URL']) as url:
        queue = Queue(url, worker_environment(lab_env, url), tmp_path)
        try:
            pod = queue.order()
            env = worker_environment(lab_env, url, extra_vars_file=site_vars(tmp_path), lease_seconds='thirty',
                                     poll_seconds=1)
            result = subprocess.run([CLOUDPODS, 'worker', '--worker-id', 'bad'], env=env, cwd=ROOT,
                                    capture_output=True, text=True, timeout=60, check=False)
            task = queue.rows('SELECT status, attempts, worker_id FROM cloud_pod_provisioning_tasks')[0]
            events = queue.rows('SELECT count(*) AS n FROM cloud_pod_events')[0]['n']
        finally:
            queue.stop_all()
    assert result.returncode == 2, result.stdout + result.stderr
    assert "CLOUDPODS_LEASE_SECONDS must be a number, got 'thirty'" in result.stderr, result.stderr
    assert 'Traceback' not in result.stderr + result.stdout
    assert 'ready' not in result.stderr + result.stdout
    assert (task['status'], task['attempts'], task['worker_id'], events) == ('PENDING', 0, None, 0), (task, pod)


@pytest.mark.parametrize('setting, value, message, conf', [
    ('CLOUDPODS_PLANS_FILE', 'plans: [unclosed', 'CLOUDPODS_PLANS_FILE: the plan catalogue {path} cannot be read',
     True),
    ('CLOUDPODS_DB_POOL_MAX', 'many', "CLOUDPODS_DB_POOL_MAX must be an integer, got 'many'", True),
    ('CLOUDPODS_DB_POOL_MAX', 'many', "CLOUDPODS_DB_POOL_MAX must be an integer, got 'many'", False),
], ids=['plans-file', 'pool-max', 'pool-max-without-conf'])
def test_malformed_setting_stops_a_real_gunicorn(lab_env, tmp_path, setting, value, message, conf):
    """As deployed (``-c python:runner_api.gunicorn_conf``, deploy/systemd/cloudpods-api.service): exit 2,
    the message once, no traceback, nothing bound. Without the config: every worker fails to boot and
    gunicorn stops (with gunicorn's traceback)."""
    env = worker_environment(lab_env, lab_env['DATABASE_URL'])
    if setting == 'CLOUDPODS_PLANS_FILE':
        path = tmp_path / 'plans.yml'
        path.write_text(value)
        value = str(path)
        message = message.format(path=path)
    env[setting] = value
    port = free_port()
    log = tmp_path / 'gunicorn.log'
    argv = [GUNICORN] + (['-c', 'python:runner_api.gunicorn_conf'] if conf else []) + [
        '-b', '127.0.0.1:%d' % port, '-w', '2', 'runner_api.app:create_app()']
    with open(str(log), 'wb') as out:
        api = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    answers = []
    deadline = time.monotonic() + 60
    try:
        while api.poll() is None and time.monotonic() < deadline:
            try:
                answers.append(requests.get('http://127.0.0.1:%d/healthz' % port, timeout=0.5).status_code)
            except requests.RequestException:
                time.sleep(0.1)
    finally:
        if api.poll() is None:
            api.kill()
        api.wait()
    output = log.read_text()
    assert answers == []  # never served a request
    assert message in output, output
    if conf:
        assert api.returncode == 2, output
        assert output.count(message) == 1 and 'Traceback' not in output, output
        assert 'Listening at' not in output and 'Booting worker' not in output, output
    else:
        # It stopped by itself (not killed at the deadline): 3, or 1 when gunicorn trips over its own
        # HaltServer while two workers fail at once.
        assert api.returncode in (1, 3), output
        assert 'Worker failed to boot.' in output, output
