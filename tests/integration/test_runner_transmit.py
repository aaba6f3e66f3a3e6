# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mpanel.cloudpods.provision handed to an execution node the way AWX's control plane does it
(FACTS.md B6): ``ansible-runner transmit <dir> -p <playbook> | ansible-runner worker | ansible-runner
process <dir>``, the job's environment being what the four credential types inject (rendered by the
renderer the AWX stand-in uses, tests/lab/awxsim/injectors.py), against the lab's simulator.

As AWX does for an execution node, the credential files' paths in the environment name the
worker's private data dir (AWX writes ``/runner/...``): the files travel inside the transmitted
directory and are found there on the other side.
"""

import json
import os
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SUPPORT = os.path.join(ROOT, 'tests', 'support')
if SUPPORT not in sys.path:
    sys.path.insert(0, SUPPORT)

from awx_credentials import lab_credential_inputs, load_credential_type, render  # noqa: E402  pylint: disable=wrong-import-position,import-error
from podplays import HostDirs, container, new_pod, pods_named, remove_pod  # noqa: E402  pylint: disable=wrong-import-position,import-error

RUNNER = os.path.join(os.path.dirname(sys.executable), 'ansible-runner')
CREDENTIAL_PREFIXES = ('PROXMOX_', 'POWERDNS_', 'SMTP_', 'PVESIM_', 'CONTROLLER_', 'AWXSIM_')
SITE_SETTINGS = ('PROXMOX_NODE_NAME', 'PROXMOX_CLOUDPOD_TEMPLATE_ID', 'PROXMOX_CLOUDPOD_STORAGE',
                 'PROXMOX_CLOUDPOD_BRIDGE', 'CLOUDPODS_LAB', 'CLOUDPODS_FIRST_BOOT', 'ANSIBLE_COLLECTIONS_PATH')


def test_provision_through_transmit_worker_process(lab_env, lab_control, pdns, tmp_path):
    controller = tmp_path / 'controller'   # the control plane's private data dir
    node = tmp_path / 'node'               # the execution node's (ansible-runner worker --private-data-dir)
    for path in (controller / 'env', controller / 'project', controller / 'inventory'):
        path.mkdir(parents=True, mode=0o700)
    inputs = lab_credential_inputs(lab_env, tmp_path)
    envvars = {name: lab_env[name] for name in SITE_SETTINGS if name in lab_env}
    envvars['PATH'] = os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH']
    extravars = HostDirs(tmp_path / 'host').extra_vars()
    for name, values in inputs.items():
        env, extra, _safe = render(load_credential_type(name), values, str(controller))
        # AWX's to_container_path: a path in the controller's directory is the same file in the worker's
        envvars.update({k: v.replace(str(controller), str(node)) for k, v in env.items()})
        extravars.update(extra)
    pod = new_pod('rtx')
    domain = pod + '.test'
    extravars.update(pod=pod, plan='CLOUD_POD_STARTER', domain=domain, customer_email=pod + '@customer.test')
    (controller / 'env' / 'envvars').write_text(yaml.safe_dump(envvars), encoding='utf-8')
    (controller / 'env' / 'extravars').write_text(yaml.safe_dump(extravars), encoding='utf-8')
    (controller / 'inventory' / 'hosts').write_text(
        'localhost ansible_connection=local ansible_python_interpreter=%s\n' % sys.executable, encoding='utf-8')
    # the project: the collection's playbook, the collection itself being in the node's environment (an EE's)
    (controller / 'project' / 'provision.yml').write_text('- ansible.builtin.import_playbook: mpanel.cloudpods.provision\n',
                                                          encoding='utf-8')
    clean = {k: v for k, v in os.environ.items() if not k.startswith(CREDENTIAL_PREFIXES)}
    try:
        transmit = subprocess.Popen([RUNNER, 'transmit', str(controller), '-p', 'provision.yml', '--ident', 'job1'],
                                    stdout=subprocess.PIPE, env=clean)
        worker = subprocess.Popen([RUNNER, 'worker', '--private-data-dir', str(node)], stdin=transmit.stdout,
                                  stdout=subprocess.PIPE, env=clean)
        transmit.stdout.close()
        process = subprocess.run([RUNNER, 'process', str(controller), '--ident', 'job1'], stdin=worker.stdout,
                                 capture_output=True, text=True, env=clean, timeout=900, check=False)
        worker.stdout.close()
        assert transmit.wait(timeout=60) == 0 and worker.wait(timeout=60) == 0
        artifacts = controller / 'artifacts' / 'job1'
        assert process.returncode == 0, process.stdout[-6000:] + process.stderr[-3000:]
        # what came back through the stream: status, rc, the events, the play's output
        assert (artifacts / 'status').read_text() == 'successful' and (artifacts / 'rc').read_text() == '0'
        events = [json.loads(path.read_text()) for path in sorted((artifacts / 'job_events').glob('*.json'))]
        [stats] = [event for event in events if event['event'] == 'playbook_on_stats']
        custom = stats['event_data']['artifact_data']
        [vmid] = pods_named(lab_control, pod)
        assert (custom['vmid'], custom['node'], custom['ip']) == (vmid, 'pve', container(lab_control, pod)['ip'])
        assert any(event['event'] == 'runner_on_ok' and 'container' in (event['event_data'].get('task') or '').lower()
                   for event in events)
        assert 'PLAY RECAP' in (artifacts / 'stdout').read_text()
        assert pdns.zone(domain) is not None
        secret = lab_env['PROXMOX_API_TOKEN_SECRET']
        assert secret not in (artifacts / 'stdout').read_text() and secret not in json.dumps(events)
    finally:
        remove_pod(lab_env, pod)
        pdns.delete_zone(domain)
