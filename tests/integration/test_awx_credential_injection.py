# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The AWX credential types (awx/credential_types) applied as AWX applies them at job time, against
the lab: modules run with nothing but what the credentials inject (no PROXMOX_*, POWERDNS_* or SMTP_*
of the test's own environment), the CA bundle and the SSH key as files AWX writes."""

import os
import stat
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from awx_credentials import inject, load_credential_type  # noqa: E402  (tests/support)
from playbooks import run_playbook  # noqa: E402

CREDENTIAL_PREFIXES = ('PROXMOX_', 'POWERDNS_', 'SMTP_')
# Settings that are not credentials: AWX gets them elsewhere (README.md, "AWX and execution environments").
SITE_SETTINGS = ('PROXMOX_NODE_NAME', 'PROXMOX_CLOUDPOD_TEMPLATE_ID', 'PROXMOX_CLOUDPOD_STORAGE',
                 'PROXMOX_CLOUDPOD_BRIDGE', 'CLOUDPODS_LAB', 'CLOUDPODS_FIRST_BOOT')


def job_env(lab_env, injected):
    """The job's environment: the test's own credential variables removed, the site settings, the injection."""
    env = {k: None for k in list(os.environ) + list(lab_env) if k.startswith(CREDENTIAL_PREFIXES)}
    env.update({k: lab_env[k] for k in SITE_SETTINGS if k in lab_env})
    env.update(injected)
    return env


def read(path):
    with open(path, encoding='utf-8') as handle:
        return handle.read()


def proxmox_inputs(lab_env, with_ca=True):
    inputs = {'api_url': lab_env['PROXMOX_API_URL'], 'token_id': lab_env['PROXMOX_API_TOKEN_ID'],
              'token_secret': lab_env['PROXMOX_API_TOKEN_SECRET']}
    if with_ca:
        inputs['ca_bundle'] = read(lab_env['PROXMOX_CA_BUNDLE'])
    return inputs


def test_proxmox_and_powerdns_modules_run_with_only_the_injected_credentials(lab_env, tmp_path):
    private = str(tmp_path / 'pdd')
    pve_env, pve_vars = inject(load_credential_type('proxmox_api'), proxmox_inputs(lab_env), private)
    dns_env, dns_vars = inject(load_credential_type('powerdns'), {
        'api_url': lab_env['POWERDNS_API_URL'], 'api_key': lab_env['POWERDNS_API_KEY']}, private)
    assert pve_vars == {} and dns_vars == {}
    # The CA is a file of the job's private data dir (0600) holding the PEM, not the lab's own path.
    ca_file = pve_env['PROXMOX_CA_BUNDLE']
    assert ca_file.startswith(os.path.join(private, 'env') + os.sep) and ca_file != lab_env['PROXMOX_CA_BUNDLE']
    assert stat.S_IMODE(os.stat(ca_file).st_mode) == 0o600
    assert read(ca_file) == read(lab_env['PROXMOX_CA_BUNDLE'])
    assert dns_env['POWERDNS_SERVER_ID'] == 'localhost' and dns_env['POWERDNS_CA_BUNDLE'] == ''
    zone = 'awx-%s.example.test' % uuid.uuid4().hex[:8]
    run = run_playbook([
        {'name': 'pods', 'mpanel.cloudpods.pod_container_info': {}},
        {'name': 'zone', 'mpanel.cloudpods.powerdns_zone_info': {'name': zone}},
    ], env=job_env(lab_env, dict(pve_env, **dns_env)), check=True)
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-2000:]
    pods, zone_info = run.results
    assert isinstance(pods['pods'], list) and not pods.get('failed')
    assert zone_info['exists'] is False and not zone_info.get('failed')


def test_without_the_ca_the_proxmox_api_is_refused(lab_env, tmp_path):
    # The lab's API certificate is signed by the lab's CA: the injected CA file above is what made
    # TLS verify; without the CA input PROXMOX_CA_BUNDLE is empty (the system's CAs) and TLS fails.
    pve_env, pve_vars = inject(load_credential_type('proxmox_api'), proxmox_inputs(lab_env, with_ca=False),
                               str(tmp_path / 'pdd'))
    assert pve_env['PROXMOX_CA_BUNDLE'] == '' and pve_vars == {}
    run = run_playbook([{'name': 'pods', 'mpanel.cloudpods.pod_container_info': {}}],
                       env=job_env(lab_env, pve_env), check=True)
    assert run.rc != 0
    assert run.results[0]['failed'] and 'certificate' in run.results[0]['msg'].lower()


def test_the_ssh_key_is_a_private_file_named_by_proxmox_ssh_key_file(tmp_path):
    key = '-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n-----END OPENSSH PRIVATE KEY-----'
    env, extra_vars = inject(load_credential_type('proxmox_ssh'), {'host': '192.0.2.10', 'ssh_key_data': key},
                             str(tmp_path / 'pdd'))
    assert extra_vars == {}
    assert read(env['PROXMOX_SSH_KEY_FILE']) == key + '\n'
    assert stat.S_IMODE(os.stat(env['PROXMOX_SSH_KEY_FILE']).st_mode) == 0o600
    assert (env['PROXMOX_SSH_HOST'], env['PROXMOX_SSH_PORT'], env['PROXMOX_SSH_USER'],
            env['PROXMOX_SSH_HOST_KEY_CHECKING']) == ('192.0.2.10', '22', 'root', 'true')
