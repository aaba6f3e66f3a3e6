# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmarks of runner_api's queue and workers.

    .venv/bin/python tests/bench/bench_runner_api_queue.py pickup [--orders 40]
    .venv/bin/python tests/bench/bench_runner_api_queue.py scaling [--orders 40] [--workers 1,2,4]

``pickup``: one idle worker (poll interval 30 s, so only NOTIFY can wake it) and a stub playbook;
orders are inserted one at a time, each after the previous one is done. Printed: p50/p99 of
order committed -> task claimed, and of order committed -> first playbook event (that includes
ansible-runner and ansible-playbook start-up). Target: p99 < 250 ms idle for the pickup.

``scaling``: a private lab whose simulator takes realistic times (clone 3 s, start 1 s, DHCP
2 s); N orders provisioned by the real provision playbook with 1, 2 and 4 workers. Printed: total
time per worker count and the scaling efficiency T1 / (n * Tn) (target >= 0.8 at 4 workers).
Clones of the template serialise on its lock, which bounds the efficiency. Not part of the test suite.
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, os.path.join(ROOT, 'tests'), os.path.join(ROOT, 'tests', 'integration'),
              os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from runner_api.repository import Repository, open_pool  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import scratch_database, start_worker, worker_environment  # noqa: E402
from labenv import read_env as read_lab_env  # noqa: E402

STUB = """
- name: Stub provision
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Nothing
      ansible.builtin.set_stats:
        data: {vmid: 1, node: stub, ip: 192.0.2.1}
"""
VZDUMP = os.path.join(ROOT, 'tests', 'lab', 'bin', 'vzdump')


def order(repository, max_attempts=3, domain=None):
    row, dummy = repository.create_order({
        'customer_id': 'bench', 'customer_email': 'bench@example.com', 'plan_code': 'CLOUD_POD_STARTER',
        'domain': domain, 'hostname': 'cp-' + uuid.uuid4().hex[:10], 'idempotency_key': None,
        'request_digest': 'x'}, max_attempts)
    return row


def pct(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(fraction * len(values)))] * 1000


def stop(processes):
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=60)


def bench_pickup(args):
    lab_env = read_lab_env()
    tmp = Path(tempfile.mkdtemp(prefix='cloudpods-bench-'))
    (tmp / 'provision.yml').write_text(STUB)
    with scratch_database(lab_env['DATABASE_URL'], prefix='cloudpods_bench') as url:
        env = worker_environment(lab_env, url, playbook_dir=tmp, poll_seconds=30)
        with open_pool(Settings.from_env({'DATABASE_URL': url}), min_size=1, max_size=2) as pool:
            repository = Repository(pool)
            worker = start_worker(env, 'pickup', str(tmp / 'worker.log'))
            time.sleep(2)
            claim, first_event = [], []
            for dummy in range(args.orders):
                row = order(repository)
                while True:
                    with pool.connection() as connection:
                        done = connection.execute("""
                            SELECT t.status, extract(epoch FROM t.started_at - s.created_at) AS claim,
                                   (SELECT extract(epoch FROM min(e.created_at) - s.created_at) FROM cloud_pod_events e
                                    WHERE e.task_id = t.id AND e.step <> 'worker') AS first
                            FROM cloud_pod_provisioning_tasks t JOIN cloud_pod_subscriptions s
                                 ON s.id = t.subscription_id WHERE s.id = %s""", (row['id'],)).fetchone()
                    if done['status'] == 'COMPLETED':
                        break
                    time.sleep(0.05)
                claim.append(float(done['claim']))
                first_event.append(float(done['first']))
                time.sleep(0.3)  # idle again
            stop([worker])
    print('pickup, %d orders, 1 idle worker (poll 30 s: NOTIFY only)' % args.orders)
    print('  order -> claimed:                p50 %6.1f ms  p99 %6.1f ms' % (pct(claim, .5), pct(claim, .99)))
    figures = (pct(first_event, .5), pct(first_event, .99))
    print('  order -> first playbook event:   p50 %6.1f ms  p99 %6.1f ms' % figures)


def bench_scaling(args):
    from playbooks import PrivateLab  # pylint: disable=import-outside-toplevel
    from labcontrol import LabControl  # pylint: disable=import-outside-toplevel
    counts = [int(n) for n in args.workers.split(',')]
    totals = {}
    with PrivateLab() as lab_env:
        control = LabControl.from_env(lab_env)
        control.config(task_durations={'vzclone': 3.0, 'vzstart': 1.0}, dhcp_delay=2.0)
        for count in counts:
            tmp = Path(tempfile.mkdtemp(prefix='cloudpods-bench-'))
            (tmp / 'cron.d').mkdir()
            site = tmp / 'site.json'
            site.write_text(json.dumps({
                'cloudpods_proxmox_hosts': 'localhost', 'cloudpods_backup_root': str(tmp / 'backup'),
                'cloudpods_cron_dir': str(tmp / 'cron.d'), 'cloudpods_state_dir': str(tmp / 'state'),
                'cloudpods_vzdump': VZDUMP}))
            with scratch_database(lab_env['DATABASE_URL'], prefix='cloudpods_bench') as url:
                env = worker_environment(lab_env, url, extra_vars_file=site, poll_seconds=1, lease_seconds=60,
                                         heartbeat_seconds=5)
                with open_pool(Settings.from_env({'DATABASE_URL': url}), min_size=1, max_size=2) as pool:
                    repository = Repository(pool)
                    for index in range(args.orders):
                        order(repository, domain='s%d-%s.example.com' % (index, uuid.uuid4().hex[:6]))
                    started = time.monotonic()
                    workers = [start_worker(env, 'w%d' % i, str(tmp / ('w%d.log' % i))) for i in range(count)]
                    while True:
                        with pool.connection() as connection:
                            open_count = connection.execute(
                                "SELECT count(*) AS n FROM cloud_pod_subscriptions WHERE status = 'PROVISIONING'"
                            ).fetchone()['n']
                            failed = connection.execute(
                                "SELECT count(*) AS n FROM cloud_pod_subscriptions WHERE status = 'FAILED'"
                            ).fetchone()['n']
                        if open_count == 0:
                            break
                        time.sleep(0.2)
                    totals[count] = time.monotonic() - started
                    stop(workers)
            print('%d worker(s): %d orders in %.1f s (%.2f s per pod), %d failed'
                  % (count, args.orders, totals[count], totals[count] / args.orders, failed), flush=True)
    base = totals.get(1)
    if base:
        for count in counts:
            print('  %d workers: speed-up %.2f, efficiency %.2f' % (count, base / totals[count],
                                                                    base / (count * totals[count])))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('mode', choices=['pickup', 'scaling'])
    parser.add_argument('--orders', type=int, default=40)
    parser.add_argument('--workers', default='1,2,4')
    args = parser.parse_args(argv)
    (bench_pickup if args.mode == 'pickup' else bench_scaling)(args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
