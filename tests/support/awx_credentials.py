# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Apply an AWX custom credential type (awx/credential_types/<name>.yml) the way AWX does at job time.

Written from AWX's documented behaviour (docs/credentials/custom_credential_types.md, FACTS.md B4):
only inputs given with a value are defined (the rest render empty), missing booleans are False, an
ssh_private_key gets a trailing newline, every file template is written to a file of its own (mode
0600) under <private data dir>/env and named in tower.filename.<n>, templates render in a sandbox.

    env, extra_vars = inject(load_credential_type('proxmox_api'), {'api_url': ...}, private_dir)
"""

import os
import stat
import tempfile

import yaml
from jinja2 import Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TYPES_DIR = os.path.join(ROOT, 'awx', 'credential_types')


def load_credential_type(name):
    with open(os.path.join(TYPES_DIR, name + '.yml'), encoding='utf-8') as handle:
        return yaml.safe_load(handle)


def inject(ctype, inputs, private_dir):
    """(env, extra_vars) the credential of this type with these inputs adds to a job."""
    namespace = {k: v for k, v in inputs.items() if isinstance(v, bool) or len(v)}
    for field in ctype['inputs']['fields']:
        if field['type'] == 'boolean' and field['id'] not in inputs:
            namespace[field['id']] = False
        if field.get('format') == 'ssh_private_key' and field['id'] in namespace \
                and not namespace[field['id']].endswith('\n'):
            namespace[field['id']] += '\n'
    sandbox = ImmutableSandboxedEnvironment(undefined=Undefined)
    env_dir = os.path.join(private_dir, 'env')
    os.makedirs(env_dir, exist_ok=True)
    filenames = {}
    for label, tmpl in ctype['injectors'].get('file', {}).items():
        handle, path = tempfile.mkstemp(dir=env_dir)
        with os.fdopen(handle, 'w') as out:
            out.write(sandbox.from_string(tmpl).render(**namespace))
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        if '.' in label:
            filenames[label.split('.', 1)[1]] = path
        else:
            filenames = path
    namespace['tower'] = {'filename': filenames}
    env = {k: sandbox.from_string(v).render(**namespace) for k, v in ctype['injectors'].get('env', {}).items()}
    extra_vars = {k: sandbox.from_string(v).render(**namespace)
                  for k, v in ctype['injectors'].get('extra_vars', {}).items()}
    return env, extra_vars
