# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: runner_api under load with gunicorn.

    .venv/bin/python tests/bench/bench_runner_api_http.py [--seconds 5] [--clients 16] [--workers 4]

gunicorn (gthread workers) serves the app on a database of its own in the lab's PostgreSQL;
client processes hammer one route at a time over keep-alive connections, each route warmed up
for a second first. Printed per route: successful (2xx) requests/s, p50 and p99 latency of the
successful requests, and requests/s as a ratio of the trivial ``GET /healthz`` of the same app
in the same run (target for ``GET /plans``: >= 0.7). Error responses (status >= 300) and failed
connections are counted apart and printed beside the figures, never mixed into them; any error
makes the exit status 1. Not part of the test suite.
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
from queue import Empty

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
    latencies = []  # of successful (2xx) responses only
    errors = {}  # status (or exception name) -> count
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
        except (OSError, http.client.HTTPException) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            connection.close()
            connection = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
            continue
        took = time.perf_counter() - started
        if 200 <= response.status < 300:
            latencies.append(took)
        else:
            errors[str(response.status)] = errors.get(str(response.status), 0) + 1
    queue.put((latencies, errors))


def load(port, method, path, token, seconds, clients):
    queue = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=_client, args=(port, method, path, token, seconds, queue))
                 for dummy in range(clients)]
    for process in processes:
        process.start()
    latencies, errors = [], {}
    try:
        for dummy in processes:
            part, part_errors = queue.get(timeout=seconds + 60)
            latencies.extend(part)
            for key, count in part_errors.items():
                errors[key] = errors.get(key, 0) + count
    except Empty:
        raise SystemExit('a client process sent no result within %.0f s' % (seconds + 60)) from None
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    latencies.sort()

    def pct(fraction):
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1000 if latencies else 0.0

    return {'requests': len(latencies), 'rps': len(latencies) / seconds, 'p50_ms': pct(0.50), 'p99_ms': pct(0.99),
            'errors': errors, 'error_count': sum(errors.values())}


def wait_until_up(port, server, timeout=30.0):
    """Until gunicorn answers ``GET /healthz`` with 200; SystemExit when it exits or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit('gunicorn exited with status %d' % server.returncode)
        connection = http.client.HTTPConnection('127.0.0.1', port, timeout=1)
        try:
            connection.request('GET', '/healthz')
            if connection.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        time.sleep(0.1)
    raise SystemExit('gunicorn did not answer /healthz within %.0f s' % timeout)


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
        results = {}
        try:
            wait_until_up(port, server)
            routes = (('GET /healthz (trivial)', 'GET', '/healthz'),
                      ('GET /api/cloud-pods/plans', 'GET', '/api/cloud-pods/plans'),
                      ('POST /api/cloud-pods/order', 'POST', '/api/cloud-pods/order'))
            for name, method, path in routes:  # warm-up: every route, its figures thrown away
                load(port, method, path, token, 1.0, args.clients)
            print('gunicorn: %d workers x %d threads, %d client processes, %.0f s per route; '
                  'req/s and latencies of 2xx responses only, errors beside them'
                  % (args.workers, args.threads, args.clients, args.seconds))
            for name, method, path in routes:
                results[name] = load(port, method, path, token, args.seconds, args.clients)
            base = results['GET /healthz (trivial)']['rps']
            for name, result in results.items():
                print('%-28s %7.0f req/s  p50 %6.1f ms  p99 %6.1f ms  ratio %s  errors %d%s'
                      % (name, result['rps'], result['p50_ms'], result['p99_ms'],
                         '%.2f' % (result['rps'] / base) if base else 'n/a', result['error_count'],
                         (' (%s of %d responses)' % (', '.join('%s: %d' % kv for kv in sorted(result['errors'].items())),
                                                     result['requests'] + result['error_count']))
                         if result['errors'] else ''))
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
    failed = [name for name, result in results.items() if result['error_count']]
    if failed:
        print('FAILED: error responses on %s; their figures cover the successful requests only' % ', '.join(failed))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
