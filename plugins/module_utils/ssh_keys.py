# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What a customer's SSH public key may be: the one rule, for runner_api and the playbooks.

A key is ONE line of OpenSSH's public key format, ``<type> <base64 blob> [comment]``, as in a
``.pub`` file: no options (``command="..."``, ``from=...``, ``no-pty``: a line that does not start
with a key type is refused), no control characters. Accepted types: ``ssh-ed25519``,
``ecdsa-sha2-nistp256/384/521``, ``ssh-rsa`` of 3072 bits or more, and the FIDO (security key)
forms of ed25519 and ECDSA P-256 (``sk-ssh-ed25519@openssh.com``,
``sk-ecdsa-sha2-nistp256@openssh.com``). The blob is decoded and must be a well-formed key of the
type the line names. At most ``MAX_KEYS`` keys; the same key twice (comment aside) is refused.

Errors name the entry by its index and never repeat its text: what a customer pastes may be a
private key, which must not come back in a response, a log or an event.

Pure standard library (no Ansible import): runner_api loads this file from the collection.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import base64
import binascii
import hashlib
import re
import struct

MAX_KEYS = 10
MAX_LINE_LENGTH = 8192  # an RSA key of 16384 bits is about 2,800 characters
MIN_RSA_BITS = 3072

ED25519 = 'ssh-ed25519'
RSA = 'ssh-rsa'
ECDSA_CURVES = {
    'ecdsa-sha2-nistp256': ('nistp256', 65),
    'ecdsa-sha2-nistp384': ('nistp384', 97),
    'ecdsa-sha2-nistp521': ('nistp521', 133),
}
SK_ED25519 = 'sk-ssh-ed25519@openssh.com'
SK_ECDSA = 'sk-ecdsa-sha2-nistp256@openssh.com'
KEY_TYPES = (ED25519, RSA) + tuple(sorted(ECDSA_CURVES)) + (SK_ED25519, SK_ECDSA)

_BASE64_RE = re.compile(r'^[A-Za-z0-9+/]+={0,2}\Z')
_CONTROL_RE = re.compile(u'[\x00-\x1f\x7f\u0085\u2028\u2029]')
_PRIVATE_MARKERS = ('PRIVATE KEY', 'PuTTY-User-Key-File', 'BEGIN SSH2 ENCRYPTED', 'OPENSSH PRIVATE')


class InvalidKey(ValueError):
    """One entry is not an acceptable public key; ``index`` is its position (0-based), or None
    when the list itself is wrong (not a list, too many keys)."""

    def __init__(self, index, reason):
        self.index = index
        self.reason = reason
        where = 'ssh_public_keys' if index is None else 'ssh_public_keys[%d]' % index
        super(InvalidKey, self).__init__('%s: %s' % (where, reason))


class PublicKey(object):
    """A checked key: its type, blob, comment, the line to write and its SHA256 fingerprint."""

    def __init__(self, key_type, blob, comment, bits):
        self.key_type = key_type
        self.blob = blob
        self.comment = comment
        self.bits = bits

    @property
    def line(self):
        encoded = base64.b64encode(self.blob).decode('ascii')
        return ' '.join(part for part in (self.key_type, encoded, self.comment) if part)

    @property
    def fingerprint(self):
        """As ``ssh-keygen -l`` prints it: ``SHA256:`` and unpadded base64 of the blob's digest."""
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode('ascii').rstrip('=')
        return 'SHA256:' + digest


def _read_string(blob, offset):
    if offset + 4 > len(blob):
        raise ValueError('truncated')
    (length,) = struct.unpack('>I', blob[offset:offset + 4])
    start = offset + 4
    if length > len(blob) - start:
        raise ValueError('truncated')
    return blob[start:start + length], start + length


def _mpint_bits(value):
    value = value.lstrip(b'\x00')
    if not value:
        return 0
    return (len(value) - 1) * 8 + len(bin(bytearray(value)[0])) - 2


def _check_blob(key_type, blob):
    """The key's size in bits; ValueError with a reason when the blob is not a key of that type."""
    name, offset = _read_string(blob, 0)
    if name != key_type.encode('ascii'):
        raise ValueError('the key data is a %s key, not %s' % (name.decode('ascii', 'replace')[:40], key_type))
    if key_type == RSA:
        exponent, offset = _read_string(blob, offset)
        modulus, offset = _read_string(blob, offset)
        bits = _mpint_bits(modulus)
        if _mpint_bits(exponent) == 0 or bits == 0:
            raise ValueError('not a valid RSA key')
    elif key_type in (ED25519, SK_ED25519):
        point, offset = _read_string(blob, offset)
        if len(point) != 32:
            raise ValueError('not a valid ed25519 key')
        bits = 256
    else:
        curve, length = ECDSA_CURVES.get(key_type, ('nistp256', 65))
        found, offset = _read_string(blob, offset)
        if found != curve.encode('ascii'):
            raise ValueError('the curve does not match the key type')
        point, offset = _read_string(blob, offset)
        if len(point) != length or bytearray(point)[0] != 4:
            raise ValueError('not a valid ECDSA key')
        bits = {'nistp256': 256, 'nistp384': 384, 'nistp521': 521}[curve]
    if key_type in (SK_ED25519, SK_ECDSA):
        application, offset = _read_string(blob, offset)
        if not application:
            raise ValueError('a security key without its application')
    if offset != len(blob):
        raise ValueError('trailing data after the key')
    return bits


def parse(index, text):
    """The ``PublicKey`` of one entry, or ``InvalidKey`` saying why (never quoting the entry)."""
    if not isinstance(text, str):
        raise InvalidKey(index, 'must be a string')
    if any(marker in text for marker in _PRIVATE_MARKERS):
        raise InvalidKey(index, 'this is a PRIVATE key: never send it anywhere; send the public key '
                                '(the .pub file, one line starting with ssh-ed25519, ecdsa-sha2-... or ssh-rsa)')
    if len(text) > MAX_LINE_LENGTH:
        raise InvalidKey(index, 'longer than %d characters' % MAX_LINE_LENGTH)
    line = text.strip(' ')
    if not line:
        raise InvalidKey(index, 'empty')
    if _CONTROL_RE.search(line):
        raise InvalidKey(index, 'must be one line without control characters (one key per entry)')
    parts = line.split(' ')
    key_type = parts[0]
    if key_type not in KEY_TYPES:
        if '=' in key_type or '"' in line.split(' ', 1)[0] or any(p in KEY_TYPES for p in parts[1:]):
            raise InvalidKey(index, 'key options (command=, from=, no-pty, ...) are not accepted: send the key alone')
        if key_type in ('ssh-dss', 'ssh-dsa'):
            raise InvalidKey(index, 'DSA keys are not accepted: use ed25519, ECDSA or RSA of %d bits or more'
                             % MIN_RSA_BITS)
        raise InvalidKey(index, 'not an OpenSSH public key: one line starting with one of %s' % ', '.join(KEY_TYPES))
    if len(parts) < 2 or not parts[1]:
        raise InvalidKey(index, 'the key data (base64) is missing after %s' % key_type)
    encoded = parts[1]
    comment = ' '.join(part for part in parts[2:] if part)
    if not _BASE64_RE.match(encoded):
        raise InvalidKey(index, 'the key data is not base64')
    try:
        blob = base64.b64decode(encoded.encode('ascii'), validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise InvalidKey(index, 'the key data is not base64')
    try:
        bits = _check_blob(key_type, blob)
    except (ValueError, struct.error) as error:
        raise InvalidKey(index, 'the key data is not a valid %s key (%s)' % (key_type, error))
    if key_type == RSA and bits < MIN_RSA_BITS:
        raise InvalidKey(index, 'an RSA key of %d bits: at least %d are needed (or use ed25519)' % (bits, MIN_RSA_BITS))
    return PublicKey(key_type, blob, comment, bits)


def parse_all(entries):
    """The checked keys of a list, in order; ``InvalidKey`` for the first bad entry.

    For every problem at once, use ``check()``.
    """
    keys, errors = check(entries)
    if errors:
        raise errors[0]
    return keys


def check(entries):
    """``(keys, errors)``: the keys that passed and one ``InvalidKey`` per problem, in order."""
    if not isinstance(entries, list):
        return [], [InvalidKey(None, 'must be a list of OpenSSH public keys')]
    errors = []
    if len(entries) > MAX_KEYS:
        errors.append(InvalidKey(None, 'at most %d keys (got %d)' % (MAX_KEYS, len(entries))))
    keys = []
    seen = {}
    for index, entry in enumerate(entries):
        try:
            key = parse(index, entry)
        except InvalidKey as error:
            errors.append(error)
            continue
        if key.blob in seen:
            errors.append(InvalidKey(index, 'the same key as entry %d' % seen[key.blob]))
            continue
        seen[key.blob] = index
        keys.append(key)
    return keys, errors


def authorized_keys(keys):
    """The text of an authorized_keys file holding exactly these keys (one line each, no options)."""
    return ''.join(key.line + '\n' for key in keys)
