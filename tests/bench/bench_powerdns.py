# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: converge N pod zones with the pod_dns role, then re-converge them unchanged.

    .venv/bin/python tests/bench/bench_powerdns.py [--zones 100] [--forks 10]

A private PowerDNS (the lab's PowerDnsService in a temporary directory) serves the run, so the
shared lab is left alone and the server's request log holds only this benchmark's requests.
One inventory host per pod (domain, pod id, address as host vars), one play running the role
on all of them with ``--forks`` forks. Printed for each pass:

* wall-clock time of the ansible-playbook run, and the throughput it gives (zones per second);
* the span of the role's module task over all hosts (first host started to last host done,
  from the JSON callback) and the throughput it gives; with N forks this is NOT the time one
  zone takes (about N zones run at once);
* the duration of the module task per zone (median, p90, max over the hosts): from the
  moment Ansible starts the host's worker until its result is handled, fork and module start-up
  included (a small callback of this benchmark records both events per host);
* HTTP requests PowerDNS received, by method, and per zone (from PowerDNS's own log);
* failed and unreachable hosts, beside the figures. A failed or missing host fails the run.

Then the same two passes on other zones with the module's code called in-process (the module
class with a stand-in for AnsibleModule, no ansible-playbook, no fork): what the module itself
costs per zone, HTTP included, without Ansible's per-task overhead (one zone after the other,
so there the time per zone is a duration). Any zone that fails fails the run.

The target for the no-op pass is one GET per zone, no write, nothing changed and every host ok;
the exit status is 1 when it is not met or any pass had a failure. Not part of the test suite.

Measured 2026-11-29 on this 2-core machine, 200 zones, forks=10 (5 min in all, hence the default
of 100): create 143 s wall (1.4 zones/s), module task 6.0 s per zone (median, p90 6.9 s: ten forks
share two cores), 4 requests and 1 write per zone; no-op 154 s wall, 6.5 s per zone, one GET per
zone and no write (target met). The module class alone: 25 ms per zone to create, 6.4 ms for a
no-op. Ansible's fork and module start-up, not PowerDNS, is what costs.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for path in (os.path.join(ROOT, 'tests', 'integration'), os.path.join(ROOT, 'tests', 'lab')):
    if path not in sys.path:
        sys.path.insert(0, path)

from playbooks import COLLECTIONS, VENV_BIN, ensure_collection_link, playbook_env  # noqa: E402
from pdnslab import PrivatePowerDns  # noqa: E402

MODULE_TASK = 'Converge the DNS zone of the pod on PowerDNS'
PLAYBOOK_TIMEOUT = 900
# Written next to the playbook and enabled for the run: per host and task, when Ansible started
# the worker (v2_runner_on_start, sent just before the fork) and when it handled the result.
HOST_TIMES_CALLBACK = '''
import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_host_times'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.times = {}

    def _mark(self, host, task, key, outcome=None):
        entry = self.times.setdefault(task.get_name(), {}).setdefault(host.get_name(), {})
        entry[key] = time.monotonic()
        if outcome:
            entry['outcome'] = outcome

    def v2_runner_on_start(self, host, task):
        self._mark(host, task, 'start')

    def v2_runner_on_ok(self, result):
        self._mark(result._host, result._task, 'end', 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._mark(result._host, result._task, 'end', 'failed')

    def v2_runner_on_unreachable(self, result):
        self._mark(result._host, result._task, 'end', 'unreachable')

    def v2_runner_on_skipped(self, result):
        self._mark(result._host, result._task, 'end', 'skipped')

    def v2_playbook_on_stats(self, stats):
        with open(os.environ['BENCH_HOST_TIMES'], 'w') as handle:
            json.dump(self.times, handle)
'''
PLAYBOOK = [{'name': 'DNS of every pod', 'hosts': 'pods', 'gather_facts': False,
             'roles': [{'role': 'mpanel.cloudpods.pod_dns'}]}]


def inventory(zones):
    hosts = {}
    for index in range(zones):
        pod = 'pod-%04d' % index
        hosts[pod] = {'pod_dns_domain': '%s.bench.test' % pod, 'pod_dns_pod_id': pod,
                      'pod_dns_ipv4': '10.20.%d.%d' % (index // 250, index % 250 + 1)}
    return {'all': {'hosts': {'localhost': {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable}},
                    'children': {'pods': {'hosts': hosts, 'vars': {'ansible_connection': 'local',
                                                                   'ansible_python_interpreter': sys.executable}}}}}


def parse_time(stamp):
    return datetime.strptime(stamp.replace('Z', ''), '%Y-%m-%dT%H:%M:%S.%f')


def pct(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(fraction * len(values)))] if values else float('nan')


def run_pass(workdir, env, forks, zones):
    """One ansible-playbook run; its wall time, the module task's span and per-host durations, failures."""
    times_file = os.path.join(workdir, 'host-times.json')
    if os.path.exists(times_file):
        os.unlink(times_file)
    cmd = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', os.path.join(workdir, 'inventory.json'),
           os.path.join(workdir, 'playbook.json'), '--forks', str(forks)]
    extra_env = {'ANSIBLE_CALLBACK_PLUGINS': os.path.join(workdir, 'callback_plugins'),
                 'ANSIBLE_CALLBACKS_ENABLED': 'bench_host_times', 'BENCH_HOST_TIMES': times_file}
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=playbook_env(env, extra_env), capture_output=True, text=True,
                              check=False, timeout=PLAYBOOK_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SystemExit('ansible-playbook did not finish within %d s' % PLAYBOOK_TIMEOUT) from None
    wall = time.monotonic() - started
    start = proc.stdout.find('{')
    if start < 0:
        raise SystemExit('ansible-playbook printed no JSON report (rc %d):\n%s' % (proc.returncode, proc.stderr[-2000:]))
    report = json.loads(proc.stdout[start:])
    span, changed, failed, seen = 0.0, 0, [], set()
    for play in report['plays']:
        for task in play['tasks']:
            if not task['task']['name'].endswith(MODULE_TASK):
                continue
            for host, result in task['hosts'].items():
                seen.add(host)
                if result.get('failed') or result.get('unreachable'):
                    failed.append('%s: %s' % (host, result.get('msg')))
                changed += bool(result.get('changed'))
            # one start/end per task in this callback: first host started to last host done
            span += (parse_time(task['task']['duration']['end'])
                     - parse_time(task['task']['duration']['start'])).total_seconds()
    missing = zones - len(seen)
    if missing:
        failed.append('%d host(s) never ran the module task (failed before it?)' % missing)
    durations = []
    if os.path.exists(times_file):
        with open(times_file) as handle:
            for name, hosts in json.load(handle).items():
                if name.endswith(MODULE_TASK):
                    durations.extend(t['end'] - t['start'] for t in hosts.values() if 'start' in t and 'end' in t)
    return dict(rc=proc.returncode, wall=wall, task_span=span, durations=durations, changed=changed, failed=failed,
                stderr=proc.stderr[-2000:])


def report_pass(title, outcome, requests, zones, forks):
    methods = Counter(r.method for r in requests)
    writes = sum(n for m, n in methods.items() if m != 'GET')
    durations = outcome['durations']
    print('%s (%d zones, forks=%d)' % (title, zones, forks))
    print('  ansible-playbook wall time      %7.2f s   throughput %6.1f zones/s' % (outcome['wall'], zones / outcome['wall']))
    print('  module task span, all zones     %7.2f s   throughput %6.1f zones/s  (%d at a time: not a per-zone time)'
          % (outcome['task_span'], zones / outcome['task_span'] if outcome['task_span'] else 0.0, forks))
    print('  module task per zone (fork incl.) median %6.0f ms  p90 %6.0f ms  max %6.0f ms  (%d hosts timed)'
          % (1000 * pct(durations, .5), 1000 * pct(durations, .9), 1000 * pct(durations, 1.0), len(durations)))
    print('  zones changed                   %7d' % outcome['changed'])
    print('  HTTP requests to PowerDNS       %7d       %6.2f per zone  (%s)' % (
        len(requests), len(requests) / float(zones), ', '.join('%s %d' % kv for kv in sorted(methods.items()))))
    print('  writes per zone                 %10.2f' % (writes / float(zones)))
    print('  failed hosts                    %7d%s  (ansible-playbook rc %d)' % (
        len(outcome['failed']), (', e.g. ' + outcome['failed'][0]) if outcome['failed'] else '', outcome['rc']))


class ModuleStub(object):
    """Just enough of AnsibleModule for the module class: params, check mode, exit and fail."""

    def __init__(self, params):
        self.params = params
        self.check_mode = False
        self.result = None

    def exit_json(self, **result):
        self.result = result

    def fail_json(self, **result):
        raise RuntimeError(result.get('msg'))


def module_params(spec, values):
    """Module parameters as AnsibleModule would build them: defaults, suboption defaults."""
    params = dict((name, option.get('default')) for name, option in spec.items())
    params.update(values)
    sub = spec['rrsets']['options']
    params['rrsets'] = [dict(dict((k, o.get('default')) for k, o in sub.items()), **r) for r in params['rrsets']]
    return params


def pod_rrsets(zone, ipv4):
    return [
        {'name': '@', 'type': 'A', 'records': [ipv4]},
        {'name': 'www', 'type': 'A', 'records': [ipv4]},
        {'name': '@', 'type': 'MX', 'records': ['10 mail.example.net']},
        {'name': '@', 'type': 'TXT', 'records': ['v=spf1 mx include:_spf.example.net -all']},
        {'name': '_dmarc', 'type': 'TXT', 'records': ['v=DMARC1; p=quarantine; rua=mailto:postmaster@' + zone]},
    ]


def in_process_pass(env, zones):
    """Converge ``zones`` zones with the module class in this process; return (seconds, changed)."""
    ensure_collection_link()
    if COLLECTIONS not in sys.path:
        sys.path.insert(0, COLLECTIONS)
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.mpanel.cloudpods.plugins.modules import powerdns_zone as pz
    spec = pz.argument_spec()
    connection = dict(api_url=env['POWERDNS_API_URL'], api_key=env['POWERDNS_API_KEY'],
                      server_id=env['POWERDNS_SERVER_ID'])
    changed = 0
    started = time.monotonic()
    for index in range(zones):
        zone = 'lib-%04d.bench.test' % index
        values = dict(connection, name=zone, account='lib-%04d' % index, nameservers=['ns1.example.net'],
                      rrsets=pod_rrsets(zone, '10.30.%d.%d' % (index // 250, index % 250 + 1)))
        stub = ModuleStub(module_params(spec, values))
        pz.PowerDnsZone(stub).execute()
        changed += bool(stub.result['changed'])
    return time.monotonic() - started, changed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--zones', type=int, default=100)
    parser.add_argument('--forks', type=int, default=10)
    args = parser.parse_args(argv)

    with PrivatePowerDns() as server, tempfile.TemporaryDirectory(prefix='cloudpods-bench-') as workdir:
        api = server.client()
        with open(os.path.join(workdir, 'inventory.json'), 'w') as handle:
            json.dump(inventory(args.zones), handle)
        with open(os.path.join(workdir, 'playbook.json'), 'w') as handle:
            json.dump(PLAYBOOK, handle)
        os.mkdir(os.path.join(workdir, 'callback_plugins'))
        with open(os.path.join(workdir, 'callback_plugins', 'bench_host_times.py'), 'w') as handle:
            handle.write(HOST_TIMES_CALLBACK)

        results = {}
        for title in ('create', 'no-op re-run'):
            mark = api.log.mark()
            outcome = run_pass(workdir, server.env, args.forks, args.zones)
            requests = api.requests_since(mark, zone=None)
            results[title] = (outcome, requests)
            report_pass(title, outcome, requests, args.zones, args.forks)
            if outcome['rc'] != 0 or outcome['failed']:
                print(outcome['stderr'])
                print('FAILED: the %s pass had failures (see above); no target is judged on a failed run' % title)
                return 1

        # spot check: what the world sees of a few zones
        for index in (0, args.zones // 2, args.zones - 1):
            zone = 'pod-%04d.bench.test' % index
            assert api.answers(zone, 'A') == ['10.20.%d.%d' % (index // 250, index % 250 + 1)], zone
            assert api.answers('_dmarc.' + zone, 'TXT') == ['v=DMARC1; p=quarantine; rua=mailto:postmaster@' + zone]
        for title in ('in-process create', 'in-process no-op re-run'):
            mark = api.log.mark()
            seconds, changed = in_process_pass(server.env, args.zones)
            requests = api.requests_since(mark, zone=None)
            methods = Counter(r.method for r in requests)
            print('%s (%d zones, module class called directly, one zone after the other)' % (title, args.zones))
            print('  time                            %7.2f s   %6.1f ms per zone (mean)'
                  % (seconds, 1000 * seconds / args.zones))
            print('  zones changed                   %7d' % changed)
            print('  HTTP requests to PowerDNS       %7d       %6.2f per zone  (%s)' % (
                len(requests), len(requests) / float(args.zones),
                ', '.join('%s %d' % kv for kv in sorted(methods.items()))))

        noop, noop_requests = results['no-op re-run']
        gets = sum(1 for r in noop_requests if r.method == 'GET')
        ok = (noop['rc'] == 0 and not noop['failed'] and noop['changed'] == 0 and gets == args.zones
              and len(noop_requests) == gets)
        print('no-op target (every host ok, one GET per zone, no write, nothing changed): %s  '
              '(%d failed, %d changed, %d GET, %d other requests)'
              % ('met' if ok else 'NOT met', len(noop['failed']), noop['changed'], gets, len(noop_requests) - gets))
        return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
