# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the proxmox_node_certificate module file: the fingerprint it compares and the key's no_log."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.mpanel.cloudpods.plugins.modules import proxmox_node_certificate as pnc
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import ProxmoxError


def _self_signed(name):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert


def test_fingerprint_of_the_first_certificate_in_pves_notation():
    leaf, issuer = _self_signed('leaf'), _self_signed('issuer')
    chain = ('Bag Attributes\n' + leaf.public_bytes(serialization.Encoding.PEM).decode()
             + issuer.public_bytes(serialization.Encoding.PEM).decode())
    digest = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    expected = ':'.join(digest[i:i + 2] for i in range(0, 64, 2))
    assert pnc.first_certificate_fingerprint(chain) == expected


@pytest.mark.parametrize('text', ['', 'not a certificate', '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----'])
def test_no_certificate_is_a_clear_error(text):
    with pytest.raises(ProxmoxError, match='no PEM certificate'):
        pnc.first_certificate_fingerprint(text)


def test_the_key_is_no_log_and_required():
    spec = pnc.argument_spec()
    assert spec['private_key']['no_log'] is True and spec['private_key']['required'] is True
    assert spec['certificate']['required'] is True
