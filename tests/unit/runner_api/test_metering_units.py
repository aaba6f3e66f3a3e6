# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 16's counting rules without a database: how a reading of PVE's counters adds to the month
(first reading, same run, wrap, restart, stopped CT), what /cluster/resources gives, the plans' quotas."""

import os
import sys
from datetime import datetime, timedelta, timezone

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from runner_api.metering import WRAP, month_of, readings, count  # noqa: E402
from runner_api.plans import PlanCatalogue, transfer_quota_bytes  # noqa: E402

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
START = T0 - timedelta(hours=5)


def ct(vmid=101, name='shop', status='running', netin=0, netout=0, uptime=18000, **extra):
    """A /cluster/resources CT entry as PVE 8 writes it."""
    entry = {'id': 'lxc/%d' % vmid, 'type': 'lxc', 'vmid': vmid, 'node': 'pve', 'name': name, 'status': status,
             'template': 0, 'maxcpu': 1, 'maxmem': 1 << 30, 'maxdisk': 2 << 30, 'mem': 1 << 27, 'disk': 0,
             'cpu': 0.01, 'uptime': uptime if status == 'running' else 0, 'netin': netin, 'netout': netout,
             'diskread': 0, 'diskwrite': 0}
    entry.update(extra)
    return entry


def reading(**kwargs):
    return readings([ct(**kwargs)], T0)[0][kwargs.get('vmid', 101)]


def stored(netin, netout, started_at=START):
    return {'netin': netin, 'netout': netout, 'started_at': started_at}


def test_a_first_reading_is_only_the_starting_point():
    counted = count(None, reading(netin=5000, netout=7000))
    assert (counted.bytes_in, counted.bytes_out, counted.restarted) == (0, 0, False)
    assert (counted.netin, counted.netout, counted.started_at) == (5000, 7000, START)


def test_the_same_run_counts_the_difference():
    counted = count(stored(5000, 7000), reading(netin=6500, netout=10000))
    assert (counted.bytes_in, counted.bytes_out, counted.restarted) == (1500, 3000, False)


def test_uptime_jitter_of_a_few_seconds_is_the_same_run():
    # /cluster/resources lags and uptime has a one-second resolution: a start time read 10 s later is not a restart.
    counted = count(stored(5000, 7000, START - timedelta(seconds=10)), reading(netin=6000, netout=7000))
    assert (counted.bytes_in, counted.restarted) == (1000, False)
    assert counted.started_at == START - timedelta(seconds=10), 'the stored start is kept'


def test_a_lower_counter_without_a_restart_has_wrapped():
    counted = count(stored(WRAP - 100, 50), reading(netin=400, netout=80))
    assert (counted.bytes_in, counted.bytes_out, counted.restarted) == (500, 30, False)


def test_a_restart_counts_the_new_counters_whole():
    # The CT started again 60 s ago: whatever its counters say now was moved since then.
    restarted = reading(netin=300, netout=900, uptime=60)
    counted = count(stored(5000, 7000), restarted)
    assert (counted.bytes_in, counted.bytes_out, counted.restarted) == (300, 900, True)
    # ... even when the new counters are above the old ones (a plain difference would lose 5000/7000 of them).
    counted = count(stored(100, 100), reading(netin=5000, netout=7000, uptime=60))
    assert (counted.bytes_in, counted.bytes_out, counted.restarted) == (5000, 7000, True)


def test_a_quick_restart_is_told_by_lower_counters():
    # Stopped and started again 5 s after the last reading's start: within the slack, but the counters fell.
    counted = count(stored(5000, 7000, START), reading(netin=300, netout=9000, uptime=18000 - 5))
    assert (counted.bytes_in, counted.bytes_out, counted.restarted) == (300, 9000, True)


def test_a_stopped_ct_counts_nothing_and_its_next_run_counts_from_zero():
    counted = count(stored(5000, 7000), reading(status='stopped', netin=0, netout=0))
    assert (counted.bytes_in, counted.bytes_out) == (0, 0)
    assert (counted.netin, counted.netout, counted.started_at) == (0, 0, T0)
    after = readings([ct(netin=800, netout=1200, uptime=30)], T0 + timedelta(minutes=5))[0][101]
    counted = count({'netin': 0, 'netout': 0, 'started_at': T0}, after)
    assert (counted.bytes_in, counted.bytes_out) == (800, 1200)


def test_readings_leave_out_templates_and_other_guests_and_keep_nodes():
    guests, nodes = readings([
        ct(vmid=101), ct(vmid=9000, name='cloudpod-template', status='stopped', template=1),
        {'id': 'qemu/200', 'type': 'qemu', 'vmid': 200, 'name': 'vm', 'status': 'running', 'netin': 1},
        {'id': 'node/pve', 'type': 'node', 'node': 'pve', 'status': 'online', 'maxmem': 1 << 34, 'mem': 1 << 32},
        {'id': 'storage/pve/local', 'type': 'storage', 'node': 'pve', 'storage': 'local'},
    ], T0)
    assert sorted(guests) == [101]
    assert [node['node'] for node in nodes] == ['pve']


def test_month_is_the_utc_calendar_month():
    assert month_of(datetime(2026, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-3)))).isoformat() == '2027-01-01'


@pytest.mark.parametrize('label, expected', [
    ('50GB/mo', 50 << 30), ('unmetered', None), ('Unmetered', None), ('1 GB/mo', 1 << 30)])
def test_quota_labels(label, expected):
    assert transfer_quota_bytes(label) == expected


@pytest.mark.parametrize('label', ['50TB/mo', '0GB/mo', '-5GB/mo', '50GB', '', None, '50GB/mo; rm -rf /'])
def test_other_quota_labels_are_refused(label):
    with pytest.raises(ValueError, match='neither'):
        transfer_quota_bytes(label)


def test_a_catalogue_with_a_bad_bandwidth_is_refused(tmp_path):
    catalogue = tmp_path / 'plans.yml'
    catalogue.write_text('cloudpods_plans:\n  CLOUD_POD_X: {name: X, bandwidth: lots}\n', encoding='utf-8')
    with pytest.raises(ValueError, match=r"plan CLOUD_POD_X: bandwidth 'lots'"):
        PlanCatalogue(catalogue).plans()


def test_the_shipped_catalogue_meters_only_the_student_plan():
    catalogue = PlanCatalogue(__import__('pathlib').Path(ROOT, 'playbooks', 'vars', 'plans.yml'))
    quotas = {code: catalogue.quota_bytes(code) for code in catalogue.plans()}
    assert quotas == {'CLOUD_POD_STUDENT': 50 << 30, 'CLOUD_POD_STARTER': None, 'CLOUD_POD_PREMIUM': None,
                      'CLOUD_POD_BUSINESS': None}
