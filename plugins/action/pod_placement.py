# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action of mpanel.cloudpods.pod_placement: the module, run inside the controller's worker when its target is the
controller (see plugin_utils/in_process.py), else as a module."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.mpanel.cloudpods.plugins.modules import pod_placement
from ansible_collections.mpanel.cloudpods.plugins.plugin_utils.in_process import ModuleAction


class ActionModule(ModuleAction):

    MODULE = pod_placement
