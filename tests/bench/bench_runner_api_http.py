# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: runner_api under load with gunicorn.

    .venv/bin/python tests/bench/bench_runner_api_http.py [--seconds 5] [--clients 16] [--workers 4]

gunicorn (gthread workers) serves the app on a database of its own in the lab's PostgreSQL;
client processes hammer one route at a time over keep-alive connections. Printed per route:
requests/s, p50 and p99 latency, and requests/s as a ratio of the trivial ``GET /healthz`` of
the same app in the same run (target for ``GET /plans``: >= 0.7). Not part of the test suite.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, os.path.join(ROOT, 'tests'), os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from runner_api.auth import new_token  # noqa: E402
from runner_api.repository import Repository, open_pool  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import scratch_database, worker_environment  # noqa: E402
from labenv import free_port, read_env as read_lab_env  # noqa: E402


def _client(port, method, path, token, seconds, queue):
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    headers = {'Authorization': 'Bearer ' + token, 'X-Customer-Id': 'bench', 'Content-Type': 'application/json'}
    latencies = []
    errors = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        body = None
        if method == 'POST':
            body = json.dumps({'plan_code': 'CLOUD_POD_STARTER', 'customer_email': 'bench@example.com',
                               'domain': 'b%s.example.com' % uuid.uuid4().hex[:12]})
        started = time.perf_counter()
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status >= 300:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            connection.close()
            connection = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
            continue
        latencies.append(time.perf_counter() - started)
    queue.put((latencies, errors))


def load(port, method, path, token, seconds, clients):
    queue = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=_client, args=(port, method, path, token, seconds, queue))
                 for dummy in range(clients)]
    for process in processes:
        process.start()
    latencies, errors = [], 0
    for dummy in processes:
        part, part_errors = queue.get()
        latencies.extend(part)
        errors += part_errors
    for process in processes:
        process.join()
    latencies.sort()

    def pct(fraction):
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1000 if latencies else 0.0

    return {'requests': len(latencies), 'rps': len(latencies) / seconds, 'p50_ms': pct(0.50), 'p99_ms': pct(0.99),
            'errors': errors}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--seconds', type=float, default=5.0)
    parser.add_argument('--clients', type=int, default=16)
    parser.add_argument('--workers', type=int, default=4, help='gunicorn worker processes')
    parser.add_argument('--threads', type=int, default=4, help='threads per gunicorn worker')
    args = parser.parse_args(argv)
    lab_env = read_lab_env()
    with scratch_database(lab_env['DATABASE_URL'], prefix='cloudpods_bench') as url:
        token = new_token()
        with open_pool(Settings.from_env({'DATABASE_URL': url}), min_size=1, max_size=1) as pool:
            Repository(pool).create_token('bench', 'service', None, token)
        port = free_port()
        env = worker_environment(lab_env, url, db_pool_max=max(4, args.threads))
        server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), 'gunicorn'), '-b',
                                   '127.0.0.1:%d' % port, '-w', str(args.workers), '-k', 'gthread', '--threads',
                                   str(args.threads), '--log-level', 'warning', 'runner_api.app:create_app()'],
                                  env=env, cwd=ROOT)
        try:
            for dummy in range(100):
                try:
                    http.client.HTTPConnection('127.0.0.1', port, timeout=1).request('GET', '/healthz')
                    break
                except OSError:
                    time.sleep(0.1)
            load(port, 'GET', '/healthz', token, 1.0, args.clients)  # warm-up
            print('gunicorn: %d workers x %d threads, %d client processes, %.0f s per route'
                  % (args.workers, args.threads, args.clients, args.seconds))
            results = {}
            for name, method, path in (('GET /healthz (trivial)', 'GET', '/healthz'),
                                       ('GET /api/cloud-pods/plans', 'GET', '/api/cloud-pods/plans'),
                                       ('POST /api/cloud-pods/order', 'POST', '/api/cloud-pods/order')):
                results[name] = load(port, method, path, token, args.seconds, args.clients)
            base = results['GET /healthz (trivial)']['rps']
            for name, result in results.items():
                print('%-28s %7.0f req/s  p50 %6.1f ms  p99 %6.1f ms  ratio %.2f  errors %d'
                      % (name, result['rps'], result['p50_ms'], result['p99_ms'], result['rps'] / base,
                         result['errors']))
        finally:
            server.terminate()
            server.wait(timeout=20)
    return 0


if __name__ == '__main__':
    sys.exit(main())
