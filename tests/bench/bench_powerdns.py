# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: converge N pod zones with the pod_dns role, then re-converge them unchanged.

    .venv/bin/python tests/bench/bench_powerdns.py [--zones 200] [--forks 10]

A private PowerDNS (the lab's PowerDnsService in a temporary directory) serves the run, so the
shared lab is left alone and the server's request log holds only this benchmark's requests.
One inventory host per pod (domain, pod id, address as host vars), one play running the role
on all of them. Printed for each pass:

* wall-clock time of the ansible-playbook run, and per zone;
* mean duration of the role's module task per zone (from the JSON callback: the time Ansible
  spends on one zone, fork and module start-up included);
* HTTP requests PowerDNS received, by method, and per zone (from PowerDNS's own log).

Then the same two passes on other zones with the module's code called in-process (the module
class with a stand-in for AnsibleModule, no ansible-playbook, no fork): what the module itself
costs per zone, HTTP included, without Ansible's per-task overhead.

The target for the no-op pass is one GET per zone and no write. Not part of the test suite.
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


def run_pass(workdir, env, forks):
    cmd = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', os.path.join(workdir, 'inventory.json'),
           os.path.join(workdir, 'playbook.json'), '--forks', str(forks)]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, env=playbook_env(env), capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    report = json.loads(proc.stdout[proc.stdout.find('{'):])
    durations, changed, failed = [], 0, []
    for play in report['plays']:
        for task in play['tasks']:
            if not task['task']['name'].endswith(MODULE_TASK):
                continue
            for host, result in task['hosts'].items():
                if result.get('failed'):
                    failed.append('%s: %s' % (host, result.get('msg')))
                changed += bool(result.get('changed'))
            # the callback gives one start/end per task (all hosts); per host it is not recorded,
            # so the task's span over all hosts divided by the host count is the per-zone figure.
            span = parse_time(task['task']['duration']['end']) - parse_time(task['task']['duration']['start'])
            durations.append(span.total_seconds())
    return dict(rc=proc.returncode, wall=wall, task_span=sum(durations), changed=changed, failed=failed,
                stderr=proc.stderr[-2000:])


def report_pass(title, outcome, requests, zones, forks):
    methods = Counter(r.method for r in requests)
    writes = sum(n for m, n in methods.items() if m != 'GET')
    print('%s (%d zones, forks=%d)' % (title, zones, forks))
    print('  ansible-playbook wall time  %7.2f s   %6.1f ms per zone' % (outcome['wall'], 1000 * outcome['wall'] / zones))
    print('  module task span            %7.2f s   %6.1f ms per zone' % (outcome['task_span'],
                                                                         1000 * outcome['task_span'] / zones))
    print('  zones changed               %7d' % outcome['changed'])
    print('  HTTP requests to PowerDNS   %7d       %6.2f per zone  (%s)' % (
        len(requests), len(requests) / float(zones), ', '.join('%s %d' % kv for kv in sorted(methods.items()))))
    print('  writes per zone             %10.2f' % (writes / float(zones)))
    if outcome['failed']:
        print('  FAILED: %d, e.g. %s' % (len(outcome['failed']), outcome['failed'][0]))


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
    parser.add_argument('--zones', type=int, default=200)
    parser.add_argument('--forks', type=int, default=10)
    args = parser.parse_args(argv)

    with PrivatePowerDns() as server, tempfile.TemporaryDirectory(prefix='cloudpods-bench-') as workdir:
        api = server.client()
        with open(os.path.join(workdir, 'inventory.json'), 'w') as handle:
            json.dump(inventory(args.zones), handle)
        with open(os.path.join(workdir, 'playbook.json'), 'w') as handle:
            json.dump(PLAYBOOK, handle)

        results = {}
        for title in ('create', 'no-op re-run'):
            mark = api.log.mark()
            outcome = run_pass(workdir, server.env, args.forks)
            requests = api.requests_since(mark, zone=None)
            results[title] = (outcome, requests)
            report_pass(title, outcome, requests, args.zones, args.forks)
            if outcome['rc'] != 0 and not outcome['failed']:
                print(outcome['stderr'])
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
            print('%s (%d zones, module class called directly)' % (title, args.zones))
            print('  time                        %7.2f s   %6.1f ms per zone' % (seconds, 1000 * seconds / args.zones))
            print('  zones changed               %7d' % changed)
            print('  HTTP requests to PowerDNS   %7d       %6.2f per zone  (%s)' % (
                len(requests), len(requests) / float(args.zones),
                ', '.join('%s %d' % kv for kv in sorted(methods.items()))))

        noop, noop_requests = results['no-op re-run']
        gets = sum(1 for r in noop_requests if r.method == 'GET')
        ok = (noop['changed'] == 0 and gets == args.zones and len(noop_requests) == gets)
        print('no-op target (one GET per zone, no write, nothing changed): %s' % ('met' if ok else 'NOT met'))
        return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
