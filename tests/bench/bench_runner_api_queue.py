# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmarks of runner_api's queue and workers.

    .venv/bin/python tests/bench/bench_runner_api_queue.py pickup [--orders 40] [--timeout 60]
    .venv/bin/python tests/bench/bench_runner_api_queue.py scaling [--orders 8] [--workers 1,2,4] [--timeout 600]

``pickup``: one idle worker (poll interval 30 s, so only NOTIFY can wake it) and a stub playbook;
orders are inserted one at a time, each after the previous one is done. Printed: p50/p99 of
order committed -> task claimed, and of order committed -> first playbook event (that includes
ansible-runner and ansible-playbook start-up), over the orders that completed at their first
attempt. Target: p99 < 250 ms idle for the pickup. An order whose task fails, is retried or is
not done within ``--timeout`` seconds is counted beside the figures and makes the exit status 1.

``scaling``: a private lab whose simulator takes realistic times (clone 3 s, start 1 s, DHCP
2 s); N orders provisioned by the real provision playbook with 1, 2 and 4 workers, each run on a
fresh scratch database against a simulator reset to its start-up state (only the template) and
configured again, so every worker count starts from the same state. A run ends when every
subscription is ACTIVE or FAILED, or after ``--timeout`` seconds. Printed: time until all orders
are ACTIVE per worker count, with FAILED, unfinished and retried orders beside it, and the
scaling efficiency T1 / (n * Tn) (target >= 0.8 at 4 workers), computed only when every order of
every run became ACTIVE; otherwise the exit status is 1. Clones of the template serialise on its
lock, which bounds the efficiency. About 14 s per order at 1 worker on this 2-core machine
(2026-11-29, 4 orders: 55 s with 1 worker, 35 s with 2, 32 s with 4); the default 8 orders take
about 4 min in all. Not part of the test suite.

Each run also prints its CPU seconds per order: the workers' children (ansible-runner's
ansible-playbook and its forks, from getrusage of the reaped processes), the workers themselves (from
/proc just before they stop) and each service of the private lab (its pid file's process and live
descendants). CPU seconds, unlike times, hold on a machine shared with other work. Measured
2026-12-01 with a CI rehearsal beside it, 8 orders: 6.96 an order at 1 worker (ansible-playbook 6.52,
workers 0.23, PostgreSQL 0.11, simulator 0.07), 9.05 at 4 workers (ansible-playbook 8.26, workers
0.52): the playbooks are the CPU, and they cost more when four run at once on two cores.

``--template-copies N``: N copies of the template (VMIDs 9001..., made untimed after each reset) and
PROXMOX_CLOUDPOD_TEMPLATE_COPIES for the workers, so that concurrent clones need not wait for the
template's lock.

Measured 2026-11-30 on this 2-core machine, 40 orders, workers 1, 4 and 8 (time to all ACTIVE, s;
efficiency T1 / (n * Tn)):

    version                                   1 worker   4 workers       8 workers
    0636a7b (module processes)                   645.6   268.1 (0.60)    336.5 (0.24)
    API modules in the worker, one template      499.5   180.0 (0.69)    214.3 (0.29)
    the same, 7 copies of the template           504.3   192.9 (0.65)    208.4 (0.30)

The copies change nothing here: with 4 workers the runs are bound by the 2 cores, not by the
template's lock (copies or not, the same times; 40 orders in 193 s of 2 busy cores is at most 9.6
CPU-seconds an order, against 12.5 s of wall time an order at 1 worker, 6 s of it the simulator's
clone, start and DHCP: ansible-playbook's tasks, ansible-runner's events and the worker are the rest). The template's lock would
bound a machine with cores to spare: 40 clones of 3 s one after another take 120 s.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, os.path.join(ROOT, 'tests'), os.path.join(ROOT, 'tests', 'integration'),
              os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support'),
              os.path.join(ROOT, '.build', 'collections')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from runner_api.repository import Repository, open_pool  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import (  # noqa: E402
    make_template_copies, proxmox_client, scratch_database, start_worker, worker_environment)
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
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


CLOCK_TICKS = os.sysconf('SC_CLK_TCK')


def _proc_stat(pid):
    """(parent pid, CPU seconds of the process and of its reaped children) from /proc, or None."""
    try:
        with open('/proc/%d/stat' % pid, encoding='ascii', errors='replace') as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def lab_cpu(directory):
    """CPU seconds used so far by each service of a lab (its pid files under ``directory``), each with
    its live descendants; a reaped descendant is in its parent's count."""
    roots = {}
    for path in Path(directory).rglob('*.pid'):
        try:
            pid = int(path.read_text(encoding='ascii').split()[0])
        except (OSError, ValueError, IndexError):
            continue
        roots[pid] = 'postgres' if path.name == 'postmaster.pid' else path.stem
    stats = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat:
                stats[int(entry)] = stat
    totals = dict((name, 0.0) for name in roots.values())
    for pid, (dummy, cpu) in stats.items():
        seen, current = 0, pid
        while current in stats and current not in roots and seen < 64:
            current, seen = stats[current][0], seen + 1
        if current in roots:
            totals[roots[current]] += cpu
    return totals


def own_cpu(pid):
    """CPU seconds of one live process itself (without its children), or 0.0."""
    try:
        with open('/proc/%d/stat' % pid, encoding='ascii', errors='replace') as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


SIMULATOR = {'task_durations': {'vzclone': 3.0, 'vzstart': 1.0}, 'dhcp_delay': 2.0}


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
            claim, first_event, failures = [], [], []
            try:
                for dummy in range(args.orders):
                    row = order(repository)
                    deadline = time.monotonic() + args.timeout
                    while True:
                        with pool.connection() as connection:
                            done = connection.execute("""
                                SELECT t.status, t.attempts, extract(epoch FROM t.started_at - s.created_at) AS claim,
                                       (SELECT extract(epoch FROM min(e.created_at) - s.created_at)
                                        FROM cloud_pod_events e WHERE e.task_id = t.id AND e.step <> 'worker') AS first
                                FROM cloud_pod_provisioning_tasks t JOIN cloud_pod_subscriptions s
                                     ON s.id = t.subscription_id WHERE s.id = %s""", (row['id'],)).fetchone()
                        if done['status'] in ('COMPLETED', 'FAILED') or time.monotonic() > deadline:
                            break
                        time.sleep(0.05)
                    if done['status'] != 'COMPLETED' or done['attempts'] != 1 or done['first'] is None:
                        failures.append('%s after %d attempt(s)%s' % (
                            done['status'], done['attempts'] or 0,
                            ' (timed out after %.0f s)' % args.timeout if done['status'] not in ('COMPLETED', 'FAILED')
                            else ''))
                        if done['status'] not in ('COMPLETED', 'FAILED'):
                            break  # the worker is stuck: the next orders would only queue behind it
                        continue
                    claim.append(float(done['claim']))
                    first_event.append(float(done['first']))
                    time.sleep(0.3)  # idle again
            finally:
                stop([worker])
    print('pickup, %d orders, 1 idle worker (poll 30 s: NOTIFY only); figures over the %d completed at the first attempt'
          % (args.orders, len(claim)))
    if claim:
        print('  order -> claimed:                p50 %6.1f ms  p99 %6.1f ms' % (pct(claim, .5), pct(claim, .99)))
        figures = (pct(first_event, .5), pct(first_event, .99))
        print('  order -> first playbook event:   p50 %6.1f ms  p99 %6.1f ms' % figures)
    print('  failed, retried or unfinished:   %d%s' % (len(failures), (', e.g. ' + failures[0]) if failures else ''))
    if failures:
        print('FAILED: not every order completed at its first attempt (worker log: %s)' % (tmp / 'worker.log'))
        return 1
    return 0


def wait_for_orders(pool, orders, timeout):
    """Until no subscription is PROVISIONING or ``timeout`` s pass: (seconds, counts by status, retried tasks)."""
    started = time.monotonic()
    while True:
        with pool.connection() as connection:
            statuses = dict((row['status'], row['n']) for row in connection.execute(
                "SELECT status, count(*) AS n FROM cloud_pod_subscriptions GROUP BY status").fetchall())
        if statuses.get('PROVISIONING', 0) == 0 and sum(statuses.values()) == orders:
            break
        if time.monotonic() - started > timeout:
            break
        time.sleep(0.2)
    took = time.monotonic() - started
    with pool.connection() as connection:
        retried = connection.execute(
            "SELECT count(*) AS n FROM cloud_pod_provisioning_tasks WHERE attempts > 1").fetchone()['n']
    return took, statuses, retried


def reset_simulator(control, lab_env, copies=0):
    """The simulator as it started (only the template), ``copies`` copies of the template (VMIDs 9001...,
    full clones turned into templates, made before the timing starts), then the benchmark's task times
    again. Returns the copies' VMIDs."""
    control.reset()
    left = sorted(control.state()['containers'])
    if len(left) != 1:
        raise SystemExit('simulator reset left containers %s (expected the template only)' % left)
    control.config(default_task_duration=0.0, dhcp_delay=0.0)
    made = [9001 + index for index in range(copies)]
    make_template_copies(proxmox_client(lab_env), made)
    control.config(default_task_duration=0.2, **SIMULATOR)
    return made


def bench_scaling(args):
    from playbooks import PrivateLab  # pylint: disable=import-outside-toplevel
    from labcontrol import LabControl  # pylint: disable=import-outside-toplevel
    counts = [int(n) for n in args.workers.split(',')]
    totals, clean = {}, True
    print('scaling: %d orders per run, simulator clone %.0f s, start %.0f s, DHCP %.0f s; reset before each run; '
          '%d cop%s of the template'
          % (args.orders, SIMULATOR['task_durations']['vzclone'], SIMULATOR['task_durations']['vzstart'],
             SIMULATOR['dhcp_delay'], args.template_copies, 'y' if args.template_copies == 1 else 'ies'), flush=True)
    private = PrivateLab()
    with private as lab_env:
        control = LabControl.from_env(lab_env)
        for count in counts:
            copies = reset_simulator(control, lab_env, args.template_copies)
            tmp = Path(tempfile.mkdtemp(prefix='cloudpods-bench-'))
            (tmp / 'cron.d').mkdir()
            (tmp / 'lib').mkdir()  # /usr/local/lib: where deprovision installs the prune script
            site = tmp / 'site.json'
            site.write_text(json.dumps({
                'cloudpods_proxmox_hosts': 'localhost', 'cloudpods_backup_root': str(tmp / 'backup'),
                'cloudpods_cron_dir': str(tmp / 'cron.d'), 'cloudpods_state_dir': str(tmp / 'state'),
                'cloudpods_vzdump': VZDUMP, 'cloudpods_lib_dir': str(tmp / 'lib')}))
            with scratch_database(lab_env['DATABASE_URL'], prefix='cloudpods_bench') as url:
                env = worker_environment(lab_env, url, extra_vars_file=site, poll_seconds=1, lease_seconds=60,
                                         heartbeat_seconds=5)
                if copies:
                    env['PROXMOX_CLOUDPOD_TEMPLATE_COPIES'] = ','.join(str(vmid) for vmid in copies)
                with open_pool(Settings.from_env({'DATABASE_URL': url}), min_size=1, max_size=2) as pool:
                    repository = Repository(pool)
                    for index in range(args.orders):
                        order(repository, domain='s%d-%s.example.com' % (index, uuid.uuid4().hex[:6]))
                    lab_before, children_before = lab_cpu(private.lab.directory), os.times()
                    workers = [start_worker(env, 'w%d' % i, str(tmp / ('w%d.log' % i))) for i in range(count)]
                    try:
                        took, statuses, retried = wait_for_orders(pool, args.orders, args.timeout)
                        worker_own = sum(own_cpu(worker.pid) for worker in workers)
                    finally:
                        stop(workers)
                    children_after, lab_after = os.times(), lab_cpu(private.lab.directory)
            tree = (children_after.children_user + children_after.children_system
                    - children_before.children_user - children_before.children_system)
            cpu = {'ansible-playbook and its modules (the workers\' children)': tree - worker_own,
                   'the workers themselves (queue, events, ansible-runner)': worker_own}
            cpu.update(('lab: ' + name, lab_after.get(name, 0.0) - value) for name, value in lab_before.items())
            active = statuses.get('ACTIVE', 0)
            failed = statuses.get('FAILED', 0)
            unfinished = args.orders - active - failed
            if active == args.orders:
                totals[count] = took
                print('%d worker(s): %d orders ACTIVE in %.1f s (%.2f s per pod), %d retried'
                      % (count, args.orders, took, took / args.orders, retried), flush=True)
                print('  CPU seconds per order: %.2f in all' % (sum(cpu.values()) / args.orders))
                for name, value in sorted(cpu.items(), key=lambda item: -item[1]):
                    if value >= 0.005 * args.orders:
                        print('    %6.2f  %s' % (value / args.orders, name))
            else:
                clean = False
                print('%d worker(s): FAILED run: %d of %d orders ACTIVE, %d FAILED, %d unfinished after %.1f s '
                      '(timeout %.0f s), %d retried; logs in %s'
                      % (count, active, args.orders, failed, unfinished, took, args.timeout, retried, tmp), flush=True)
    base = totals.get(1)
    if clean and base:
        for count in counts:
            print('  %d workers: speed-up %.2f, efficiency %.2f' % (count, base / totals[count],
                                                                    base / (count * totals[count])))
    elif not clean:
        print('efficiency not computed: not every order became ACTIVE in every run')
    return 0 if clean else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('mode', choices=['pickup', 'scaling'])
    parser.add_argument('--orders', type=int, help='orders (pickup: 40, scaling: 8 per worker count)')
    parser.add_argument('--workers', default='1,2,4')
    parser.add_argument('--template-copies', type=int, default=0,
                        help='scaling: copies of the template besides it (PROXMOX_CLOUDPOD_TEMPLATE_COPIES)')
    parser.add_argument('--timeout', type=float,
                        help='seconds to wait (pickup: 60 per order; scaling: 600 per worker count)')
    args = parser.parse_args(argv)
    pickup = args.mode == 'pickup'
    if args.orders is None:
        args.orders = 40 if pickup else 8
    if args.timeout is None:
        args.timeout = 60.0 if pickup else 600.0
    return (bench_pickup if pickup else bench_scaling)(args)


if __name__ == '__main__':
    sys.exit(main())
