# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 12's pieces of runner_api without a database: the key rule as runner_api loads it, the
playbooks' reports as the worker reads them, the HTTPS retry's schedule, the order's digest."""

import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from runner_api import keys  # noqa: E402
from runner_api.blueprints.customer import order_digest_parts  # noqa: E402
from runner_api.repository import https_retry_delay  # noqa: E402
from runner_api.worker import reported_stats  # noqa: E402

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBYaY9Fc2WAspbusY48TMbpXKmmrNgmMZLkJq2wNBXOa jane@laptop'
PRIVATE = ('-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n'
           '-----END OPENSSH PRIVATE KEY-----\n')


def test_runner_api_loads_the_collection_s_rule_file():
    assert os.path.samefile(keys.rule().__file__, os.path.join(ROOT, 'plugins', 'module_utils', 'ssh_keys.py'))


def test_messages_name_the_index_and_never_the_entry():
    lines, errors = keys.check([KEY, PRIVATE, 'command="id" ' + KEY, KEY])
    assert lines == [KEY]
    assert [error.split(':', 1)[0] for error in errors] == [
        'ssh_public_keys[1]', 'ssh_public_keys[2]', 'ssh_public_keys[3]']
    text = ' '.join(errors)
    assert 'b3BlbnNzaC1rZXktdjEA' not in text and 'AAAAIBYaY9Fc2WAs' not in text and 'command="id"' not in text
    assert keys.check(PRIVATE)[1] == ['ssh_public_keys: must be a list of OpenSSH public keys']
    assert keys.check([])[0] == [] and keys.check([])[1] == []


def test_stored_lines_are_described_by_type_fingerprint_and_comment():
    [described] = keys.describe([KEY])
    assert described == {'type': 'ssh-ed25519', 'fingerprint': keys.rule().parse(0, KEY).fingerprint,
                         'comment': 'jane@laptop'}
    assert described['fingerprint'].startswith('SHA256:')
    assert keys.describe(['not a key']) == []


def test_the_worker_reads_the_contract_s_stats():
    stats = reported_stats({
        'vmid': '101', 'node': 'pve', 'ip': '10.0.0.5',
        'ssh_host_keys': ['SHA256:abc (ED25519)', 'SHA256:def (RSA)'], 'ssh': {'user': 'web', 'port': '2222'},
        'https': {'status': 'pending', 'reason': 'The CA  did not\nanswer.', 'not_after': ''}})
    assert stats == {'vmid': 101, 'node': 'pve', 'ip': '10.0.0.5',
                     'ssh_host_keys': ['SHA256:abc (ED25519)', 'SHA256:def (RSA)'], 'ssh_user': 'web', 'ssh_port': 2222,
                     'https_status': 'pending', 'https_reason': 'The CA did not answer.', 'https_not_after': None}
    active = reported_stats({'https': {'status': 'active', 'reason': '', 'not_after': '2027-02-27T10:00:00Z'}})
    assert active == {'https_status': 'active', 'https_reason': '', 'https_not_after': '2027-02-27T10:00:00+00:00'}
    assert reported_stats({}) == {}


def test_a_report_of_the_wrong_shape_is_left_out():
    for bad in ({'ssh_host_keys': 'SHA256:abc'}, {'ssh_host_keys': [1]}, {'ssh': {'user': 'web'}},
                {'ssh': {'user': 'web', 'port': 70000}}, {'ssh': 'web@22'}, {'https': {'status': 'ok'}},
                {'https': 'active'}):
        assert reported_stats(bad) == {}, bad
    assert reported_stats({'https': {'status': 'active', 'not_after': 'soon'}})['https_not_after'] is None


def test_the_retry_schedule_doubles_up_to_its_cap():
    assert [https_retry_delay(runs, 60, 3600) for runs in range(1, 9)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert https_retry_delay(0, 60, 3600) == 60


def test_an_order_without_keys_keeps_its_old_digest():
    old = hashlib.sha256(json.dumps(['CLOUD_POD_STARTER', None, 'jane@example.org']).encode()).hexdigest()
    for key_lines in (None, []):
        parts = order_digest_parts('CLOUD_POD_STARTER', None, 'Jane@example.org', key_lines)
        assert hashlib.sha256(json.dumps(parts).encode()).hexdigest() == old
    assert order_digest_parts('CLOUD_POD_STARTER', None, 'jane@example.org', [KEY])[-1] == [KEY]
