# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The AWX executor's overhead per order, beside the local executor's.

    .venv/bin/python tests/bench/bench_awx_executor.py [--orders 20] [--poll 0.05]

``awx``: ``AwxExecutor.run`` against the AWX stand-in (tests/lab/awxsim, in this process on a free
loopback port): resolve the template (once), launch, follow the job's events and status until it
is final. A thread plays the job: it moves each new job to running, appends three events and
sets its artifacts, and moves it to successful at once, so the figure is the executor's own cost
(HTTP round trips and the poll interval ``--poll``, CLOUDPODS_AWX_POLL_SECONDS), not a playbook's.

``local``: ``LocalAnsibleRunner.run`` of a trivial playbook (one ``set_stats`` task) as
CREATE_CONTAINER: ansible-runner and ansible-playbook start-up, the private run directory, the
guard. Needs the collection linked (``source tools/lib.sh && link_collection``), as every local run.

Printed: p50, p90 and mean seconds per order for each. No lab needed. Not part of the test suite;
no assertion: an order that does not succeed is counted and printed.
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from awxsim import labcontrol  # noqa: E402
from awxsim.server import create_server  # noqa: E402
from labenv import free_port  # noqa: E402
from runner_api import operations  # noqa: E402
from runner_api.awx_executor import AwxExecutor  # noqa: E402
from runner_api.executors import LocalAnsibleRunner, RunRequest  # noqa: E402
from runner_api.settings import Settings, awx_template_name  # noqa: E402

TOKEN = 'bench-awx-token-5b2e'
CONTROL_KEY = 'bench-control-key'
TRIVIAL = """
- name: Trivial provision
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Report
      ansible.builtin.set_stats:
        data: {vmid: 1, node: stub, ip: 192.0.2.1}
        per_host: false
"""
EVENTS = [{'event': 'playbook_on_task_start', 'task': 'Report', 'event_data': {'task': 'Report', 'task_uuid': 'u1'}},
          {'event': 'runner_on_ok', 'task': 'Report', 'host_name': 'localhost',
           'event_data': {'task': 'Report', 'host': 'localhost', 'res': {'changed': False}}},
          {'event': 'playbook_on_stats', 'event_data': {}}]


def request():
    return RunRequest('CREATE_CONTAINER', {'pod': 'cp-bench', 'plan': 'CLOUD_POD_STARTER', 'domain': ''})


def summary(name, times, failed):
    if not times:
        print('%-6s no order succeeded (%d failed)' % (name, failed))
        return
    times = sorted(times)
    print('%-6s %3d orders  p50 %.3f s  p90 %.3f s  mean %.3f s  failed %d' % (
        name, len(times), times[len(times) // 2], times[min(len(times) - 1, int(0.9 * len(times)))],
        statistics.mean(times), failed))


def play_jobs(server, stop):
    """Every new job: running, three events, artifacts, successful; as soon as it is seen."""
    app = server.app
    done = set()
    while not stop.is_set():
        for job in list(app.jobs.by_id.values()):
            if job['id'] in done or job['status'] != 'pending':
                continue
            done.add(job['id'])
            app.jobs.set_status(job, 'running')
            labcontrol.append_events(app, job, EVENTS)
            labcontrol.set_artifacts(app, job, {'vmid': job['id'], 'node': 'stub', 'ip': '192.0.2.1'})
            app.jobs.set_status(job, 'successful')
        time.sleep(0.002)


def bench_awx(orders, poll):
    server = create_server({'listen_port': free_port(), 'control_key': CONTROL_KEY,
                            'users': [{'username': 'admin', 'password': 'x', 'is_superuser': True}],
                            'tokens': [{'token': TOKEN, 'user': 'admin', 'scope': 'write'}]})
    threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
    store = server.app.store
    org = store.create('organizations', {'name': 'Bench'})
    project = store.create('projects', {'name': 'Cloud Pods', 'organization': org['id']})
    inventory = store.create('inventories', {'name': 'Nodes', 'organization': org['id']})
    for playbook in operations.playbooks().values():
        store.create('job_templates', {'name': awx_template_name(playbook), 'project': project['id'],
                                       'playbook': 'playbooks/' + playbook, 'inventory': inventory['id'],
                                       'ask_variables_on_launch': True})
    settings = Settings.from_env({'DATABASE_URL': 'postgresql://bench@127.0.0.1:1/unused', 'CLOUDPODS_EXECUTOR': 'awx',
                                  'CLOUDPODS_AWX_URL': 'http://127.0.0.1:%d' % server.server_address[1],
                                  'CLOUDPODS_AWX_TOKEN': TOKEN, 'CLOUDPODS_AWX_POLL_SECONDS': str(poll)})
    stop = threading.Event()
    player = threading.Thread(target=play_jobs, args=(server, stop), daemon=True)
    player.start()
    executor = AwxExecutor(settings)
    times, failed = [], 0
    try:
        for _order in range(orders):
            started = time.perf_counter()
            result = executor.run(request(), lambda event: None)
            if result.ok and result.stats.get('node') == 'stub':
                times.append(time.perf_counter() - started)
            else:
                failed += 1
                print('awx order failed: %s' % result.error)
    finally:
        stop.set()
        player.join()
        server.shutdown()
        server.server_close()
    return times, failed


def bench_local(orders):
    with tempfile.TemporaryDirectory(prefix='bench-awx-local-') as scratch:
        playbooks = Path(scratch) / 'playbooks'
        playbooks.mkdir()
        (playbooks / 'provision.yml').write_text(TRIVIAL)
        env = dict(os.environ, DATABASE_URL='postgresql://bench@127.0.0.1:1/unused',
                   CLOUDPODS_PLAYBOOK_DIR=str(playbooks), CLOUDPODS_RUN_DIR=str(Path(scratch) / 'runs'))
        for name in ('CLOUDPODS_EXTRA_VARS_FILE', 'CLOUDPODS_INVENTORY', 'CLOUDPODS_EXECUTOR'):
            env.pop(name, None)
        os.environ.pop('CLOUDPODS_EXTRA_VARS_FILE', None)
        os.environ.pop('CLOUDPODS_INVENTORY', None)
        executor = LocalAnsibleRunner(Settings.from_env(env))
        times, failed = [], 0
        for _order in range(orders):
            started = time.perf_counter()
            result = executor.run(request(), lambda event: None)
            if result.ok:
                times.append(time.perf_counter() - started)
            else:
                failed += 1
                print('local order failed: %s' % result.error)
        return times, failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--orders', type=int, default=20)
    parser.add_argument('--local-orders', type=int, default=5, help='the local runs take seconds each')
    parser.add_argument('--poll', type=float, default=0.05, help='CLOUDPODS_AWX_POLL_SECONDS')
    args = parser.parse_args()
    summary('awx', *bench_awx(args.orders, args.poll))
    summary('local', *bench_local(args.local_orders))
    return 0


if __name__ == '__main__':
    sys.exit(main())
