# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    # Attributes of the modules that only read (the _info modules), with ansible.builtin.action_common_attributes.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: Reads only; runs the same in check mode.
  diff_mode:
    support: N/A
    details: Changes nothing, so there is no diff.
  platform:
    platforms: all
"""

    # Attributes of the modules that run as action plugins on the host's connection (no module
    # is transferred), with ansible.builtin.action_common_attributes and its flow fragment.
    ACTION_PLUGIN = r"""
options: {}
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  platform:
    platforms: posix
"""

    # The API modules that an action of the same name runs inside the controller's worker
    # (plugin_utils/in_process.py), with ansible.builtin.action_common_attributes.
    IN_PROCESS = r"""
options: {}
notes:
  - On a local connection with the Python that runs Ansible (C(localhost)), the action of the same name runs this
    module inside Ansible's worker, without starting a module process (about 0.8 s less per task). With another
    connection or Python interpreter, become, async or a task C(environment), it runs as a module process. Both
    give the same result.
"""
