# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""PRIVATE to mpanel.cloudpods: what the Proxmox VE and PowerDNS clients share about HTTP.

The guarded import of requests (both clients need it; a module without it fails with
missing_required_lib), the kind of a transport failure, and the TLS and URL checks of
the connection options. The messages stay each client's own: they name its options.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import traceback
from urllib.parse import urlsplit

from ansible.module_utils.basic import missing_required_lib

REQUESTS_IMPORT_ERROR = None
try:
    import requests
    HAS_REQUESTS = True
    REQUEST_ERRORS = (requests.exceptions.RequestException,)
except ImportError:
    requests = None
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()
    REQUEST_ERRORS = ()


def require_requests(module):
    """Fail the module run, the Ansible way, when requests is not installed."""
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib('requests'), exception=REQUESTS_IMPORT_ERROR)


def settle_environment(session, url):
    """Read once what requests would read from the environment before every request to ``url``, then stop it.

    With ``trust_env`` (the default) requests looks up the proxies (``*_proxy``, ``no_proxy``) and ``.netrc``
    for each request, scanning the whole environment: about 1 ms a request here, more than the simulator takes
    to answer. The same settings, read once: the environment's proxies for ``url`` (they win over the
    session's, as in requests) and the ``.netrc`` credentials when the session has no auth of its own. The CA
    bundle is the other thing requests reads there: see ``environment_verify()``.
    """
    if requests is None or not getattr(session, 'trust_env', False):
        return
    session.proxies.update(requests.utils.get_environ_proxies(url))
    if session.auth is None:
        netrc = requests.utils.get_netrc_auth(url)
        if netrc:
            session.auth = netrc
    session.trust_env = False


def environment_verify(verify):
    """``verify`` as requests with ``trust_env`` uses it: True means REQUESTS_CA_BUNDLE, else CURL_CA_BUNDLE, if set."""
    if verify is True:
        return os.environ.get('REQUESTS_CA_BUNDLE') or os.environ.get('CURL_CA_BUNDLE') or True
    return verify


def transport_failure(exc):
    """What kind of failure a requests exception is: ``tls``, ``timeout``, ``connection`` or None (another)."""
    if requests is None:
        return None
    # SSLError is a ConnectionError, and ConnectTimeout both a ConnectionError and a Timeout: most specific first.
    if isinstance(exc, requests.exceptions.SSLError):
        return 'tls'
    if isinstance(exc, requests.exceptions.Timeout):
        return 'timeout'
    if isinstance(exc, requests.exceptions.ConnectionError):
        return 'connection'
    return None


def split_api_url(url, schemes, scheme_rule, example, empty_message, credentials_hint, error):
    """Check what every client checks of an API URL; return its ``urlsplit`` parts and its port (or None).

    Credentials are refused first, so that no message repeats a password. ``schemes`` are the allowed
    ones (lower case) and ``scheme_rule`` says so (``must use https``); ``error`` is the client's error class.
    """
    if not url or not url.strip():
        raise error(empty_message)
    shown = url.strip()
    parts = urlsplit(shown)
    if parts.username is not None or parts.password is not None:
        raise error('api_url must not contain credentials (user:password@); %s' % credentials_hint)
    if parts.scheme.lower() not in schemes:
        raise error('api_url %s, %s; got %r' % (scheme_rule, example, shown))
    if not parts.hostname:
        raise error('api_url has no host name, %s; got %r' % (example, shown))
    try:
        port = parts.port
    except ValueError:
        raise error('api_url has an invalid port, %s; got %r' % (example, shown))
    if parts.query or parts.fragment:
        raise error('api_url must not have a query or fragment, %s; got %r' % (example, shown))
    return parts, port


class ApiSettings(object):
    """Base of the clients' validated connection options.

    A subclass lists in ``OPTIONS`` the module options its constructor takes (named alike);
    options missing from the parameters keep the constructor's defaults.
    """

    OPTIONS = ()
    validate_certs = True
    ca_path = None

    @classmethod
    def from_params(cls, params):
        return cls(**dict((name, params[name]) for name in cls.OPTIONS if name in params))

    @property
    def verify(self):
        """What requests needs: False, True (system CAs) or the CA bundle path."""
        if not self.validate_certs:
            return False
        return self.ca_path or True
