# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""runner_api's own bearer tokens expire, and a rotation keeps the old one for an overlap (issue 14, part 6):
``cloudpods token create --expires-in``, ``token rotate <id> --overlap``, ``token list`` with the expiry,
and the API's 401 ``token-expired`` (problem+json, never the secret). The commands run as processes
against a database of the shared lab's PostgreSQL; the API runs in process on the same database."""

import datetime
import json
import os
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from runner_api.app import create_app  # noqa: E402
from runner_api.cli import parse_duration  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import OpenApiChecker, scratch_database, worker_environment  # noqa: E402
from test_cloudpods_cli import cloudpods, ok  # noqa: E402

PLANS_FILE = os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml')
MY_PODS = '/api/cloud-pods/my-pods'


class Tokens(object):
    def __init__(self, env, client):
        self.env = env
        self.client = client
        self.checker = OpenApiChecker()

    def run(self, *argv):
        return cloudpods(self.env, 'token', *argv)

    def create(self, *argv):
        return json.loads(ok(self.run('create', '--role', 'service', '--json', *argv)))

    def rotate(self, token_id, *argv):
        return json.loads(ok(self.run('rotate', str(token_id), '--json', *argv)))

    def call(self, token):
        reply = self.client.get(MY_PODS, headers={'Authorization': 'Bearer ' + token, 'X-Customer-Id': 'cust-rot'})
        self.checker.check('GET', MY_PODS, reply.status_code, reply.content_type, reply.get_json())
        return reply

    def listed(self, name):
        lines = [line.split('\t') for line in ok(self.run('list')).splitlines()[1:]]
        return dict((int(line[0]), line) for line in lines if line[-1] == name)


@pytest.fixture(scope='module')
def tokens(lab_env):
    with scratch_database(lab_env['DATABASE_URL']) as url:
        app = create_app(Settings.from_env({'DATABASE_URL': url, 'CLOUDPODS_PLANS_FILE': PLANS_FILE}))
        yield Tokens(worker_environment(lab_env, url), app.test_client())


def _expiry(text):
    return datetime.datetime.fromisoformat(text)


def test_durations():
    assert [parse_duration(text) for text in ('90d', '12h', '30m', '45s', '2w', '10', '1.5h')] == [
        90 * 86400, 12 * 3600, 1800, 45, 14 * 86400, 10, 5400]
    for bad in ('', 'soon', '-1h', '1y', '1 h', '1h30m'):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_create_with_an_expiry_and_list_it(tokens):
    before = datetime.datetime.now(datetime.timezone.utc)
    made = tokens.create('--name', 'expiring', '--expires-in', '90d')
    after = datetime.datetime.now(datetime.timezone.utc)
    expires = _expiry(made['expires_at'])
    assert before + datetime.timedelta(days=90, seconds=-1) <= expires <= after + datetime.timedelta(days=90, seconds=1)
    assert tokens.call(made['token']).status_code == 200
    [line] = tokens.listed('expiring').values()
    assert line[3] == 'active' and _expiry(line[4]) == expires.replace(microsecond=0)
    assert made['token'] not in ok(tokens.run('list'))
    # Without --expires-in a token never expires.
    forever = tokens.create('--name', 'forever')
    assert forever['expires_at'] == 'never' and tokens.listed('forever')[forever['id']][4] == 'never'


def test_bad_durations_are_refused_and_write_nothing(tokens):
    for argv in (('create', '--name', 'bad', '--role', 'admin', '--expires-in', 'soon'),
                 ('rotate', '1', '--overlap', '5 minutes')):
        result = tokens.run(*argv)
        assert result.returncode == 2 and 'not a duration' in result.stderr, result.stderr
    assert tokens.listed('bad') == {}


def test_an_expired_token_gets_401_saying_so(tokens):
    made = tokens.create('--name', 'short', '--expires-in', '1s')
    deadline = time.monotonic() + 60
    reply = tokens.call(made['token'])
    while reply.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        reply = tokens.call(made['token'])
    body = reply.get_json()
    assert reply.status_code == 401 and reply.content_type == 'application/problem+json'
    assert body['type'].endswith('/token-expired') and 'expired at' in body['detail']
    assert _expiry(body['expired_at']) == _expiry(made['expires_at'])
    assert made['token'] not in reply.get_data(as_text=True)
    assert reply.headers['WWW-Authenticate'].startswith('Bearer')
    assert tokens.listed('short')[made['id']][3] == 'expired'
    # An unknown token still gets the plain answer (an expired one is told apart only by its own secret).
    unknown = tokens.call(made['token'][:-4] + 'AAAA').get_json()
    assert unknown['type'].endswith('/unauthorized')
    # An expired token cannot be rotated: its successor has to be made anew.
    result = tokens.run('rotate', str(made['id']), '--overlap', '1h')
    assert result.returncode == 1 and 'no live token with id %s' % made['id'] in result.stderr


def test_rotate_prints_the_successor_once_and_keeps_the_old_token_for_the_overlap(tokens):
    old = tokens.create('--name', 'mpanel-rot', '--expires-in', '30d')
    before = datetime.datetime.now(datetime.timezone.utc)
    result = tokens.run('rotate', str(old['id']), '--overlap', '1h')
    after = datetime.datetime.now(datetime.timezone.utc)
    assert result.returncode == 0, result.stderr
    new_token = result.stdout.strip()
    assert new_token.startswith('cpt_') and new_token != old['token'] and '\n' not in new_token
    assert new_token not in result.stderr and old['token'] not in result.stdout + result.stderr
    assert 'token %s stays valid until' % old['id'] in result.stderr
    listed = tokens.listed('mpanel-rot')
    [new_id] = [token_id for token_id in listed if token_id != old['id']]
    # The successor has the old token's name, role and lifetime (30 days from now).
    assert listed[new_id][1:4] == ['service', '-', 'active']
    assert _expiry(listed[new_id][4]) >= (before + datetime.timedelta(days=30, seconds=-2)).replace(microsecond=0)
    # The old one: replaced, valid until the end of the overlap (an hour from the rotation).
    assert listed[old['id']][3] == 'overlap (replaced by %s)' % new_id
    overlap_end = _expiry(listed[old['id']][4])
    assert (before + datetime.timedelta(hours=1, seconds=-1)).replace(microsecond=0) <= overlap_end
    assert overlap_end <= after + datetime.timedelta(hours=1, seconds=1)
    # During the overlap both work: a client that still holds the old token goes on.
    assert tokens.call(old['token']).status_code == 200 and tokens.call(new_token).status_code == 200
    # A token already rotated is not rotated twice (its successor is the one to rotate).
    again = tokens.run('rotate', str(old['id']), '--overlap', '1h')
    assert again.returncode == 1 and 'no live token' in again.stderr


def test_after_the_overlap_the_old_token_is_refused(tokens):
    old = tokens.create('--name', 'overlap-short')
    new = tokens.rotate(old['id'], '--overlap', '1s')
    assert new['expires_at'] == 'never'  # the old token never expired, nor does its successor
    deadline = time.monotonic() + 60
    while tokens.call(old['token']).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    refused = tokens.call(old['token'])
    assert refused.status_code == 401 and refused.get_json()['type'].endswith('/token-expired')
    assert old['token'] not in refused.get_data(as_text=True) and new['token'] not in refused.get_data(as_text=True)
    listed = tokens.listed('overlap-short')
    assert listed[old['id']][3] == 'expired' and _expiry(refused.get_json()['expired_at']) == _expiry(listed[old['id']][4])
    assert tokens.call(new['token']).status_code == 200


def test_a_long_overlap_keeps_the_old_token_and_never_extends_it(tokens):
    old = tokens.create('--name', 'overlap-long', '--expires-in', '1h')
    new = tokens.rotate(old['id'], '--overlap', '7d', '--expires-in', '12h')
    assert tokens.call(old['token']).status_code == 200 and tokens.call(new['token']).status_code == 200
    # The overlap never makes the old token live longer than it would have.
    assert _expiry(tokens.listed('overlap-long')[old['id']][4]) == _expiry(old['expires_at']).replace(microsecond=0)
    assert _expiry(new['expires_at']) - _expiry(old['expires_at']) > datetime.timedelta(hours=10)
    # Revoking the successor does not bring anything back; rotating with --overlap 0 refuses at once.
    now = tokens.rotate(new['id'], '--overlap', '0')
    assert tokens.call(new['token']).status_code == 401 and tokens.call(now['token']).status_code == 200
