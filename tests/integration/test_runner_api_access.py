# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The customer's SSH keys through runner_api's HTTP API, against a real PostgreSQL (issue 12, part 1).

- ``POST /order`` with ``ssh_public_keys``: every bad list is a 422 naming each offending entry by
  its index, writing no row; a private key pasted in any shape never comes back (response, log).
- The keys are part of the order: stored normalised, part of the Idempotency-Key's digest.
- ``PUT /{id}/ssh-keys``: 202 with the SET_SSH_KEYS task and Location, 404 for another customer's
  pod, 409 while the pod is not ACTIVE or another operation is open (not for a waiting HTTPS
  retry), 422 as for the order, the wanted keys and the task written in one transaction.
- The pod detail shows ``ssh`` and ``https``.

Keys are made by ssh-keygen for each run (no key material in the repository).
"""

import json
import logging
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from test_runner_api import ALICE, BOB, api, database_url  # noqa: E402,F401  pylint: disable=unused-import


class Keys(object):
    """Key pairs made with ssh-keygen: ``public(name)`` the .pub line, ``private(name)`` the private key."""

    def __init__(self, directory):
        self.directory = directory

    def make(self, name, kind, bits=None, comment='jane@laptop', private_format=None):
        path = os.path.join(str(self.directory), name)
        command = ['ssh-keygen', '-q', '-t', kind, '-N', '', '-C', comment, '-f', path]
        if bits:
            command[4:4] = ['-b', str(bits)]
        if private_format:
            command += ['-m', private_format]
        subprocess.run(command, check=True, capture_output=True)
        return self

    def public(self, name):
        with open(os.path.join(str(self.directory), name + '.pub')) as handle:
            return handle.read().strip()

    def private(self, name):
        with open(os.path.join(str(self.directory), name)) as handle:
            return handle.read()


@pytest.fixture(scope='module')
def keys(tmp_path_factory):
    made = Keys(tmp_path_factory.mktemp('keys'))
    made.make('ed', 'ed25519').make('ed2', 'ed25519', comment='')
    made.make('ecdsa', 'ecdsa', bits=384).make('rsa3072', 'rsa', bits=3072).make('rsa2048', 'rsa', bits=2048)
    made.make('pem', 'rsa', bits=3072, private_format='PEM')
    for index in range(11):
        made.make('many%d' % index, 'ed25519', comment='key %d' % index)
    return made


def private_fragments(text):
    """The private key's text and pieces of its base64 body (a piece of it echoed is a leak too)."""
    body = [line for line in text.splitlines() if line and not line.startswith('-----')]
    return [text.strip()] + [line[:24] for line in body]


def assert_never_echoed(text, *secrets):
    for secret in secrets:
        for fragment in private_fragments(secret):
            assert fragment not in text, 'a piece of the private key came back: %r' % fragment[:12]


def count(api):
    return api.rows()


def subscription(api, pod_id):
    with api.repository.pool.connection() as connection:
        return connection.execute('SELECT * FROM cloud_pod_subscriptions WHERE id = %s', (pod_id,)).fetchone()


def make_active(api, pod_id):
    api.set_status(pod_id, 'ACTIVE')


# ---------------------------------------------------------------- the order

def test_an_order_with_keys_stores_them_normalised_and_shows_them(api, keys):
    key_type, blob, comment = keys.public('ed').split()
    sloppy = '  %s %s    %s  ' % (key_type, blob, comment)  # spaces around it and before the comment
    response = api.order('alice', ssh_public_keys=[sloppy, keys.public('ecdsa'), keys.public('rsa3072')])
    assert response.status_code == 202, response.get_json()
    pod_id = response.get_json()['id']
    row = subscription(api, pod_id)
    assert row['ssh_public_keys'] == [keys.public('ed'), keys.public('ecdsa'), keys.public('rsa3072')]
    detail = api.call('GET', '/api/cloud-pods/' + pod_id, 'alice').get_json()
    fingerprints = subprocess.run(['ssh-keygen', '-l', '-E', 'sha256', '-f', str(keys.directory / 'ed.pub')],
                                  check=True, capture_output=True, text=True).stdout.split()[1]
    assert detail['ssh']['keys'][0] == {'type': 'ssh-ed25519', 'fingerprint': fingerprints, 'comment': 'jane@laptop'}
    assert [key['type'] for key in detail['ssh']['keys']] == ['ssh-ed25519', 'ecdsa-sha2-nistp384', 'ssh-rsa']
    assert detail['ssh']['host_key_fingerprints'] == [] and detail['ssh']['port'] is None
    assert detail['https']['status'] == 'none'
    # Without keys: an empty list, and the playbook gets [] (tests/integration/test_runner_api_retry.py).
    plain = api.order('alice').get_json()['id']
    assert subscription(api, plain)['ssh_public_keys'] == []


def bad_lists(keys):
    ed, ecdsa, rsa = keys.public('ed'), keys.public('ecdsa'), keys.public('rsa3072')
    many = [keys.public('many%d' % index) for index in range(11)]
    openssh_private, pem_private = keys.private('ed'), keys.private('pem')
    key_type, blob = ed.split()[:2]
    return [
        # (case, ssh_public_keys, the indexes the errors must name (None: the list itself))
        ('malformed', [ed, 'ssh-ed25519 not-base64!'], [1]),
        ('not a key type', ['hello world'], [0]),
        ('truncated key data', [key_type + ' ' + blob[:40]], [0]),
        ('RSA of 2048 bits', [ed, keys.public('rsa2048')], [1]),
        ('command= option', ['command="rm -rf /" ' + ed], [0]),
        ('from= option', [rsa, 'from="10.0.0.0/8" ' + ecdsa], [1]),
        ('no-pty option', ['no-pty ' + ecdsa], [0]),
        ('duplicate', [ed, rsa, ed], [2]),
        ('duplicate with another comment', [ed, key_type + ' ' + blob + ' other@host'], [1]),
        ('private key (OpenSSH)', [ed, openssh_private], [1]),
        ('private key (PEM)', [pem_private], [0]),
        ('more than 10', many, [None]),
        ('two bad entries', ['nope', ed, 'command="x" ' + rsa], [0, 2]),
        ('not a string', [ed, 42], [1]),
        ('not a list', ed, [None]),
        ('empty entry', [''], [0]),
        ('two keys in one entry', [ed + '\n' + rsa], [0]),
    ]


def test_every_bad_key_list_is_a_422_naming_each_entry_and_writes_nothing(api, keys):
    for case, value, indexes in bad_lists(keys):
        before = count(api)
        response = api.order('alice', ssh_public_keys=value)
        body = response.get_json()
        assert response.status_code == 422, (case, body)
        assert body['type'].endswith('/invalid-order'), case
        named = [error for error in body['errors'] if error.startswith('ssh_public_keys')]
        expected = ['ssh_public_keys' if index is None else 'ssh_public_keys[%d]' % index for index in indexes]
        assert [error.split(':', 1)[0] for error in named] == expected, (case, named)
        assert count(api) == before, case
        assert_never_echoed(json.dumps(body), keys.private('ed'), keys.private('pem'))
        # Nothing of an entry comes back: no key data, no long piece of its text.
        for entry in (value if isinstance(value, list) else [value]):
            for part in (entry.split() if isinstance(entry, str) else []):
                if len(part) >= 20:
                    assert part[:20] not in response.get_data(as_text=True), case


def test_a_private_key_in_any_shape_never_comes_back_nor_reaches_the_log(api, keys, caplog):
    private = keys.private('ed')
    pem = keys.private('pem')
    ed = keys.public('ed')
    shapes = [
        private, [private], [[private]], [{'key': private}], {'key': private}, [private] * 11,
        [ed] * 10 + [private], [private, private], [pem.strip()], [' ' + private], [private.replace('\n', ' ')],
        [private * 3], [private[:100]], [private.split('\n', 1)[1]],  # without its BEGIN line
        [private.split('\n', 1)[1].replace('\n', '')],  # its base64 alone, on one line
    ]
    caplog.set_level(logging.DEBUG)
    for index, shape in enumerate(shapes):
        before = count(api)
        for response in (api.order('alice', ssh_public_keys=shape),
                         api.order('alice', ssh_public_keys=shape, domain='x' * 300)):  # besides other errors
            # Past the body limit (this module's API takes 4096 bytes) the answer is 413, before any check.
            too_large = len(json.dumps({'ssh_public_keys': shape})) > 3800
            assert response.status_code == (413 if too_large else 422), (index, response.get_json())
            assert_never_echoed(response.get_data(as_text=True), private, pem)
        assert count(api) == before, index
    # Pasted anywhere else in the body (a field name, another field), jsonschema's message would quote it.
    for body in ({private: 1}, {'domain': private}, {'plan_code': private}, {'customer_email': [private]},
                 {'domain': private[:200]}, {'customer_email': private[:200]}):
        payload = dict({'plan_code': 'CLOUD_POD_STARTER', 'customer_email': 'alice@example.com'}, **body)
        before = count(api)
        response = api.call('POST', '/api/cloud-pods/order', 'alice', json=payload)
        assert response.status_code == 422, body
        assert_never_echoed(response.get_data(as_text=True), private)
        assert count(api) == before
    pod = api.order('alice').get_json()['id']
    make_active(api, pod)
    for body in ({private: []}, {'ssh_public_keys': [], private: 1}):
        response = api.call('PUT', '/api/cloud-pods/%s/ssh-keys' % pod, 'alice', json=body)
        assert response.status_code == 422
        assert_never_echoed(response.get_data(as_text=True), private)
    for shape in shapes:
        response = api.call('PUT', '/api/cloud-pods/%s/ssh-keys' % pod, 'alice', json={'ssh_public_keys': shape})
        assert response.status_code in (413, 422)
        assert_never_echoed(response.get_data(as_text=True), private, pem)
    assert subscription(api, pod)['ssh_public_keys'] == []
    assert_never_echoed(caplog.text, private, pem)


def test_a_pasted_private_key_is_called_what_it_is(api, keys):
    body = api.order('alice', ssh_public_keys=[keys.private('ed')]).get_json()
    assert 'PRIVATE key' in body['errors'][0] and body['errors'][0].startswith('ssh_public_keys[0]: ')


def test_the_keys_are_part_of_the_idempotent_order(api, keys):
    first = api.order('alice', key='keys-1', ssh_public_keys=[keys.public('ed')])
    assert first.status_code == 202
    before = count(api)
    # The same order, the key written with other spacing: the same normalised order, the same pod.
    again = api.order('alice', key='keys-1', ssh_public_keys=[keys.public('ed').replace(' jane', '   jane') + ' '])
    assert again.status_code == 200 and again.get_json()['id'] == first.get_json()['id']
    for other in ([keys.public('ecdsa')], [], [keys.public('ed'), keys.public('ecdsa')]):
        refused = api.order('alice', key='keys-1', ssh_public_keys=other)
        assert refused.status_code == 422 and refused.get_json()['type'].endswith('/idempotency-key-reused'), other
    assert api.order('alice', key='keys-1').status_code == 422  # the keys left out: another order
    assert count(api) == before
    # An order without keys keeps the digest it had before keys existed ([] is the same as none).
    plain = api.order('alice', key='keys-2')
    assert api.order('alice', key='keys-2', ssh_public_keys=[]).get_json()['id'] == plain.get_json()['id']


# ---------------------------------------------------------------- PUT /{id}/ssh-keys

def put_keys(api, pod_id, who='alice', customer=None, **body):
    return api.call('PUT', '/api/cloud-pods/%s/ssh-keys' % pod_id, who, customer, json=body)


def tasks_of(api, pod_id):
    with api.repository.pool.connection() as connection:
        return connection.execute('SELECT task_type, status FROM cloud_pod_provisioning_tasks '
                                  'WHERE subscription_id = %s ORDER BY id', (pod_id,)).fetchall()


def test_replacing_the_keys_queues_set_ssh_keys(api, keys):
    pod = api.order('alice', ssh_public_keys=[keys.public('ed')]).get_json()['id']
    assert put_keys(api, pod, ssh_public_keys=[keys.public('ecdsa')]).status_code == 409  # still PROVISIONING
    assert subscription(api, pod)['ssh_public_keys'] == [keys.public('ed')]
    make_active(api, pod)
    response = put_keys(api, pod, ssh_public_keys=[keys.public('ecdsa'), keys.public('rsa3072')])
    assert response.status_code == 202, response.get_json()
    task = response.get_json()
    assert (task['type'], task['status'], task['pod_id']) == ('SET_SSH_KEYS', 'PENDING', pod)
    assert response.headers['Location'] == '/api/cloud-pods/' + pod
    assert subscription(api, pod)['ssh_public_keys'] == [keys.public('ecdsa'), keys.public('rsa3072')]
    detail = api.call('GET', '/api/cloud-pods/' + pod, 'alice').get_json()
    assert detail['progress']['operation'] == 'SET_SSH_KEYS'
    assert detail['progress']['operation_status'] == 'PENDING'
    # One operation at a time: a second change waits for the first (409), nothing written.
    before = count(api)
    assert put_keys(api, pod, ssh_public_keys=[]).status_code == 409
    assert count(api) == before
    assert subscription(api, pod)['ssh_public_keys'] == [keys.public('ecdsa'), keys.public('rsa3072')]
    assert [t['task_type'] for t in tasks_of(api, pod)][-1] == 'SET_SSH_KEYS'


def test_an_empty_list_means_no_key_login(api, keys):
    pod = api.order('alice', ssh_public_keys=[keys.public('ed')]).get_json()['id']
    make_active(api, pod)
    assert put_keys(api, pod, ssh_public_keys=[]).status_code == 202
    assert subscription(api, pod)['ssh_public_keys'] == []


def test_another_customers_pod_is_404_and_the_service_token_acts_for_its_customer(api, keys):
    pod = api.order('bob', customer_email='bob@example.com').get_json()['id']
    make_active(api, pod)
    other = put_keys(api, pod, 'alice', ssh_public_keys=[keys.public('ed')])
    missing = put_keys(api, '00000000-0000-4000-8000-000000000000', 'alice', ssh_public_keys=[keys.public('ed')])
    assert other.status_code == missing.status_code == 404 and other.get_json() == missing.get_json()
    assert put_keys(api, 'not-a-uuid', 'alice', ssh_public_keys=[]).status_code == 404
    assert put_keys(api, pod, 'service', ALICE, ssh_public_keys=[keys.public('ed')]).status_code == 404
    assert put_keys(api, pod, 'service', ssh_public_keys=[]).status_code == 400  # no X-Customer-Id
    assert subscription(api, pod)['ssh_public_keys'] == []
    assert put_keys(api, pod, 'service', BOB, ssh_public_keys=[keys.public('ed')]).status_code == 202
    assert subscription(api, pod)['ssh_public_keys'] == [keys.public('ed')]


def test_bad_key_lists_for_an_existing_pod_are_422_and_change_nothing(api, keys):
    pod = api.order('alice', ssh_public_keys=[keys.public('ed')]).get_json()['id']
    make_active(api, pod)
    for case, value, indexes in bad_lists(keys):
        before = count(api)
        response = put_keys(api, pod, ssh_public_keys=value)
        body = response.get_json()
        assert response.status_code == 422, (case, body)
        expected = ['ssh_public_keys' if index is None else 'ssh_public_keys[%d]' % index for index in indexes]
        assert [error.split(':', 1)[0] for error in body['errors']] == expected, (case, body['errors'])
        assert count(api) == before and subscription(api, pod)['ssh_public_keys'] == [keys.public('ed')], case
    for body in ({}, {'ssh_public_keys': [], 'extra': 1}, {'keys': []}):
        response = api.call('PUT', '/api/cloud-pods/%s/ssh-keys' % pod, 'alice', json=body)
        assert response.status_code == 422, body
    response = api.call('PUT', '/api/cloud-pods/%s/ssh-keys' % pod, 'alice', data='ssh_public_keys=x',
                        content_type='application/x-www-form-urlencoded')
    assert response.status_code == 415
    assert [t['task_type'] for t in tasks_of(api, pod)] == ['CREATE_CONTAINER']


def test_a_waiting_https_retry_never_makes_an_operation_409(api, keys):
    pod = api.order('alice').get_json()['id']
    make_active(api, pod)
    with api.repository.pool.connection() as connection:
        connection.execute("UPDATE cloud_pod_subscriptions SET https_status = 'pending', https_reason = 'CA down', "
                           "https_pending_runs = 1 WHERE id = %s", (pod,))
        connection.execute("INSERT INTO cloud_pod_provisioning_tasks (subscription_id, task_type, max_attempts, run_at) "
                           "VALUES (%s, 'ISSUE_HTTPS', 1, now() + interval '1 hour')", (pod,))
    detail = api.call('GET', '/api/cloud-pods/' + pod, 'alice').get_json()
    assert detail['https']['status'] == 'pending' and detail['https']['reason'] == 'CA down'
    assert detail['https']['next_attempt_at'] is not None
    assert detail['progress']['operation'] == 'CREATE_CONTAINER'  # the retry is not "the pod's operation"
    assert put_keys(api, pod, ssh_public_keys=[keys.public('ed')]).status_code == 202
    api.set_status(pod, 'ACTIVE')  # closes the open tasks, as a worker would have
    with api.repository.pool.connection() as connection:
        connection.execute("INSERT INTO cloud_pod_provisioning_tasks (subscription_id, task_type, max_attempts) "
                           "VALUES (%s, 'ISSUE_HTTPS', 1)", (pod,))
    assert api.call('POST', '/api/cloud-pods/admin/%s/restart' % pod, 'admin').status_code == 202


def test_the_admin_may_replace_any_pods_keys(api, keys):
    pod = api.order('bob', customer_email='bob@example.com').get_json()['id']
    make_active(api, pod)
    assert put_keys(api, pod, 'admin', ssh_public_keys=[keys.public('rsa3072')]).status_code == 202
    assert put_keys(api, pod, 'admin', ALICE, ssh_public_keys=[]).status_code == 404  # acting for another customer
