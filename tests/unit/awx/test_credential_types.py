# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The AWX custom credential types in awx/credential_types/: AWX's credential type schema (inputs and
injectors, as AWX validates them on POST /api/v2/credential_types/), every injected input defined,
and every injected name one the code reads (environment variables from the code's lookups and
env_fallbacks, extra vars from the roles' argument specs), found in the code, not listed here."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import glob
import os
import re

import jsonschema
import pytest
import yaml
from awx_credentials import inject
from jinja2 import StrictUndefined, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TYPES = sorted(glob.glob(os.path.join(ROOT, 'awx', 'credential_types', '*.yml')))
NAME = r'^[a-zA-Z_]+[a-zA-Z0-9_]*$'

# AWX's rules for a custom credential type (read in awx/main/fields.py CredentialTypeInputField and
# CredentialTypeInjectorField, models/credential.py; FACTS.md B4), written as a JSON schema here.
SCHEMA = {
    'type': 'object',
    'required': ['name', 'kind', 'inputs', 'injectors'],
    'additionalProperties': False,
    'properties': {
        'name': {'type': 'string', 'minLength': 1},
        'description': {'type': 'string'},
        'kind': {'enum': ['cloud', 'net']},
        'inputs': {
            'type': 'object',
            'additionalProperties': False,
            'required': ['fields'],
            'properties': {
                'required': {'type': 'array', 'items': {'type': 'string'}},
                'fields': {
                    'type': 'array',
                    'minItems': 1,
                    'items': {
                        'type': 'object',
                        'additionalProperties': False,
                        'required': ['id', 'label', 'type'],
                        'properties': {
                            'id': {'type': 'string', 'pattern': NAME},
                            'label': {'type': 'string'},
                            'type': {'enum': ['string', 'boolean']},
                            'format': {'enum': ['ssh_private_key', 'url']},
                            'choices': {'type': 'array', 'minItems': 1, 'uniqueItems': True, 'items': {'type': 'string'}},
                            'help_text': {'type': 'string'},
                            'multiline': {'type': 'boolean'},
                            'secret': {'type': 'boolean'},
                            'ask_at_runtime': {'type': 'boolean'},
                            'default': {},
                        },
                    },
                },
            },
        },
        'injectors': {
            'type': 'object',
            'additionalProperties': False,
            'minProperties': 1,
            'properties': {
                'file': {'type': 'object', 'additionalProperties': False,
                         'patternProperties': {r'^template(\.[a-zA-Z_]+[a-zA-Z0-9_]*)?$': {'type': 'string'}}},
                'env': {'type': 'object', 'additionalProperties': False,
                        'patternProperties': {NAME: {'type': 'string', 'pattern': '^[\x00-\x7F]*$'}}},
                'extra_vars': {'type': 'object', 'additionalProperties': False,
                               'patternProperties': {NAME: {'type': 'string'}}},
            },
        },
    },
}


def load(path):
    with open(path, encoding='utf-8') as handle:
        return yaml.safe_load(handle)


def templates(ctype):
    """(where, template) of every injector template."""
    for kind in ('file', 'env', 'extra_vars'):
        for key, tmpl in ctype['injectors'].get(kind, {}).items():
            yield '%s.%s' % (kind, key), tmpl


def field_ids(ctype):
    return [field['id'] for field in ctype['inputs']['fields']]


def read_in_code():
    """Environment variable names the playbooks, roles and plugins read, and the roles' options."""
    env, options = set(), {}
    lookup = re.compile(r"""lookup\(\s*['"](?:ansible\.builtin\.)?env['"]\s*,\s*['"]([A-Z][A-Z0-9_]*)['"]""")
    fallback = re.compile(r'env_fallback\s*,\s*\[([^\]]*)\]')
    doc_env = re.compile(r'^\s*env:\s*\n\s*-\s*name:\s*([A-Z][A-Z0-9_]*)', re.M)
    for top in ('playbooks', 'roles', 'plugins'):
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = [d for d in dirnames if d != '__pycache__']
            for name in filenames:
                if not name.endswith(('.yml', '.yaml', '.j2', '.py')):
                    continue
                with open(os.path.join(dirpath, name), encoding='utf-8') as handle:
                    text = handle.read()
                env.update(lookup.findall(text))
                env.update(doc_env.findall(text))
                for names in fallback.findall(text):
                    env.update(re.findall(r"""['"]([A-Z][A-Z0-9_]*)['"]""", names))
    for spec in glob.glob(os.path.join(ROOT, 'roles', '*', 'meta', 'argument_specs.yml')):
        for entry in (load(spec).get('argument_specs') or {}).values():
            options.update(entry.get('options') or {})
    return env, options


ENV_READ, ROLE_OPTIONS = read_in_code()


def test_there_are_the_four_credential_types():
    assert [os.path.basename(p) for p in TYPES] == ['powerdns.yml', 'proxmox_api.yml', 'proxmox_ssh.yml', 'smtp.yml']


def test_the_code_scan_finds_what_the_code_reads():
    # The scan is what the assertions below rely on: it must see the code's names (a broken regex
    # would make every injected name "unknown", or find nothing to compare).
    assert {'PROXMOX_API_URL', 'PROXMOX_SSH_KEY_FILE', 'POWERDNS_SERVER_ID', 'SMTP_PASSWORD'} <= ENV_READ
    assert 'pod_mail_smtp_secure' in ROLE_OPTIONS


@pytest.mark.parametrize('path', TYPES, ids=os.path.basename)
class TestCredentialType:

    def test_follows_awx_credential_type_schema(self, path):
        ctype = load(path)
        jsonschema.validate(ctype, SCHEMA)
        ids = field_ids(ctype)
        assert len(ids) == len(set(ids)), 'field ids must be unique'
        assert 'tower' not in ids, '"tower" is reserved'
        assert set(ctype['inputs'].get('required', [])) <= set(ids)
        for field in ctype['inputs']['fields']:
            if field['type'] != 'string':
                assert not set(field) & {'choices', 'multiline', 'format', 'secret'}, field['id']
            if 'default' in field:
                assert isinstance(field['default'], {'string': str, 'boolean': bool}[field['type']]), field['id']
                if 'choices' in field:
                    assert field['default'] in field['choices']
        files = list(ctype['injectors'].get('file', {}))
        assert 'template' not in files or len(files) == 1, 'one file: template; several: template.<name> only'
        for env_var in ctype['injectors'].get('env', {}):
            assert not env_var.startswith('ANSIBLE_'), env_var

    def test_templates_render_as_awx_validates_them(self, path):
        # AWX renders every template at creation with each input defined and StrictUndefined:
        # an undefined name or a tower.filename.<n> without its file template is refused.
        ctype = load(path)
        namespace = dict.fromkeys(field_ids(ctype), 'EXAMPLE')
        files = {key.split('.', 1)[1]: 'EXAMPLE_FILENAME'
                 for key in ctype['injectors'].get('file', {}) if '.' in key}
        namespace['tower'] = {'filename': files}
        env = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
        for where, tmpl in templates(ctype):
            assert '{{' in tmpl, '%s injects no input' % where
            env.from_string(tmpl).render(namespace)

    def test_each_injected_input_exists_and_each_input_is_injected(self, path):
        ctype = load(path)
        ids = set(field_ids(ctype))
        files = {key.split('.', 1)[1] for key in ctype['injectors'].get('file', {}) if '.' in key}
        env = ImmutableSandboxedEnvironment()
        used = set()
        for where, tmpl in templates(ctype):
            ast = env.parse(tmpl)
            names = meta.find_undeclared_variables(ast)
            assert names - {'tower'} <= ids, '%s uses %s, not an input' % (where, sorted(names - {'tower'} - ids))
            used |= names
            for node in ast.find_all(nodes.Getattr):
                if isinstance(node.node, nodes.Getattr) and node.node.attr == 'filename':
                    assert node.attr in files, '%s names tower.filename.%s, no such file template' % (where, node.attr)
        assert ids <= used, 'inputs never injected: %s' % sorted(ids - used)

    def test_injects_only_names_the_code_reads(self, path):
        ctype = load(path)
        env_names = set(ctype['injectors'].get('env', {}))
        assert env_names, 'injects no environment variable'
        assert env_names <= ENV_READ, 'not read by the playbooks/roles/plugins: %s' % sorted(env_names - ENV_READ)
        for var, tmpl in ctype['injectors'].get('extra_vars', {}).items():
            assert var in ROLE_OPTIONS, '%s is no role option' % var
            field = re.search(r'\{\{\s*([a-z_]+)', tmpl).group(1)
            choices = {f['id']: f.get('choices') for f in ctype['inputs']['fields']}[field]
            if choices and ROLE_OPTIONS[var].get('choices'):
                assert set(choices) <= set(ROLE_OPTIONS[var]['choices']), var

    def test_secrets_are_secret(self, path):
        ctype = load(path)
        secret = {f['id'] for f in ctype['inputs']['fields'] if f.get('secret')}
        assert secret, 'every credential type here has a secret'
        for var, tmpl in ctype['injectors'].get('env', {}).items():
            if re.search(r'SECRET|PASSWORD|_KEY$', var):
                assert re.search(r'\{\{\s*([a-z_]+)', tmpl).group(1) in secret, var
        for field in ctype['inputs']['fields']:
            if re.search(r'secret|password|(^|_)key($|_data)', field['id']):
                assert field.get('secret') is True, field['id']

    def test_injection_as_awx_does_it_with_only_the_required_inputs(self, path, tmp_path):
        # At job time AWX leaves inputs not given undefined (they render empty), writes every file
        # template to a file of its own and names it in tower.filename.<n> (tests/support/awx_credentials.py).
        ctype = load(path)
        given = {fid: 'given-' + fid for fid in ctype['inputs'].get('required', [])}
        injected, extra_vars = inject(ctype, given, str(tmp_path))
        defaults = {f['id']: f['default'] for f in ctype['inputs']['fields'] if 'default' in f}
        for var, tmpl in dict(ctype['injectors'].get('env', {}), **ctype['injectors'].get('extra_vars', {})).items():
            value = injected.get(var, extra_vars.get(var))
            field = re.search(r'\{\{\s*([a-z_]+)', tmpl).group(1)
            if field in given:
                assert value.rstrip('\n') == given[field] or var.endswith('_FILE'), var
            elif field in defaults:
                assert value == defaults[field], 'an input left empty gets its default: %s' % var
            elif var.endswith('_CA_BUNDLE'):
                assert value == '', 'no CA given: %s is empty (the system CAs), not an empty file' % var
            elif field != 'tower':
                assert value == '', var
        for var, value in injected.items():
            if var.endswith('_FILE'):
                with open(value, encoding='utf-8') as handle:
                    assert handle.read().rstrip('\n') in given.values(), '%s names the file holding the input' % var
