# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the Proxmox errors: secrets kept out, messages, transient failures, privileges (_proxmox_errors.py)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.mpanel.cloudpods.plugins.module_utils import _proxmox_errors as errors

SECRET = '5f0b1d9e-0c1a-4a6e-9d55-7d3c2b1a0f99'
TOKEN_ID = 'mpanel-api@pve!mpanel-token'


# --------------------------------------------------------------------------
# secrets
# --------------------------------------------------------------------------

def test_scrub_secrets():
    text = 'boom Authorization: PVEAPIToken=%s=%s and again %s' % (TOKEN_ID, SECRET, SECRET)
    scrubbed = errors.scrub_secrets(text, [SECRET])
    assert SECRET not in scrubbed
    assert 'PVEAPIToken=%s=********' % TOKEN_ID in scrubbed
    # the header form is scrubbed even when the secret is not known
    assert SECRET not in errors.scrub_secrets('PVEAPIToken=a@b!c=%s' % SECRET)
    assert errors.scrub_secrets(None, [SECRET]) is None
    assert errors.scrub_secrets('nothing here', [None, '']) == 'nothing here'


def test_auth_error_names_token_not_secret():
    msg = errors.describe_api_error(401, 'authentication failure', 'GET', 'cluster/resources', TOKEN_ID)
    assert 'authentication failed for token %s' % TOKEN_ID in msg
    assert SECRET not in msg


def test_permission_error_names_path_and_privilege():
    msg = errors.describe_api_error(403, 'Permission check failed (/vms/101, VM.Allocate)', 'POST',
                                    'nodes/pve/lxc/9000/clone', TOKEN_ID)
    assert 'Permission check failed (/vms/101, VM.Allocate)' in msg
    assert 'lacks privilege VM.Allocate on /vms/101' in msg


@pytest.mark.parametrize('acl_path', ['/sdn/zones/localnetwork/vmbr0', '/sdn/zones/localnetwork/vmbr0/10'])
def test_missing_sdn_use_says_what_to_grant_on_the_bridge(acl_path):
    """PVE 8's check_bridge_access: SDN.Use on the bridge (or bridge/VLAN); an ACL on the bridge covers both."""
    reason = 'Permission check failed (%s, SDN.Use)' % acl_path
    msg = errors.describe_api_error(403, reason, 'POST', 'nodes/pve/lxc/9000/clone', TOKEN_ID)
    assert msg == (
        'Proxmox API permission denied for token mpanel-api@pve!mpanel-token on POST /nodes/pve/lxc/9000/clone: '
        'Permission check failed (%s, SDN.Use). The token lacks privilege SDN.Use on %s: Proxmox VE 8 checks '
        'SDN.Use on the bridge of every network device of the container, and the CloudPodsProv role does not '
        'grant it. Grant it on the bridge to the token\'s user, e.g. "pveum role add CloudPodsNet --privs SDN.Use" '
        'and "pveum acl modify /sdn/zones/localnetwork/vmbr0 --roles CloudPodsNet --users mpanel-api@pve" '
        '(add "--tokens mpanel-api@pve!mpanel-token" if the token was created with privilege separation)'
        % (acl_path, acl_path))


def test_other_privileges_keep_the_general_grant_hint():
    msg = errors.describe_api_error(403, 'Permission check failed (/vms/101, VM.Allocate)', 'POST',
                                    'nodes/pve/lxc/9000/clone', TOKEN_ID)
    assert 'SDN' not in msg and 'pveum' not in msg
    assert msg.endswith("grant it on that path (or a parent) to the token's user, and to the token itself if it "
                        "was created with privilege separation")


def test_parameter_error_lists_parameters():
    msg = errors.describe_api_error(400, 'Parameter verification failed.', 'PUT', 'nodes/pve/lxc/101/config',
                                    TOKEN_ID, errors={'onboot': "type check ('boolean') failed - got 'True'"})
    assert "onboot: type check ('boolean') failed - got 'True'" in msg


# --------------------------------------------------------------------------
# retry classification
# --------------------------------------------------------------------------

@pytest.mark.parametrize('status, message, reason', [
    (500, 'CT is locked (disk)', 'locked'),
    (500, 'CT is locked (create)', 'locked'),
    (500, 'VM is locked (backup)', 'locked'),
    (500, 'unable to clone: CT is locked (disk)\n', 'locked'),
    (500, "can't lock file '/run/lock/lxc/pve-config-101.lock' - got timeout", 'lock_timeout'),
    (500, "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout", 'lock_timeout'),
    (500, "CT 101 already exists on node 'pve'", 'vmid_taken'),
    (500, "unable to create CT 101 - CT 101 already exists on node 'pve'", 'vmid_taken'),
    (596, 'Connection timed out', 'http_596'),
    (596, '', 'http_596'),
    (595, 'Connection refused', 'http_595'),
])
def test_classify_transient(status, message, reason):
    assert errors.classify_error(status, message) == reason


@pytest.mark.parametrize('status, message', [
    (400, 'Parameter verification failed.'),
    (401, 'authentication failure'),
    (403, 'Permission check failed (/vms/101, VM.Allocate)'),
    (500, 'Configuration file does not exist'),
    (500, "unable to resize: disk size can only grow"),
    (500, 'CT 101 already running'),
    (500, ''),
    (501, 'Method not implemented'),
    (503, 'Service Unavailable'),
    (None, 'Connection refused'),
    # a lock message under a non-5xx status is not what Proxmox sends under contention
    (400, 'CT is locked (disk)'),
    (403, "CT 101 already exists on node 'pve'"),
])
def test_classify_not_transient(status, message):
    assert errors.classify_error(status, message) is None


def test_retryable_reasons_exclude_vmid_taken():
    assert 'vmid_taken' not in errors.RETRYABLE
    assert set(errors.RETRYABLE) | {'vmid_taken'} == set(errors.RETRY_REASONS)


@pytest.mark.parametrize('method, path, params, expected', [
    ('PUT', 'nodes/pve/lxc/101/config', {'cores': 2, 'net0': 'x', 'tags': 'a'},
     [[('/vms/101', 'VM.Config.CPU')], [('/vms/101', 'VM.Config.Network')], [('/vms/101', 'VM.Config.Options')]]),
    ('DELETE', 'nodes/pve/lxc/101', {}, [[('/vms/101', 'VM.Allocate')]]),
    ('POST', 'nodes/pve/lxc/101/status/start', {}, [[('/vms/101', 'VM.PowerMgmt')]]),
    ('GET', 'cluster/resources', {}, []),
])
def test_required_privileges(method, path, params, expected):
    assert errors.required_privileges(method, path, params) == expected
