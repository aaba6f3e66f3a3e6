# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Start-up checks and configuration errors (issue 18, part A), with real processes against the lab's PostgreSQL.

- ``cloudpods worker`` refuses to start when the site settings file (CLOUDPODS_EXTRA_VARS_FILE), the
  inventory (CLOUDPODS_INVENTORY), its Proxmox host group or the installed collection is wrong: one line
  naming the setting and the file, exit 2, no traceback, and the queued order is not claimed.
- A configuration error met by a run (the site file gone, an undefined site setting, a playbook Ansible
  refuses) fails the task at once, named, instead of five retries.
- ``cloudpods token``/``migrate`` against a database that does not answer end with one line (no password)
  after the configured connect timeout; ``token`` and the worker against one without the migrations say
  to migrate; ``token create`` shows the id, ``token list`` a header.
- ``cloudpods provision --dry-run`` refuses the same wrong files, and shows why a run failed; it takes the
  playbooks' hint ``-e NAME=VALUE`` (a site setting for the dry run) and ``--inventory``.
"""

import json
import os
import socket
import subprocess
import sys
import uuid

import psycopg
import psycopg.conninfo
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from runner_api.executors import LocalAnsibleRunner, RunRequest  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import scratch_database, with_database, worker_environment  # noqa: E402
from test_runner_api_worker import Queue, stub_site  # noqa: E402

BIN = os.path.dirname(os.path.abspath(sys.executable))
CLOUDPODS = os.path.join(BIN, 'cloudpods')
PROCESS_TIMEOUT = 120  # generous: a bound on a hung process, never a measurement


def cloudpods(env, *argv):
    return subprocess.run([CLOUDPODS] + list(argv), env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=PROCESS_TIMEOUT, check=False, stdin=subprocess.DEVNULL)


def refused(result, *named):
    """The process refused: exit 2, every name in one line of stderr, no traceback, never ready."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert 'Traceback' not in output and 'ready' not in output, output
    lines = [line for line in result.stderr.splitlines() if all(name in line for name in named)]
    assert lines, 'no line naming %s in:\n%s' % (named, result.stderr)
    return lines[0]


# ---------------------------------------------------------------- the files a worker starts with

def _missing(tmp_path):
    return {'CLOUDPODS_EXTRA_VARS_FILE': str(tmp_path / 'no-such-site.yml')}, str(tmp_path / 'no-such-site.yml')


def _not_yaml(tmp_path):
    path = tmp_path / 'site.yml'
    path.write_text('cloudpods_proxmox_hosts: [localhost\n')
    return {'CLOUDPODS_EXTRA_VARS_FILE': str(path)}, str(path)


def _not_a_mapping(tmp_path):
    path = tmp_path / 'site.json'
    path.write_text('["cloudpods_proxmox_hosts", "localhost"]')
    return {'CLOUDPODS_EXTRA_VARS_FILE': str(path)}, str(path)


def _unreadable(tmp_path):
    path = stub_site(tmp_path / 'site.json')
    path.chmod(0)
    if os.access(str(path), os.R_OK):  # root reads anything: a directory in its place is unreadable as a file
        path.unlink()
        path.mkdir()
    return {'CLOUDPODS_EXTRA_VARS_FILE': str(path)}, str(path)


def _no_inventory(tmp_path):
    return ({'CLOUDPODS_EXTRA_VARS_FILE': str(stub_site(tmp_path / 'site.json')),
             'CLOUDPODS_INVENTORY': str(tmp_path / 'no-such-inventory')}, str(tmp_path / 'no-such-inventory'))


def _group_not_in_inventory(tmp_path):
    inventory = tmp_path / 'inventory'
    inventory.write_text('[pve_nodes]\nlocalhost ansible_connection=local\n')
    site = tmp_path / 'site.json'
    site.write_text(json.dumps({'cloudpods_backup_root': str(tmp_path)}))  # no host group: proxmox_hosts
    return {'CLOUDPODS_EXTRA_VARS_FILE': str(site), 'CLOUDPODS_INVENTORY': str(inventory)}, str(inventory)


def _group_without_inventory(tmp_path):
    site = tmp_path / 'site.json'
    site.write_text(json.dumps({'cloudpods_proxmox_hosts': 'pve_nodes'}))
    return {'CLOUDPODS_EXTRA_VARS_FILE': str(site)}, str(site)


def _no_collection(tmp_path):
    return ({'CLOUDPODS_EXTRA_VARS_FILE': str(stub_site(tmp_path / 'site.json')),
             'ANSIBLE_COLLECTIONS_PATH': str(tmp_path / 'collections')}, str(tmp_path / 'collections'))


def _old_collection(tmp_path):
    """A copy of the collection with only some of the playbooks (an older release, say)."""
    playbooks = tmp_path / 'collections' / 'ansible_collections' / 'mpanel' / 'cloudpods' / 'playbooks'
    playbooks.mkdir(parents=True)
    (playbooks / 'provision.yml').write_text('---\n')
    return ({'CLOUDPODS_EXTRA_VARS_FILE': str(stub_site(tmp_path / 'site.json')),
             'ANSIBLE_COLLECTIONS_PATH': str(tmp_path / 'collections')}, 'playbooks/deprovision.yml')


def _run_dir_under_a_file(tmp_path):
    (tmp_path / 'a-file').write_text('')
    return ({'CLOUDPODS_EXTRA_VARS_FILE': str(stub_site(tmp_path / 'site.json')),
             'CLOUDPODS_RUN_DIR': str(tmp_path / 'a-file' / 'runs')}, str(tmp_path / 'a-file' / 'runs'))


WRONG_FILES = [
    ('missing', _missing, 'CLOUDPODS_EXTRA_VARS_FILE', 'does not exist'),
    ('not-yaml', _not_yaml, 'CLOUDPODS_EXTRA_VARS_FILE', 'is not valid YAML or JSON at line'),
    ('not-a-mapping', _not_a_mapping, 'CLOUDPODS_EXTRA_VARS_FILE', 'must hold a mapping'),
    ('unreadable', _unreadable, 'CLOUDPODS_EXTRA_VARS_FILE', ''),
    ('no-inventory', _no_inventory, 'CLOUDPODS_INVENTORY', 'does not exist'),
    ('group-not-in-inventory', _group_not_in_inventory, 'CLOUDPODS_INVENTORY', "'proxmox_hosts'"),
    ('group-without-inventory', _group_without_inventory, 'cloudpods_proxmox_hosts', "'pve_nodes'"),
    ('no-collection', _no_collection, 'ANSIBLE_COLLECTIONS_PATH', 'mpanel.cloudpods collection is not installed'),
    ('old-collection', _old_collection, 'ANSIBLE_COLLECTIONS_PATH', 'has no'),
    ('run-dir-under-a-file', _run_dir_under_a_file, 'CLOUDPODS_RUN_DIR', 'cannot be made'),
]


@pytest.fixture(scope='module')
def database(lab_env):
    with scratch_database(lab_env['DATABASE_URL']) as url:
        yield url


@pytest.mark.parametrize('case, setting, words', [case[1:] for case in WRONG_FILES], ids=[case[0] for case in WRONG_FILES])
def test_worker_refuses_to_start_naming_the_setting_and_the_file(lab_env, database, tmp_path, case, setting, words):
    overrides, path = case(tmp_path)
    queue = Queue(database, worker_environment(lab_env, database), tmp_path)
    try:
        pod = queue.order()
        env = worker_environment(lab_env, database, poll_seconds=1)
        env.pop('CLOUDPODS_INVENTORY', None)
        env.update(overrides)
        result = cloudpods(env, 'worker', '--worker-id', 'refused')
        task = queue.rows('SELECT status, attempts, worker_id FROM cloud_pod_provisioning_tasks '
                          'WHERE subscription_id = %s', (pod['id'],))[0]
        events = queue.rows('SELECT count(*) AS n FROM cloud_pod_events WHERE task_id IN '
                            '(SELECT id FROM cloud_pod_provisioning_tasks WHERE subscription_id = %s)', (pod['id'],))
    finally:
        queue.stop_all()
    line = refused(result, setting, path, words)
    assert lab_env['PROXMOX_API_TOKEN_SECRET'] not in result.stderr
    assert (task['status'], task['attempts'], task['worker_id'], events[0]['n']) == ('PENDING', 0, None, 0), line


def test_an_inventory_ansible_cannot_read_is_named_and_its_content_never_shown(lab_env, tmp_path):
    """Ansible's warnings quote the line it could not parse; a password on that line stays out of the message."""
    password = 'inv-pw-%s' % uuid.uuid4().hex
    inventory = tmp_path / 'inventory'
    inventory.write_text('[proxmox_hosts]\npve ansible_password="%s\n' % password)
    env = worker_environment(lab_env, 'postgresql://unused:unused@127.0.0.1:1/unused', extra_vars_file=stub_site(
        tmp_path / 'site.json', cloudpods_proxmox_hosts='proxmox_hosts'), inventory=inventory)
    result = cloudpods(env, 'worker', '--worker-id', 'unparsed')
    line = refused(result, 'CLOUDPODS_INVENTORY', str(inventory), 'Ansible cannot read')
    assert '[ERROR]: No inventory was parsed' in line, line
    assert password not in result.stdout + result.stderr


def test_worker_with_an_inventory_that_has_the_group_starts(lab_env, tmp_path):
    """The other side of the refusals: the group in the inventory, no host group in the site file."""
    inventory = tmp_path / 'inventory'
    inventory.write_text('[proxmox_hosts]\nlocalhost ansible_connection=local\n')
    site = tmp_path / 'site.yml'
    site.write_text('cloudpods_backup_root: !unsafe "/srv/backup"\n')  # Ansible's tags are accepted
    with scratch_database(lab_env['DATABASE_URL']) as url:  # an empty queue: --once ends after one look
        env = worker_environment(lab_env, url, extra_vars_file=site, inventory=inventory)
        result = cloudpods(env, 'worker', '--worker-id', 'grouped', '--once')
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'worker grouped ready' in result.stderr, result.stderr


# ---------------------------------------------------------------- configuration errors met by a run

@pytest.fixture
def stub_runner(tmp_path, monkeypatch):
    """A LocalAnsibleRunner on stub playbooks, the site file set as the worker has it."""
    playbooks = tmp_path / 'playbooks'
    playbooks.mkdir()
    site = stub_site(tmp_path / 'site.json')
    monkeypatch.setenv('CLOUDPODS_EXTRA_VARS_FILE', str(site))
    monkeypatch.delenv('CLOUDPODS_INVENTORY', raising=False)
    settings = Settings(database_url='postgresql://unused@127.0.0.1/unused', plans_file=tmp_path / 'unused',
                        playbook_dir=playbooks, run_dir=tmp_path / 'runs',
                        playbook_env={'PROXMOX_API_TOKEN_SECRET': 'stub-secret-%s' % uuid.uuid4().hex})
    return LocalAnsibleRunner(settings), playbooks, site


def _play(tasks):
    return '- name: Stub\n  hosts: localhost\n  gather_facts: false\n  tasks:\n' + tasks


@pytest.mark.parametrize('playbook, words', [
    (_play("    - name: Use a site setting\n      ansible.builtin.debug:\n        msg: '{{ cloudpods_required_setting }}'\n"),
     ['cloudpods_required_setting', 'CLOUDPODS_EXTRA_VARS_FILE']),
    (_play('    - name: Call a role nobody installed\n      ansible.builtin.include_role:\n'
           '        name: mpanel.cloudpods.no_such_role\n'), ['no_such_role']),
    ('- name: Stub\n  hosts: localhost\n  roles: [mpanel.cloudpods.no_such_role]\n', ['[ERROR]', 'no_such_role']),
], ids=['undefined-site-setting', 'role-not-found-in-a-task', 'role-not-found-before-the-first-task'])
def test_a_configuration_error_in_a_run_is_not_retried(stub_runner, playbook, words):
    runner, playbooks, dummy = stub_runner
    (playbooks / 'provision.yml').write_text(playbook)
    result = runner.run(RunRequest('CREATE_CONTAINER', {'pod': 'cp-preflight'}), lambda event: None)
    assert result.status in ('failed', 'error') and result.retryable is False, result
    assert all(word in result.error for word in words), result.error


def test_a_failing_task_is_still_retried(stub_runner):
    """The other side: a task that fails for a reason of the moment stays retryable."""
    runner, playbooks, dummy = stub_runner
    (playbooks / 'provision.yml').write_text(_play('    - name: Fail like a busy server\n      ansible.builtin.command: '
                                                   '"false"\n      changed_when: false\n'))
    result = runner.run(RunRequest('CREATE_CONTAINER', {'pod': 'cp-preflight'}), lambda event: None)
    assert result.status == 'failed' and result.retryable is True, result


def test_site_file_removed_while_the_worker_runs_fails_the_task_at_once(lab_env, tmp_path):
    playbooks = tmp_path / 'playbooks'
    playbooks.mkdir()
    (playbooks / 'provision.yml').write_text(_play('    - name: Nothing\n      ansible.builtin.meta: noop\n'))
    site = stub_site(tmp_path / 'site.json')
    with scratch_database(lab_env['DATABASE_URL']) as url:
        env = worker_environment(lab_env, url, playbook_dir=playbooks, extra_vars_file=site, poll_seconds=1,
                                 retry_base_seconds=0.2, lease_seconds=120)
        env.pop('CLOUDPODS_INVENTORY', None)
        queue = Queue(url, env, tmp_path)
        try:
            queue.start('w')
            queue.wait(lambda: 'worker w ready' in queue.log('w'), 120, 'the worker to be ready')
            site.unlink()
            pod = queue.order(max_attempts=5)
            queue.wait_all('FAILED', timeout=120)
            row = queue.subscriptions()[str(pod['id'])]
            task = queue.rows('SELECT status, attempts FROM cloud_pod_provisioning_tasks')[0]
        finally:
            queue.stop_all()
    assert 'CLOUDPODS_EXTRA_VARS_FILE' in row['last_error'] and str(site) in row['last_error'], row
    assert (task['status'], task['attempts']) == ('FAILED', 1)
    assert 'Traceback' not in queue.all_logs()


# ---------------------------------------------------------------- a database that does not answer

@pytest.fixture
def silent_server():
    """A loopback port that accepts TCP connections and never says a word: only a connect timeout ends a wait."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(('127.0.0.1', 0))
    server.listen(64)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def _closed_port():
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(('127.0.0.1', 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


@pytest.mark.parametrize('argv', [['token', 'list'], ['token', 'create', '--name', 'x', '--role', 'admin'], ['migrate']],
                         ids=['token-list', 'token-create', 'migrate'])
@pytest.mark.parametrize('server', ['silent', 'closed'])
def test_database_that_does_not_answer_ends_with_one_line(lab_env, silent_server, argv, server):
    password = 'pw-%s' % uuid.uuid4().hex
    port = silent_server if server == 'silent' else _closed_port()
    env = worker_environment(lab_env, 'postgresql://cloudpods:%s@127.0.0.1:%d/cloudpods' % (password, port),
                             db_timeout_seconds=3)
    # Without the connect timeout a silent server holds libpq forever: returning at all (well within the
    # generous process timeout) proves the configured one is used; the message names it.
    result = cloudpods(env, *argv)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert 'Traceback' not in output and password not in output, output
    [line] = result.stderr.splitlines()
    assert line.startswith('cloudpods: cannot reach the database (DATABASE_URL postgresql://cloudpods:********@127.0.0.1:%d'
                           % port), line
    assert 'waited at most 3 s: CLOUDPODS_DB_TIMEOUT_SECONDS' in line, line
    assert ('timeout' if server == 'silent' else 'refused') in line.lower(), line


def test_token_create_shows_the_id_and_list_has_a_header(lab_env, database):
    env = worker_environment(lab_env, database)
    created = cloudpods(env, 'token', 'create', '--name', 'header-test', '--role', 'customer', '--customer', 'cust-9')
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert len(token) >= 32 and '\n' not in token  # stdout: the value alone (TOKEN=$(cloudpods token create ...))
    [said] = created.stderr.splitlines()
    assert said.startswith('created token ') and token not in said, said
    token_id = said.split()[2]
    assert said == 'created token %s (header-test, customer, customer cust-9, expires never); its value, shown once:' % token_id
    listing = cloudpods(env, 'token', 'list')
    lines = listing.stdout.splitlines()
    assert lines[0].split('\t') == ['ID', 'ROLE', 'CUSTOMER', 'STATE', 'EXPIRES', 'NAME'], listing.stdout
    assert [token_id, 'customer', 'cust-9', 'active', 'never', 'header-test'] in [line.split('\t') for line in lines[1:]]
    assert token not in listing.stdout


# ---------------------------------------------------------------- cloudpods provision --dry-run

@pytest.mark.parametrize('case, setting, words', [WRONG_FILES[0][1:], WRONG_FILES[6][1:], WRONG_FILES[7][1:],
                                                  WRONG_FILES[9][1:]],
                         ids=['missing', 'group-without-inventory', 'no-collection', 'run-dir-under-a-file'])
def test_dry_run_refuses_naming_the_setting_and_the_file(lab_env, tmp_path, case, setting, words):
    overrides, path = case(tmp_path)
    env = worker_environment(lab_env, lab_env['DATABASE_URL'])
    env.pop('CLOUDPODS_INVENTORY', None)
    env.update(overrides)
    result = cloudpods(env, 'provision', 'CLOUD_POD_STARTER', '--pod', 'dry-preflight', '--dry-run')
    refused(result, setting, path, words)
    assert 'dry run' not in result.stdout  # refused before any run


def test_dry_run_failure_shows_why(lab_env, tmp_path):
    """The host group given with -e (it wins over the site file's localhost) as a template, which only the
    playbook evaluates (as data: !unsafe): its check fails pointing to an inventory, and the command shows
    that error."""
    env = worker_environment(lab_env, lab_env['DATABASE_URL'], extra_vars_file=stub_site(tmp_path / 'site.json'))
    env.pop('CLOUDPODS_INVENTORY', None)
    result = cloudpods(env, 'provision', 'CLOUD_POD_STARTER', '--pod', 'dry-preflight', '--dry-run',
                       '-e', "cloudpods_proxmox_hosts={{ 'no_such_group' }}")
    output = result.stdout + result.stderr
    assert result.returncode == 1 and 'Traceback' not in output, output
    assert 'dry run failed' in result.stdout, output
    [failed] = [line for line in result.stderr.splitlines() if line.startswith('cloudpods: Step ')]
    assert failed.startswith("cloudpods: Step 'Check that the Proxmox host group has a host (cloudpods_proxmox_hosts)' "
                             "failed: "), output
    assert 'no_such_group' in failed and 'inventory.example' in failed, failed
    assert lab_env['PROXMOX_API_TOKEN_SECRET'] not in output


def test_dry_run_failure_with_a_hint_says_the_command_takes_it(lab_env, tmp_path):
    """Outside the lab (no CLOUDPODS_LAB) without a company domain: the settings check fails with the
    playbook's hint "-e cloudpods_company_domain=...", and the command says it takes -e as it is."""
    env = worker_environment(lab_env, lab_env['DATABASE_URL'], extra_vars_file=stub_site(tmp_path / 'site.json'))
    env.pop('CLOUDPODS_INVENTORY', None)
    env.pop('CLOUDPODS_LAB', None)
    result = cloudpods(env, 'provision', 'CLOUD_POD_STARTER', '--pod', 'dry-preflight', '--dry-run')
    output = result.stdout + result.stderr
    assert result.returncode == 1 and 'Traceback' not in output, output
    [failed] = [line for line in result.stderr.splitlines() if line.startswith('cloudpods: Step ')]
    assert 'cloudpods_company_domain not set' in failed and '-e cloudpods_company_domain=' in failed, failed
    assert "a hint's -e NAME=VALUE can be given to cloudpods provision as it is" in result.stderr, output
    with_domain = cloudpods(env, 'provision', 'CLOUD_POD_STARTER', '--pod', 'dry-preflight', '--dry-run',
                            '-e', 'cloudpods_company_domain=hosting.example')
    assert with_domain.returncode == 0, with_domain.stdout + with_domain.stderr
    assert lab_env['PROXMOX_API_TOKEN_SECRET'] not in output


@pytest.mark.parametrize('argv, words', [
    (['-e', 'cloudpods_proxmox_hosts=no_such_group'], ["'no_such_group' (-e cloudpods_proxmox_hosts)", 'CLOUDPODS_INVENTORY']),
    (['-e', 'pod=other'], ["-e pod: the order's fields have options of their own"]),
    (['-e', 'no equals sign'], ['-e takes NAME=VALUE']),
    (['--inventory', 'no-such-inventory'], ['CLOUDPODS_INVENTORY: the inventory', 'no-such-inventory', 'does not exist']),
], ids=['group-from-e', 'order-field', 'not-an-assignment', 'inventory-option'])
def test_dry_run_options_are_checked_before_the_run(lab_env, tmp_path, argv, words):
    env = worker_environment(lab_env, lab_env['DATABASE_URL'], extra_vars_file=stub_site(tmp_path / 'site.json'))
    env.pop('CLOUDPODS_INVENTORY', None)
    result = cloudpods(env, 'provision', 'CLOUD_POD_STARTER', '--pod', 'dry-preflight', '--dry-run', *argv)
    refused(result, *words)
    assert 'dry run' not in result.stdout


def test_a_database_without_the_migrations_is_named_not_a_traceback(lab_env, tmp_path):
    """A new, empty database: token and worker say to migrate (nothing is written to it); migrate then works."""
    name = 'cloudpods_unmigrated_%s' % uuid.uuid4().hex[:8]
    with psycopg.connect(lab_env['DATABASE_URL'], autocommit=True) as admin:
        admin.execute('CREATE DATABASE "%s"' % name)
    url = with_database(lab_env['DATABASE_URL'], name)
    try:
        env = worker_environment(lab_env, url, extra_vars_file=stub_site(tmp_path / 'site.json'))
        env.pop('CLOUDPODS_INVENTORY', None)
        listed = cloudpods(env, 'token', 'list')
        worker = cloudpods(env, 'worker', '--worker-id', 'unmigrated')
        with psycopg.connect(url) as connection:
            tables = connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        migrated = cloudpods(env, 'migrate')
    finally:
        with psycopg.connect(lab_env['DATABASE_URL'], autocommit=True) as admin:
            admin.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
    password = psycopg.conninfo.conninfo_to_dict(url)['password']
    for result, rc in ((listed, 1), (worker, 2)):
        output = result.stdout + result.stderr
        assert result.returncode == rc and 'Traceback' not in output and password not in output, output
        [line] = result.stderr.splitlines()
        assert 'lacks the migrations 0001_cloud_pods.sql' in line and line.endswith('run cloudpods migrate first'), line
    assert tables == 0
    assert migrated.returncode == 0 and migrated.stdout.startswith('applied: 0001_cloud_pods.sql'), migrated.stderr
