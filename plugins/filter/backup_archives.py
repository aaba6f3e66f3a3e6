# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filter mpanel.cloudpods.backup_archives: the vzdump CT archives that ansible.builtin.find found in
pods' backup directories, as the entries the playbooks report ({volid, name, ctime, size, kind}), in
one pass (a loop of set_fact per archive costs a task per archive and grows a list each time).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import posixpath
import re

from ansible.errors import AnsibleFilterError

# vzdump's CT archive names: vzdump-lxc-<vmid>-<YYYY_MM_DD-hh_mm_ss>.tar[.zst|.gz|.lzo]
ARCHIVE_NAME = re.compile(r'vzdump-lxc-[0-9]+-[0-9]{4}_[0-9]{2}_[0-9]{2}-[0-9]{2}_[0-9]{2}_[0-9]{2}\.tar(\.(zst|gz|lzo))?\Z')


def _entry(found, manual):
    path = str(found['path'])
    return {'volid': path, 'name': posixpath.basename(path),
            'ctime': datetime.datetime.fromtimestamp(int(found['mtime']), datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
            'size': int(found['size']),
            'kind': 'manual' if path + '.notes' in manual else 'scheduled'}


def backup_archives(files, manual=None, root=None, pod_pattern=None):
    """``files``: ansible.builtin.find's ``files``; ``manual``: its ``files`` for the notes files that mark
    manual backups. Without ``root``: the list of entries, newest first (one pod's directory). With
    ``root``: {<pod>: [entries, newest first]} for the archives in ``<root>/<pod>/`` whose directory
    name matches ``pod_pattern`` (a regular expression); anything else is left out."""
    if not isinstance(files, (list, tuple)):
        raise AnsibleFilterError('backup_archives: the input must be the files list of ansible.builtin.find')
    try:
        manual_paths = set(str(item['path']) for item in manual or [])
        entries = [_entry(item, manual_paths) for item in files if ARCHIVE_NAME.match(posixpath.basename(str(item['path'])))]
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError('backup_archives: a found file without path, mtime or size (%s)' % type(exc).__name__)
    entries.sort(key=lambda entry: entry['name'], reverse=True)
    if root is None:
        return entries
    base = posixpath.normpath(str(root))
    pattern = re.compile(str(pod_pattern)) if pod_pattern else None
    catalog = {}
    for entry in entries:
        directory = posixpath.dirname(entry['volid'])
        pod = posixpath.basename(directory)
        if posixpath.dirname(directory) != base or (pattern is not None and not pattern.match(pod)):
            continue
        catalog.setdefault(pod, []).append(entry)
    return catalog


class FilterModule(object):
    def filters(self):
        return {'backup_archives': backup_archives}
