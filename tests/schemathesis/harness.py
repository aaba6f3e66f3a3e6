# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The live API that tools/schemathesis tests, and the checks of what it left in the database.

    harness.py up WORKDIR     scratch database in the lab's PostgreSQL (WORKDIR/database), one
                              token per role (WORKDIR/token.<role>, mode 0600, never printed), a
                              free 127.0.0.1 port (WORKDIR/port)
    harness.py serve WORKDIR  exec gunicorn with runner_api on that port and database
    harness.py ready WORKDIR  wait until it answers /healthz
    harness.py seed WORKDIR   order one pod per token through the API (WORKDIR/seeds.json), make the
                              admin's ACTIVE as a worker would, and write each run's Schemathesis
                              config (WORKDIR/<role>.toml: schemathesis.toml + those pod ids, drawn
                              for the `id` path parameter half of the time, so GET /{id} and the
                              restart reach real pods instead of 404 only)
    harness.py check WORKDIR  every row in the scratch database against the answers Schemathesis
                              saw (WORKDIR/<role>.cassette.yaml) and against the API's own rules
                              (SSH keys included: each passes the key rule, stored normalised)
    harness.py down WORKDIR   drop the scratch database (safe to call twice)

The database URL (it holds the lab's password) and the tokens only ever go to files in WORKDIR
and to the environment of the processes that need them.
"""

import json
import os
import re
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for _path in (ROOT, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import psycopg  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from runner_api.app import load_openapi  # noqa: E402
from runner_api import keys  # noqa: E402
from runner_api.auth import new_token  # noqa: E402
from runner_api.blueprints.customer import normalise_domain  # noqa: E402
from runner_api.plans import PlanCatalogue  # noqa: E402
from runner_api.repository import Repository, migrate, open_pool  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import with_database, worker_environment  # noqa: E402
from labenv import free_port, read_env as read_lab_env  # noqa: E402

DB_PREFIX = 'cloudpods_st'
# customer_id of the customer token, the X-Customer-Id the service token's run sends (tools/schemathesis
# reads it from WORKDIR/service.customer), and the customer the admin's seed pod is ordered for.
CUSTOMER_ID = 'st-customer'
SERVICE_CUSTOMER_ID = 'st-service-customer'
ADMIN_SEED_CUSTOMER_ID = 'st-admin-seed'
ROLES = (('customer', CUSTOMER_ID), ('service', None), ('admin', None))
EXPECTED_CUSTOMER = {'customer': CUSTOMER_ID, 'service': SERVICE_CUSTOMER_ID, 'admin-seed': ADMIN_SEED_CUSTOMER_ID}
CONFIG_TEMPLATE = os.path.join(ROOT, 'tests', 'schemathesis', 'schemathesis.toml')
SETTINGS_FILE = os.path.join(ROOT, 'playbooks', 'vars', 'settings.yml')
HOSTNAME = re.compile(r'^cp-[0-9a-f]{10}$')


def _path(workdir, name):
    return os.path.join(workdir, name)


def _write_private(path, text):
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, 'w') as handle:
        handle.write(text)


def _read(path, default=None):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return default


def _base_url():
    return read_lab_env()['DATABASE_URL']


def up(workdir):
    """Scratch database (migrated), one token per role, a free port; gunicorn is started by `serve`."""
    base_url = _base_url()
    name = '%s_%s' % (DB_PREFIX, secrets.token_hex(4))
    # Recorded before it exists, so `down` drops it even when a later step fails.
    _write_private(_path(workdir, 'database'), name)
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute('CREATE DATABASE "%s"' % name)  # our own name: letters, digits, underscore
    url = with_database(base_url, name)
    migrate(url)
    with open_pool(Settings.from_env({'DATABASE_URL': url}), name='schemathesis-setup', min_size=1,
                   max_size=1) as pool:
        repository = Repository(pool)
        for role, customer in ROLES:
            token = new_token()
            repository.create_token('schemathesis-' + role, role, customer, token)
            _write_private(_path(workdir, 'token.' + role), token)
    _write_private(_path(workdir, 'service.customer'), SERVICE_CUSTOMER_ID)
    _write_private(_path(workdir, 'port'), str(free_port()))
    print('scratch database %s, tokens for %s' % (name, ', '.join(role for role, _customer in ROLES)))
    return 0


def serve(workdir):
    """Become gunicorn (exec: same pid, so the caller can stop and wait for it) serving the scratch database."""
    lab_env = read_lab_env()
    env = worker_environment(lab_env, with_database(lab_env['DATABASE_URL'], _read(_path(workdir, 'database'))))
    gunicorn = os.path.join(os.path.dirname(sys.executable), 'gunicorn')
    os.chdir(ROOT)
    os.execve(gunicorn, [gunicorn, '-b', '127.0.0.1:' + _read(_path(workdir, 'port')), '-w', '2',
                         '--graceful-timeout', '5', 'runner_api.app:create_app()'], env)


def ready(workdir, timeout=30):
    """Wait until the API answers /healthz."""
    url = 'http://127.0.0.1:%s/healthz' % _read(_path(workdir, 'port'))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return 0
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    print('%s did not answer within %ss' % (url, timeout), file=sys.stderr)
    return 1


def _api(workdir, method, path, role, body=None, customer=None):
    headers = {'Authorization': 'Bearer ' + _read(_path(workdir, 'token.' + role))}
    if customer:
        headers['X-Customer-Id'] = customer
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers['Content-Type'] = 'application/json'
    request = urllib.request.Request('http://127.0.0.1:%s/api/cloud-pods%s' % (_read(_path(workdir, 'port')), path),
                                     data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def seed(workdir):
    """One pod per token, ordered through the API; the admin's made ACTIVE (as if a worker had run)."""
    seeds = {}
    orders = (('customer', None, 'CLOUD_POD_STUDENT'), ('service', SERVICE_CUSTOMER_ID, 'CLOUD_POD_STARTER'),
              ('admin', ADMIN_SEED_CUSTOMER_ID, 'CLOUD_POD_BUSINESS'))
    for role, customer, plan in orders:
        status, body = _api(workdir, 'POST', '/order', role, customer=customer,
                            body={'plan_code': plan, 'customer_email': 'seed-%s@example.org' % role})
        if status != 202:
            raise SystemExit('seed order with the %s token: %s %s' % (role, status, body))
        seeds[body['id']] = 'admin-seed' if role == 'admin' else role
    active = [pod for pod, role in seeds.items() if role == 'admin-seed']
    url = with_database(_base_url(), _read(_path(workdir, 'database')))
    with psycopg.connect(url) as connection:
        connection.execute("""UPDATE cloud_pod_subscriptions SET status = 'ACTIVE', vmid = 4242, node = 'lab',
                              ip = '192.0.2.42', activated_at = now() WHERE id = ANY(%s::uuid[])""", (active,))
        connection.execute("""UPDATE cloud_pod_provisioning_tasks SET status = 'COMPLETED', attempts = 1,
                              started_at = now(), finished_at = now() WHERE subscription_id = ANY(%s::uuid[])""",
                           (active,))
    _write_private(_path(workdir, 'seeds.json'), json.dumps({'pods': seeds, 'active': active}))
    with open(CONFIG_TEMPLATE) as handle:
        template = handle.read()
    for role, _customer in ROLES:
        # The run's own pod first (Hypothesis draws the first entry most): a 200 for GET /{id}, a 202
        # for the admin's restart of the ACTIVE pod; the others answer 404 (another customer's) or 409.
        own = 'admin-seed' if role == 'admin' else role
        ids = sorted(seeds, key=lambda pod: seeds[pod] != own)
        _write_private(_path(workdir, role + '.toml'), template + _pod_dictionary(ids))
    print('seeded pods: %s' % ', '.join('%s (%s)' % (pod, role) for pod, role in seeds.items()))
    return 0


def _pod_dictionary(ids):
    values = ', '.join(json.dumps(pod) for pod in ids)
    return ('\n# Written by tests/schemathesis/harness.py seed: the pods it ordered, as the `id` of\n'
            '# GET /{id} and POST /admin/{id}/restart half of the time (random ids the other half).\n'
            '[dictionaries.pods]\nvalues = [%s]\n\n[parameters]\n'
            '"path.id" = { dictionary = "pods", probability = 0.5 }\n' % values)


def down(workdir):
    """Drop the scratch database (gunicorn is stopped by the caller, which started it)."""
    name = _read(_path(workdir, 'database'))
    if name:
        if not re.match(r'^%s_[0-9a-f]{8}$' % DB_PREFIX, name):
            raise SystemExit('refusing to drop %r: not a scratch database of this tool' % name)
        with psycopg.connect(_base_url(), autocommit=True) as admin:
            admin.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
        os.unlink(_path(workdir, 'database'))
        print('dropped scratch database %s' % name)
    return 0


# ---------------------------------------------------------------- check

# The operations queued on an existing pod (202 with the task): the admin restart and the lifecycle
# (runner_api/blueprints/lifecycle.py). A retry is never 202 here: no pod ever FAILED without a worker.
OPERATION_PATHS = ('/restart', '/suspend', '/resume', '/terminate', '/repair', '/retry', '/change-plan', '/backups',
                   '/restore', '/reinstall')
OPERATION_TYPES = ('RESTART', 'SET_SSH_KEYS', 'SUSPEND', 'RESUME', 'TERMINATE', 'REPAIR', 'CHANGE_PLAN', 'BACKUP',
                   'RESTORE', 'REINSTALL')


def answered(workdir):
    """What the API answered, from the cassettes (WORKDIR/<role>.cassette.yaml): {pod id: role} of
    every POST /order answered 200 or 202, and the pod id of every operation (restart, suspend, ...) answered 202."""
    orders, restarts, key_sets, cassettes = {}, [], [], 0
    for name in sorted(os.listdir(workdir)):
        if not name.endswith('.cassette.yaml'):
            continue
        cassettes += 1
        role = name.split('.', 1)[0]
        with open(_path(workdir, name)) as handle:
            cassette = yaml.load(handle, Loader=getattr(yaml, 'CSafeLoader', yaml.SafeLoader))
        for interaction in cassette.get('http_interactions') or []:
            request, response = interaction['request'], interaction.get('response')
            if response is None or request['method'] not in ('POST', 'PUT'):
                continue
            path = request['uri'].split('?')[0]
            code = response['status']['code']
            if request['method'] == 'PUT':
                if path.endswith('/ssh-keys') and code == '202':
                    key_sets.append(json.loads(response['body']['string'])['pod_id'])
            elif path.endswith('/order') and code in ('200', '202'):
                orders[json.loads(response['body']['string'])['id']] = role
            elif path.endswith(OPERATION_PATHS) and code == '202':
                restarts.append(json.loads(response['body']['string'])['pod_id'])
    if not cassettes:
        raise SystemExit('no cassette in %s: did Schemathesis run?' % workdir)
    return orders, restarts, key_sets


def playbook_patterns():
    """The order grammar the playbooks enforce (playbooks/vars/settings.yml), where it is defined."""
    with open(SETTINGS_FILE) as handle:
        data = yaml.safe_load(handle) or {}
    return {name: re.compile(data['cloudpods_%s_pattern' % name]) for name in ('hostname', 'domain', 'email')
            if isinstance(data.get('cloudpods_%s_pattern' % name), str)}


def key_problems(lines):
    """What is wrong with stored key lines: each must pass the key rule and be stored normalised."""
    checked, errors = keys.check(lines)
    if errors:
        return errors
    return [] if checked == lines else ['not stored normalised']


def violations(rows, tasks, orders, restarts, active, rules, key_sets=()):  # pylint: disable=too-many-arguments
    """What is wrong with the rows the run left behind; an empty list when nothing is.

    ``orders`` {pod id: who ordered it}, ``restarts`` pod ids of restarts answered 202, ``active``
    the seed pods made ACTIVE, ``rules`` plan_codes, email (the OpenAPI pattern) and the
    playbook patterns."""
    problems = []
    tasks_of = {}
    for task in tasks:
        tasks_of.setdefault(str(task['subscription_id']), []).append(task)
    for row in rows:
        pod = str(row['id'])
        where = 'subscription %s' % pod
        if pod not in orders:
            problems.append('%s: stored, but no POST /order was answered 200/202 with its id' % where)
        if row['plan_code'] not in rules['plan_codes']:
            problems.append('%s: plan_code %r is not in the catalogue' % (where, row['plan_code']))
        email = row['customer_email']
        if not rules['email'].search(email) or not 3 <= len(email) <= 254 or \
                ('email' in rules['playbook'] and not rules['playbook']['email'].match(email)):
            problems.append('%s: customer_email %r is not one the API accepts' % (where, email))
        domain = row['domain']
        if domain is not None and (normalise_domain(domain) != domain or (
                'domain' in rules['playbook'] and not rules['playbook']['domain'].match(domain))):
            problems.append('%s: domain %r is not a normalised domain name' % (where, domain))
        customer = row['customer_id']
        if not customer or not re.match(r'^[\x21-\x7e]{1,128}\Z', customer):
            problems.append('%s: customer_id %r is not a valid X-Customer-Id' % (where, customer))
        # The customer token orders for its own customer whatever X-Customer-Id says; the service
        # token's run always names SERVICE_CUSTOMER_ID. (The admin run's header is generated.)
        expected = EXPECTED_CUSTOMER.get(orders.get(pod))
        if expected and customer != expected:
            problems.append('%s: ordered by the %s token for %r, stored for %r'
                            % (where, orders[pod], expected, customer))
        if not HOSTNAME.match(row['hostname']) or (
                'hostname' in rules['playbook'] and not rules['playbook']['hostname'].match(row['hostname'])):
            problems.append('%s: hostname %r is not cp-<10 hex>' % (where, row['hostname']))
        own = tasks_of.get(pod, [])
        creates = [t for t in own if t['task_type'] == 'CREATE_CONTAINER']
        if len(creates) != 1:
            problems.append('%s: %d CREATE_CONTAINER tasks, expected 1' % (where, len(creates)))
        # No worker runs: nothing but the seed made ACTIVE may have moved on; a restart is queued
        # (once: one open task per pod) only on an ACTIVE pod and only when answered 202.
        expected_status, expected_create = ('ACTIVE', 'COMPLETED') if pod in active else ('PROVISIONING', 'PENDING')
        if row['status'] != expected_status:
            problems.append('%s: status %s, expected %s (no worker runs)' % (where, row['status'], expected_status))
        if any(t['status'] != expected_create for t in creates):
            problems.append('%s: CREATE_CONTAINER task is not %s' % (where, expected_create))
        # A restart or a key change is queued (once: one open task per pod) only on an ACTIVE pod
        # and only when answered 202.
        others = [t for t in own if t['task_type'] != 'CREATE_CONTAINER']
        expected_others = restarts.count(pod) + list(key_sets).count(pod)
        if len(others) != expected_others or any(t['task_type'] not in OPERATION_TYPES or
                                                 t['status'] != 'PENDING' for t in others) or \
                sum(1 for t in others if t['task_type'] == 'SET_SSH_KEYS') != list(key_sets).count(pod):
            problems.append('%s: %d other tasks (%s), but %d restarts and %d key changes answered 202' % (
                where, len(others), ', '.join('%s %s' % (t['task_type'], t['status']) for t in others),
                restarts.count(pod), list(key_sets).count(pod)))
        for problem in key_problems(row.get('ssh_public_keys', [])):
            problems.append('%s: stored SSH keys the API refuses: %s' % (where, problem))
    known = {str(row['id']) for row in rows}
    for pod in sorted(set(orders) - known):
        problems.append('pod %s: answered 200/202 but not stored' % pod)
    return problems


def check(workdir):
    orders, restarts, key_sets = answered(workdir)
    seeds = json.loads(_read(_path(workdir, 'seeds.json')))
    orders.update(seeds['pods'])
    url = with_database(_base_url(), _read(_path(workdir, 'database')))
    with psycopg.connect(url, row_factory=dict_row) as connection:
        rows = connection.execute('SELECT * FROM cloud_pod_subscriptions').fetchall()
        tasks = connection.execute('SELECT * FROM cloud_pod_provisioning_tasks').fetchall()
        events = connection.execute('SELECT count(*) AS n FROM cloud_pod_events').fetchone()['n']
    document = load_openapi()
    rules = {'plan_codes': set(PlanCatalogue(Path(Settings.from_env({'DATABASE_URL': url}).plans_file)).plans()),
             'email': re.compile(document['components']['schemas']['OrderRequest']['properties']['customer_email']
                                 ['pattern']),
             'playbook': playbook_patterns()}
    problems = violations(rows, tasks, orders, restarts, set(seeds['active']), rules, key_sets)
    if events:
        problems.append('%d events written without a worker' % events)
    print('rows: %d subscriptions, %d tasks; %d orders answered 200/202 (%d seeded), %d restarts and %d key '
          'changes answered 202' % (len(rows), len(tasks), len(orders), len(seeds['pods']), len(restarts),
                                    len(key_sets)))
    for problem in problems:
        print('  ' + problem)
    return 1 if problems else 0


def main(argv):
    commands = {'up': up, 'serve': serve, 'ready': ready, 'seed': seed, 'check': check, 'down': down}
    if len(argv) != 3 or argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[1]](argv[2])


if __name__ == '__main__':
    sys.exit(main(sys.argv))
