# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""PRIVATE to mpanel.cloudpods: the one Proxmox VE API client.

It wraps proxmoxer's HTTPS backend and adds what the Proxmox modules need in one place:
error messages that explain what went wrong and never contain the token secret, task (UPID)
waiting that notices a stopped task quickly, bounded retries for exactly the transient
failures Proxmox VE produces under concurrency, and VMID allocation that survives the
``cluster/nextid`` race. Every wait is a ``poll()`` on the client's ``clock``.

Layers below: settings, errors, formats, polling. Above: the module base (_proxmox_module).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import time
import traceback

from ansible.module_utils.common.text.converters import to_text

from ansible_collections.mpanel.cloudpods.plugins.module_utils._http import REQUEST_ERRORS, environment_verify, settle_environment
from ansible_collections.mpanel.cloudpods.plugins.module_utils._polling import PENDING, Backoff, Clock, PollInterval, poll
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import (
    LOCK_REASONS,
    RETRY_REASONS,
    RETRYABLE,
    ProxmoxApiError,
    ProxmoxError,
    ProxmoxTaskError,
    ProxmoxTimeout,
    describe_api_error,
    describe_missing_privileges,
    describe_transport_error,
    names_privilege,
    required_privileges,
    scrub_secrets,
)
from ansible_collections.mpanel.cloudpods.plugins.module_utils._pve_formats import (
    is_upid,
    parse_upid,
    pve_bool,
    pve_int,
    to_pve_params,
)

PROXMOXER_IMPORT_ERROR = None
try:
    from proxmoxer import ProxmoxAPI
    from proxmoxer.core import ResourceException
    HAS_PROXMOXER = True
except ImportError:
    ProxmoxAPI = None
    HAS_PROXMOXER = False
    PROXMOXER_IMPORT_ERROR = traceback.format_exc()

    class ResourceException(Exception):
        """Stand-in so that ``except ResourceException`` stays valid without proxmoxer."""


class ProxmoxClient(object):
    """Proxmox VE API over proxmoxer with retries, task waiting and readable errors.

    ``retry_timeout`` bounds how long one call keeps retrying a transient
    failure; ``retries`` counts retries by reason (see RETRY_REASONS).
    """

    def __init__(self, settings, retry_timeout=300, api=None, sleep=time.sleep, clock=time.monotonic,
                 backoff=None):
        self.settings = settings
        self.retry_timeout = retry_timeout
        self.retries = dict((reason, 0) for reason in RETRY_REASONS)
        self.clock = Clock(now=clock, sleep=sleep)
        self._backoff_factory = backoff or Backoff
        self._api = api if api is not None else self._connect()

    def retry(self, call, transient):
        """``call()``, called again after each failure for which ``transient(error)`` is true.

        Each retry comes after a backoff and is counted by reason (``retries``); once retrying
        would go past retry_timeout s, the last failure is raised, explained.
        """
        failed = []  # the last transient failure

        def attempt():
            try:
                return call()
            except (ProxmoxApiError, ProxmoxTaskError) as exc:
                if not transient(exc):
                    raise
                failed[:] = [exc]
                return PENDING

        def count(dummy_delay):
            self.retries[failed[-1].retry_reason] += 1

        def give_up():
            raise failed[-1].gave_up(self.retry_timeout)

        return poll(attempt, self.retry_timeout, self._backoff_factory(), self.clock, give_up,
                    before_wait=count, shorten_last_wait=False)

    def _connect(self):
        s = self.settings
        try:
            api = ProxmoxAPI(s.host, port=s.port, path_prefix=s.path_prefix, user=s.user,
                             token_name=s.token_name, token_value=s.token_secret,
                             verify_ssl=environment_verify(s.verify), timeout=s.api_timeout, service='PVE',
                             backend='https')
        except Exception as exc:  # proxmoxer raises plain exceptions for bad settings
            raise ProxmoxError('Cannot set up the Proxmox API client for %s: %s'
                               % (s.endpoint, self.scrub(to_text(exc))))
        # proxmoxer keeps its requests session there; without it (another version) requests reads the environment
        # on every request, as before.
        session = getattr(api, '_store', {}).get('session')
        if session is not None and hasattr(session, 'trust_env'):
            settle_environment(session, s.endpoint + '/')
        return api

    def scrub(self, text):
        return scrub_secrets(text, [self.settings.token_secret])

    # -- raw calls ------------------------------------------------------

    def _call_once(self, method, path, params):
        resource = self._api(path)
        call = getattr(resource, method.lower())
        try:
            return call(**params)
        except ResourceException as exc:
            status = getattr(exc, 'status_code', None)
            reason = self.scrub(getattr(exc, 'content', None) or to_text(exc))
            errors = getattr(exc, 'errors', None)
            if errors is not None:
                errors = dict((k, self.scrub(to_text(v))) for k, v in errors.items()) \
                    if isinstance(errors, dict) else self.scrub(to_text(errors))
            msg = describe_api_error(status, reason, method, path, self.settings.token_id, errors)
            if status == 403 and not names_privilege(reason):
                msg += self._explain_missing_privileges(method, path, params)
            raise ProxmoxApiError(self.scrub(msg), status_code=status, reason=reason, method=method,
                                  path=path, errors=errors)
        except REQUEST_ERRORS as exc:
            msg = describe_transport_error(exc, self.settings, method, path)
            raise ProxmoxApiError(self.scrub(msg), method=method, path=path)

    def _explain_missing_privileges(self, method, path, params):
        """For a bare 403: ask /access/permissions which required privilege the token lacks."""
        groups = required_privileges(method, path, params)
        held = {}
        try:
            for group in groups:
                for acl_path, dummy in group:
                    if acl_path not in held:
                        answer = self._call_once('GET', 'access/permissions', {'path': acl_path}) or {}
                        held[acl_path] = set(answer.get(acl_path) or {})
        except ProxmoxError:
            return describe_missing_privileges(groups, known=False)
        missing = [group for group in groups if not any(privilege in held[acl_path] for acl_path, privilege in group)]
        return describe_missing_privileges(missing, known=True)

    def request(self, method, path, retry=True, **params):
        """One API call; retries only RETRYABLE failures, with backoff, for at most retry_timeout s."""
        params = to_pve_params(params)
        path = path.strip('/')
        return self.retry(lambda: self._call_once(method, path, params),
                          lambda exc: retry and isinstance(exc, ProxmoxApiError) and exc.retry_reason in RETRYABLE)

    def get(self, path, **params):
        return self.request('GET', path, **params)

    def post(self, path, **params):
        return self.request('POST', path, **params)

    def put(self, path, **params):
        return self.request('PUT', path, **params)

    def delete(self, path, **params):
        return self.request('DELETE', path, **params)

    # -- tasks ----------------------------------------------------------

    def task_log_tail(self, upid, lines=5):
        """The last lines of a task's log (without the final TASK line); [] if unavailable."""
        task = parse_upid(upid)
        try:
            entries = self.get('nodes/%s/tasks/%s/log' % (task.node, upid), start=0, limit=500) or []
        except ProxmoxError:
            return []
        texts = [to_text(e.get('t', '')) for e in entries if isinstance(e, dict)]
        texts = [t for t in texts if t and not t.startswith('TASK ')]
        return texts[-lines:]

    def wait_for_task(self, upid, timeout, what=None):
        """Wait for a task to stop; return its exit status (``OK`` or ``WARNINGS: N``).

        Polls with short growing intervals (0.1 s up to 0.25 s) so a stopped
        task is noticed quickly. Raises ProxmoxTaskError with the task's own
        exit status (and the last log lines) if it failed, ProxmoxTimeout if
        it is still running after ``timeout`` seconds.
        """
        task = parse_upid(upid)
        label = what or ('%s %s' % (task.type, task.id)).strip()
        status_path = 'nodes/%s/tasks/%s/status' % (task.node, upid)

        def stopped():
            status = self.get(status_path) or {}
            if status.get('status') != 'stopped':
                return PENDING
            exitstatus = to_text(status.get('exitstatus') or '').strip()
            if exitstatus == 'OK' or exitstatus.startswith('WARNINGS'):
                return exitstatus
            log = self.task_log_tail(upid)
            msg = 'Proxmox task %s on node %s failed: %s' % (label, task.node, exitstatus or 'unknown error')
            if log:
                msg += ' | last log lines: %s' % ' / '.join(log)
            msg += ' (task %s)' % upid
            raise ProxmoxTaskError(self.scrub(msg), upid=upid, exitstatus=exitstatus, log=log)

        def still_running():
            raise ProxmoxTimeout('Timed out after %s s waiting for Proxmox task %s on node %s (task %s); '
                                 'it is still running: see the node\'s task log, or raise timeout'
                                 % (timeout, label, task.node, upid))

        return poll(stopped, timeout, PollInterval(), self.clock, still_running)

    def run_task(self, method, path, timeout, what=None, retry_locked_task=False, params=None):
        """Call an endpoint that starts a task and wait for it (synchronous answers pass through).

        Some endpoints (start, stop, shutdown, reboot) check the guest's lock inside the task,
        so a lock held by another operation shows up as a task that failed at once with
        ``CT is locked (...)``. With ``retry_locked_task`` such a task is started again after a
        backoff, as a synchronous lock error would be; every other task failure is final.
        ``params`` are the API parameters (a dict: they may be named like our own arguments).
        """
        params = params or {}

        def call():
            result = self.request(method, path, **params)
            if not is_upid(result):
                return result
            return self.wait_for_task(result, timeout, what=what)

        return self.retry(call, lambda exc: (retry_locked_task and isinstance(exc, ProxmoxTaskError)
                                             and exc.retry_reason in LOCK_REASONS))

    def reboot_container(self, node, vmid, timeout):
        """Reboot the running CT ``vmid`` and wait until it runs again, or raise.

        PVE 8's reboot worker (pve-container, src/PVE/LXC.pm ``vm_reboot``) stops the CT and
        then starts it, and only the start checks the config lock (``lxc-pve-prestart-hook``
        calls ``check_lock``; neither the API call nor the worker does). So on a locked CT (a
        backup running, a concurrent change) the task fails ``startup for container 'N' failed``
        and leaves the CT stopped, where another reboot is refused (``VM N not running``).
        After any failed reboot a stopped CT is therefore started: the start checks the lock in
        its task (``CT is locked (...)``) and is retried with backoff until the lock is gone,
        within retry_timeout. A CT still running after a failed reboot raises the reboot's error
        (a reboot that timed out on the config file lock stopped nothing and was retried).
        """
        try:
            return self.run_task('POST', self.container_path(node, vmid, 'status/reboot'), timeout,
                                 what='reboot of CT %s' % vmid, retry_locked_task=True)
        except (ProxmoxApiError, ProxmoxTaskError) as exc:
            failed = exc
        status = (self.get(self.container_path(node, vmid, 'status/current')) or {}).get('status')
        if status != 'stopped':
            raise failed
        try:
            return self.run_task('POST', self.container_path(node, vmid, 'status/start'), timeout,
                                 what='start of CT %s after its failed reboot' % vmid, retry_locked_task=True)
        except (ProxmoxApiError, ProxmoxTaskError) as exc:
            text = exc.reason if isinstance(exc, ProxmoxApiError) else exc.exitstatus
            if 'already running' in (text or ''):  # a concurrent run started it first
                return 'OK'
            raise ProxmoxError('CT %s is stopped: its reboot stopped it and failed (%s), and starting it again failed: %s'
                               % (vmid, failed.msg, exc.msg))

    # -- lookups --------------------------------------------------------

    def guests(self):
        """Every guest (VMs, containers and templates) from ``cluster/resources?type=vm``."""
        return self.get('cluster/resources', type='vm') or []

    def containers(self, guests=None):
        """The LXC containers (not templates) among ``guests`` (fetched when not given)."""
        guests = self.guests() if guests is None else guests
        return [g for g in guests if g.get('type') == 'lxc' and not pve_bool(g.get('template'))]

    def guests_by_vmid(self, vmid, guests=None):
        guests = self.guests() if guests is None else guests
        return [g for g in guests if pve_int(g.get('vmid')) == int(vmid)]

    def next_vmid(self):
        value = self.get('cluster/nextid')
        vmid = pve_int(value)
        if vmid is None:
            raise ProxmoxError('cluster/nextid returned %r, not a VMID' % (value,))
        return vmid

    def container_path(self, node, vmid, suffix=''):
        return 'nodes/%s/lxc/%s%s' % (node, vmid, ('/' + suffix) if suffix else '')

    def clone_container(self, node, source_vmid, timeout, newid=None, max_vmid_attempts=20,
                        find_existing=None, spare_sources=(), cloned_from=None, **clone_params):
        """Clone ``source_vmid`` to a new VMID and wait for the task; return ``(vmid, created)``.

        ``spare_sources`` are copies of the template (same content, other VMIDs): a clone refused
        because its source is locked goes to the next copy at once, with a fresh id; only when every
        copy refused in a row does it wait (backoff) and go round again. A copy is tried first by
        ``newid`` or the id taken, so that concurrent runs spread over the copies. ``cloned_from``
        (a list) receives the VMID of the source of the clone that was made.

        ``cluster/nextid`` reserves nothing, so a concurrent create may take the same id: the
        clone then fails ``CT N already exists`` and we take a fresh id at once (bounded by
        ``max_vmid_attempts``). Before any new attempt ``find_existing`` is asked and may return
        a VMID to adopt instead: the container this very pod got meanwhile, from a concurrent run
        or from our own request whose answer was lost. ``created`` is then False.

        A clone refused because the source is locked (another clone of the same template holds
        lock ``disk`` for its whole task) is retried with backoff, with a fresh id each time: the
        refused request created nothing, and the id it named is likely taken by then. After an
        HTTP 595/596 the request may have gone through, so it is retried with the same id and
        ends up adopted through ``find_existing`` if it did.
        """
        find_existing = find_existing or (lambda: None)
        sources = [source_vmid] + [vmid for vmid in spare_sources if vmid != source_vmid]
        turn = [None]  # index into sources of the next attempt (None: chosen by the first id)
        wanted = [newid]  # the VMID of the next attempt; None: take the next free one
        taken = [0]  # clones refused because the VMID was taken meanwhile
        refused = [0]  # clones that failed transiently (retried after a backoff)

        def attempt():
            if refused[0]:
                # After a transient failure: the container may exist after all (a lost answer)
                # or have been made by a concurrent run for this pod meanwhile.
                adopted = find_existing()
                if adopted is not None:
                    return adopted, False
            busy = 0  # copies that refused in a row, locked
            while True:
                vmid = wanted[0] if wanted[0] is not None else self.next_vmid()
                if turn[0] is None:
                    turn[0] = int(vmid) % len(sources)
                source = sources[turn[0] % len(sources)]
                try:
                    upid = self.request('POST', self.container_path(node, source, 'clone'), retry=False, newid=vmid,
                                        **clone_params)
                except ProxmoxApiError as exc:
                    reason = exc.retry_reason
                    if reason in LOCK_REASONS and busy + 1 < len(sources):
                        # Another copy of the template may be free: at once, with a fresh id.
                        busy += 1
                        turn[0] += 1
                        wanted[0] = newid
                        continue
                    if reason in RETRYABLE:
                        if reason in LOCK_REASONS:
                            turn[0] += 1
                        # A lock refused the request, which created nothing: its id is likely taken
                        # by then. After a 595/596 it may have gone through: the same id again.
                        wanted[0] = newid if reason in LOCK_REASONS else vmid
                        refused[0] += 1
                        raise
                    if reason != 'vmid_taken':
                        raise
                    adopted = find_existing()
                    if adopted is not None:
                        return adopted, False
                    taken[0] += 1
                    if newid is not None or taken[0] >= max_vmid_attempts:
                        raise
                    self.retries['vmid_taken'] += 1
                    wanted[0] = None
                    continue
                if is_upid(upid):
                    self.wait_for_task(upid, timeout, what='clone of CT %s to CT %s' % (source, vmid))
                if cloned_from is not None:
                    cloned_from.append(source)
                return vmid, True

        # Only the clone request's own failures: the calls around it (nextid, lookups) retry on their own.
        return self.retry(attempt, lambda exc: (isinstance(exc, ProxmoxApiError) and exc.method == 'POST'
                                                and exc.retry_reason in RETRYABLE))
