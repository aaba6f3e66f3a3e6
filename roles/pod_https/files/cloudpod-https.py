# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""cloudpod-https: the pod's certificate for its domain, issued, retried and renewed inside the pod.

Installed by the role mpanel.cloudpods.pod_https as /usr/local/lib/cloudpod-https.py (see its README
for the whole picture); run it with python3 (no shebang: the collection's sanity rules allow none here).

    cloudpod-https configure --domain D --directory URL --email E [--retry S] [--wait S] [--check]
        (CA bundle on stdin, empty for the system CAs) writes the settings, the systemd units and
        the ACME webroot, repairs what it finds broken (a deleted live certificate or key, Nginx's
        TLS include), starts an issuance in cloudpod-https.service when one is needed and waits
        at most --wait seconds for it. Prints one JSON object: {"changes": [...], "https": state}.
    cloudpod-https run [--force-renewal]
        what the timer runs: issue while there is no certificate (retry), renew once a third of
        the certificate's lifetime is left (or now, with --force-renewal), keep Nginx in step.
    cloudpod-https status
        prints the state file.

The ACME client is certbot (HTTP-01, webroot of its own). Nothing here prints or copies a private
key: certbot keeps its keys under /etc/letsencrypt (root only); only paths reach Nginx.
"""

import argparse
import datetime
import fcntl
import json
import os
import re
import subprocess
import sys
import tempfile
import time

CONFIG = '/etc/cloudpod/https.json'
CA_BUNDLE = '/etc/cloudpod/acme-ca.pem'
STATE = '/var/lib/cloudpod/https.json'
WEBROOT = '/var/www/cloudpod/acme'
NGINX_INCLUDE = '/etc/nginx/cloudpod/https.conf'
LOCK = '/run/lock/cloudpod-https.lock'
TRIGGER = '/run/cloudpod-https.now'
LETSENCRYPT = '/etc/letsencrypt'
LINEAGE = 'cloudpod'
LIVE_FILES = ('cert', 'chain', 'fullchain', 'privkey')
UNIT_DIR = '/etc/systemd/system'
SCRIPT = '/usr/local/lib/cloudpod-https.py'
# Backoff after the CA refused (failed challenge, rate limit): Let's Encrypt allows 5 failed
# validations per hostname and hour; an unreachable CA counts against nothing and is retried on
# the plain interval.
MAX_BACKOFF = 6 * 3600
REASON_MAX = 600

SERVICE_UNIT = """# Written by cloudpod-https (mpanel.cloudpods.pod_https): issue, retry and renew the pod's certificate.
[Unit]
Description=Cloud Pod certificate (issue, retry, renew)
After=network-online.target nginx.service
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/bin/python3 {script} run
"""

TIMER_UNIT = """# Written by cloudpod-https (mpanel.cloudpods.pod_https). Every tick is cheap with a certificate
# (a date check); without one it is the retry (with backoff after refusals).
[Unit]
Description=Cloud Pod certificate: retry and renewal check

[Timer]
OnActiveSec={retry}
OnUnitInactiveSec={retry}
RandomizedDelaySec={jitter}
AccuracySec=1

[Install]
WantedBy=timers.target
"""

NGINX_TLS = """# Written by cloudpod-https: the pod has a certificate for {names}.
# Included by the pod's server block (pod_first_boot's vhost); removed again if the certificate goes.
listen 443 ssl;
{listen6}ssl_certificate {live}/fullchain.pem;
ssl_certificate_key {live}/privkey.pem;
ssl_protocols TLSv1.2 TLSv1.3;
ssl_session_cache shared:cloudpod:1m;
# http:// is redirected to https:// (except the ACME challenges: their location does not redirect)
set $cloudpod_redirect $scheme;
"""


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(moment):
    return moment.strftime('%Y-%m-%dT%H:%M:%SZ') if moment else ''


def read_json(path, default):
    try:
        with open(path, encoding='utf-8') as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default


def write_file(path, text, mode=0o644, check=False):
    """Write text if it differs; True when it changed (or would, in check mode)."""
    try:
        with open(path, encoding='utf-8') as handle:
            if handle.read() == text:
                return False
    except OSError:
        pass
    if check:
        return True
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.cloudpod-')
    with os.fdopen(handle, 'w', encoding='utf-8') as out:
        out.write(text)
    os.chmod(partial, mode)
    os.rename(partial, path)
    return True


def remove_file(path, check=False):
    if not os.path.lexists(path):
        return False
    if not check:
        os.unlink(path)
    return True


def run(argv, env=None, timeout=None):
    return subprocess.run(argv, capture_output=True, text=True, check=False, env=env, timeout=timeout)


# ---------------------------------------------------------------- the certificate on disk

def live_dir():
    return os.path.join(LETSENCRYPT, 'live', LINEAGE)


def archive_dir():
    return os.path.join(LETSENCRYPT, 'archive', LINEAGE)


def certificate(names):
    """The live certificate as {not_before, not_after, serial, names}, or None (missing, unreadable,
    its key missing or not its key). Reads only public data (the key's public half)."""
    live = live_dir()
    cert = os.path.join(live, 'cert.pem')
    if not all(os.path.isfile(os.path.join(live, name + '.pem')) for name in LIVE_FILES):
        return None
    info = run(['openssl', 'x509', '-in', cert, '-noout', '-startdate', '-enddate', '-serial', '-ext', 'subjectAltName'])
    if info.returncode != 0:
        return None
    cert_pub = run(['openssl', 'x509', '-in', cert, '-noout', '-pubkey'])
    key_pub = run(['openssl', 'pkey', '-in', os.path.join(live, 'privkey.pem'), '-pubout'])
    if cert_pub.returncode != 0 or key_pub.returncode != 0 or cert_pub.stdout != key_pub.stdout:
        return None
    found = {'names': sorted(set(re.findall(r'DNS:([^,\s]+)', info.stdout)))}
    for line in info.stdout.splitlines():
        key, _sep, value = line.partition('=')
        if key in ('notBefore', 'notAfter'):
            found[key] = datetime.datetime.strptime(value.strip(), '%b %d %H:%M:%S %Y %Z').replace(tzinfo=datetime.timezone.utc)
        elif key == 'serial':
            found['serial'] = value.strip()
    if 'notAfter' not in found or not set(names) <= set(found['names']):
        return None
    return found


def restore_live(check=False):
    """Put back live/ symlinks that were deleted or broken, from the newest complete archive
    version. Returns the changes made (or that would be), or None if the archive cannot do it."""
    live, archive = live_dir(), archive_dir()
    if not os.path.isdir(archive):
        return None
    versions = set()
    for entry in os.listdir(archive):
        match = re.match(r'^(cert|chain|fullchain|privkey)(\d+)\.pem$', entry)
        if match:
            versions.add(int(match.group(2)))
    complete = [v for v in versions if all(os.path.isfile(os.path.join(archive, '%s%d.pem' % (n, v))) for n in LIVE_FILES)]
    if not complete:
        return None
    newest = max(complete)
    changes = []
    for name in LIVE_FILES:
        link = os.path.join(live, name + '.pem')
        target = os.path.join('..', '..', 'archive', LINEAGE, '%s%d.pem' % (name, newest))
        if os.path.islink(link) and os.path.isfile(link):
            continue
        changes.append('%s %s from the archive (version %d)' % ('would restore' if check else 'restored', link, newest))
        if not check:
            os.makedirs(live, exist_ok=True)
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(target, link)
    return changes


def drop_lineage(check=False):
    """A lineage that cannot be repaired: removed, so that certbot issues a new one."""
    paths = [live_dir(), archive_dir(), os.path.join(LETSENCRYPT, 'renewal', LINEAGE + '.conf')]
    found = [p for p in paths if os.path.lexists(p)]
    if not check:
        for path in found:
            if os.path.isdir(path) and not os.path.islink(path):
                for top, dirs, files in os.walk(path, topdown=False):
                    for name in files + dirs:
                        full = os.path.join(top, name)
                        if os.path.isdir(full) and not os.path.islink(full):
                            os.rmdir(full)
                        else:
                            os.unlink(full)
                os.rmdir(path)
            else:
                os.unlink(path)
    return ['%s the broken certificate lineage (%s) to issue a new one' % ('would remove' if check else 'removed', live_dir())] if found else []


# ---------------------------------------------------------------- nginx

def nginx_include(config, cert):
    if not cert:
        return None
    listen6 = 'listen [::]:443 ssl;\n' if config.get('ipv6', True) else ''
    return NGINX_TLS.format(names=' '.join(config['names']), listen6=listen6, live=live_dir())


def sync_nginx(config, cert, check=False, renewed=False):
    """Nginx serves 443 exactly while there is a certificate; reloaded when that changes, or when
    a new certificate (``renewed``) must be read."""
    wanted = nginx_include(config, cert)
    if wanted is None:
        changed = remove_file(NGINX_INCLUDE, check)
    else:
        changed = write_file(NGINX_INCLUDE, wanted, check=check)
    if not changed:
        if renewed and not check:
            run(['systemctl', 'reload-or-restart', 'nginx'])
            return ['nginx: reloaded for the new certificate']
        return []
    if not check:
        test = run(['nginx', '-t'])
        if test.returncode != 0:
            remove_file(NGINX_INCLUDE)
            raise RuntimeError('nginx -t failed with the TLS settings, left them out: %s' % test.stderr.strip()[-300:])
        run(['systemctl', 'reload-or-restart', 'nginx'])
    return ['nginx: 443 with the certificate, http redirected' if wanted else 'nginx: no certificate, 443 off, http serves the site']


# ---------------------------------------------------------------- state

def write_state(state):
    write_file(STATE, json.dumps(state, indent=2, sort_keys=True) + '\n')


def state_for(config, cert, previous, reason=''):
    state = {
        'status': 'active' if cert else ('pending' if config.get('domain') else 'none'),
        'reason': '' if cert else reason,
        'names': config.get('names', []),
        'not_after': iso(cert['notAfter']) if cert else '',
        'serial': cert['serial'] if cert else '',
        'last_attempt': previous.get('last_attempt', ''),
        'last_success': previous.get('last_success', ''),
        'refusals': 0 if cert else previous.get('refusals', 0),
    }
    return state


def renewal_due(cert, now):
    """Once a third of the lifetime is left (30 days of Let's Encrypt's 90, 15 of 45, 2 of 6)."""
    lifetime = cert['notAfter'] - cert.get('notBefore', cert['notAfter'] - datetime.timedelta(days=90))
    return cert['notAfter'] - now <= lifetime / 3


def explain(output, directory):
    """A useful, secret-free reason from certbot's output: what the CA said, or why it could not be asked."""
    text = output.replace('\r', '')
    host = re.sub(r'^https?://([^/]+).*$', r'\1', directory)
    if re.search(r'rateLimited|too many (certificates|failed authorizations|requests)', text, re.I):
        detail = re.search(r'(?:Detail|Error[^:\n]*):\s*(.+)', text)
        return 'rate limited by the CA: %s' % (detail.group(1).strip() if detail else 'try later')
    if 'The Certificate Authority reported these problems' in text or 'Type:' in text:
        problems = re.findall(r'Domain:\s*(\S+)\s*\n\s*Type:\s*(\S+)\s*\n\s*Detail:\s*(.+)', text)
        if problems:
            return 'challenge failed: ' + '; '.join('%s (%s): %s' % (d, t, detail.strip()) for d, t, detail in problems)
    if re.search(r'ConnectionError|Connection refused|Max retries exceeded|Failed to establish|timed out|Name or service not known', text):
        why = 'connection refused' if 'Connection refused' in text else ('timed out' if 'timed out' in text else 'no connection')
        return 'ACME CA unreachable (%s): %s' % (host, why)
    if re.search(r'CERTIFICATE_VERIFY_FAILED|SSLError', text):
        return 'ACME CA %s: TLS certificate not trusted (cloudpods_acme_ca_bundle)' % host
    lines = [line.strip() for line in text.splitlines() if line.strip()
             and not line.startswith(('Saving debug log', 'Ask for help', 'See the logfile', 'Hint:'))]
    return ('certbot failed: ' + ' '.join(lines[-3:])) if lines else 'certbot failed without a message'


def certbot(config, force):
    argv = ['certbot', 'certonly', '--non-interactive', '--agree-tos', '--no-eff-email',
            '--email', config['email'], '--server', config['directory'], '--cert-name', LINEAGE,
            '--webroot', '--webroot-path', WEBROOT, '--max-log-backups', '10']
    for name in config['names']:
        argv += ['-d', name]
    if force:
        argv.append('--force-renewal')
    env = dict(os.environ)
    if config.get('ca_bundle'):
        env['REQUESTS_CA_BUNDLE'] = CA_BUNDLE  # trusted for the directory's TLS only
    try:
        result = run(argv, env=env, timeout=600)
    except subprocess.TimeoutExpired:
        return False, 'certbot did not finish within 600 s (the CA is slow)'
    return result.returncode == 0, (result.stderr + '\n' + result.stdout)


def attempt(config, previous, force=False):
    """One issuance or renewal; the new state."""
    now = utcnow()
    state = dict(previous)
    state['last_attempt'] = iso(now)
    write_state(dict(state, attempting=True))
    ok, output = certbot(config, force)
    cert = certificate(config['names']) if ok else None
    if cert:
        state = state_for(config, cert, state)
        state['last_success'] = iso(now)
        return state
    cert = certificate(config['names'])  # a failed renewal keeps the certificate that is still valid
    reason = 'certbot reported success but no valid certificate is in %s' % live_dir() if ok else explain(output, config['directory'])
    state = state_for(config, cert, state, reason)
    if cert:
        state['renewal_error'] = reason
    elif not reason.startswith('ACME CA unreachable'):
        state['refusals'] = previous.get('refusals', 0) + 1
    return state


def retry_allowed(config, state, now):
    if not state.get('last_attempt'):
        return True
    last = datetime.datetime.strptime(state['last_attempt'], '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=datetime.timezone.utc)
    refusals = state.get('refusals', 0)
    wait = min(config.get('retry', 300) * (2 ** max(refusals - 1, 0)), MAX_BACKOFF) if refusals else 0
    return (now - last).total_seconds() >= wait


def repair_lineage(config, check=False):
    """The live certificate, after putting back deleted live files from certbot's archive (or
    dropping a lineage that cannot be repaired); returns (certificate or None, changes)."""
    cert = certificate(config['names'])
    if cert is not None:
        return cert, []
    restored = restore_live(check)
    if restored:
        return (None if check else certificate(config['names'])), restored
    if restored is None:
        return None, drop_lineage(check)
    return None, []


def consume_trigger():
    """The role's request for an attempt now (no backoff): a file with a token, which the unit's
    run removes and records in the state (``request``) when it is done, so ``configure`` knows
    that this attempt, not an older one, finished."""
    try:
        with open(TRIGGER, encoding='utf-8') as handle:
            token = handle.read().strip()
        os.unlink(TRIGGER)
        return token
    except OSError:
        return ''


def converge(config, force=False, manual=False):
    """The timer's run: repair, then issue/renew when needed; returns (state, changes)."""
    previous = read_json(STATE, {})
    token = consume_trigger()
    manual = bool(token) or manual
    if not config.get('domain'):
        changes = sync_nginx(config, None)
        state = state_for(config, None, previous, 'the pod has no domain: no certificate')
        write_state(dict(state, request=token) if token else state)
        return state, changes
    cert, changes = repair_lineage(config)
    renewed = False
    now = utcnow()
    if cert is None or force or renewal_due(cert, now):
        if manual or force or cert is not None or retry_allowed(config, previous, now):
            before = cert['serial'] if cert else ''
            state = attempt(config, previous, force=force or cert is not None or os.path.isdir(live_dir()))
            cert = certificate(config['names'])
            if cert and cert['serial'] != before:
                renewed = True
                changes.append('certificate issued for %s (serial %s, valid until %s)' % (
                    ' '.join(config['names']), cert['serial'], iso(cert['notAfter'])))
        else:
            state = state_for(config, cert, previous, previous.get('reason', ''))
    else:
        state = state_for(config, cert, previous)
    changes += sync_nginx(config, cert, renewed=renewed)
    if token:
        state['request'] = token
    write_state(state)
    return state, changes


# ---------------------------------------------------------------- commands

class Lock(object):
    def __init__(self, timeout):
        self.timeout = timeout
        self.handle = None

    def __enter__(self):
        os.makedirs(os.path.dirname(LOCK), exist_ok=True)
        self.handle = open(LOCK, 'w', encoding='utf-8')
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def cmd_run(args):
    config = read_json(CONFIG, None)
    if config is None:
        print('cloudpod-https: no settings in %s (the role pod_https writes them)' % CONFIG, file=sys.stderr)
        return 1
    try:
        with Lock(timeout=0):
            state, changes = converge(config, force=args.force_renewal, manual=args.force_renewal)
    except BlockingIOError:
        print('cloudpod-https: another run is in progress')
        return 0
    for line in changes:
        print(line)
    print('https: %s%s' % (state['status'], (' (%s)' % state['reason']) if state['reason'] else ''))
    return 0


def unit_changes(retry, check):
    changes = []
    service = SERVICE_UNIT.format(script=SCRIPT)
    timer = TIMER_UNIT.format(retry=retry, jitter=max(1, min(retry // 10, 300)))
    wrote = [name for name, text in (('cloudpod-https.service', service), ('cloudpod-https.timer', timer))
             if write_file(os.path.join(UNIT_DIR, name), text, check=check)]
    if wrote:
        changes.append('systemd: wrote %s' % ', '.join(wrote))
        if not check:
            run(['systemctl', 'daemon-reload'])
    enabled = run(['systemctl', 'is-enabled', 'cloudpod-https.timer']).stdout.strip() == 'enabled'
    active = run(['systemctl', 'is-active', 'cloudpod-https.timer']).stdout.strip() == 'active'
    if not enabled or not active or wrote:
        if not enabled or not active:
            changes.append('systemd: cloudpod-https.timer enabled and started')
        if not check:
            run(['systemctl', 'enable', 'cloudpod-https.timer'])
            run(['systemctl', 'restart', 'cloudpod-https.timer'])
    # One owner of renewals: Debian's certbot.timer would renew without telling Nginx.
    if run(['systemctl', 'is-enabled', 'certbot.timer']).stdout.strip() == 'enabled':
        changes.append("systemd: Debian's certbot.timer disabled (cloudpod-https.timer renews)")
        if not check:
            run(['systemctl', 'disable', '--now', 'certbot.timer'])
    return changes


def wait_for_attempt(token, wait):
    """Until the run that took the request ``token`` finished, at most ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        state = read_json(STATE, {})
        if state.get('request') == token and not state.get('attempting'):
            return state, True
        if time.monotonic() >= deadline:
            return state, False
        time.sleep(0.2)


def cmd_configure(args):
    domain = args.domain or ''
    if domain and not re.match(r'^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,63}|xn--[a-z0-9-]{1,59})$', domain):
        print(json.dumps({'failed': True, 'msg': 'not a domain name: %r' % domain}))
        return 2
    bundle = sys.stdin.read() if not sys.stdin.isatty() else ''
    if bundle and '-----BEGIN CERTIFICATE-----' not in bundle:
        print(json.dumps({'failed': True, 'msg': 'the CA bundle on stdin holds no PEM certificate'}))
        return 2
    config = {'domain': domain, 'names': [domain, 'www.' + domain] if domain else [],
              'directory': args.directory, 'email': args.email, 'ca_bundle': bool(bundle),
              'retry': args.retry, 'ipv6': args.ipv6}
    check = args.check
    changes = []
    if write_file(CONFIG, json.dumps(config, indent=2, sort_keys=True) + '\n', mode=0o644, check=check):
        changes.append('settings: %s' % CONFIG)
    if bundle:
        if write_file(CA_BUNDLE, bundle if bundle.endswith('\n') else bundle + '\n', check=check):
            changes.append('ACME CA bundle: %s' % CA_BUNDLE)
    elif remove_file(CA_BUNDLE, check):
        changes.append('ACME CA bundle removed (system CAs)')
    if not os.path.isdir(os.path.join(WEBROOT, '.well-known', 'acme-challenge')):
        changes.append('ACME webroot: %s' % WEBROOT)
        if not check:
            os.makedirs(os.path.join(WEBROOT, '.well-known', 'acme-challenge'), mode=0o755, exist_ok=True)
    changes += unit_changes(args.retry, check)
    previous = read_json(STATE, {})
    if check:
        cert, more = repair_lineage(config, check=True) if domain else (None, [])
        changes += more
        if domain and cert is None and not any(line.startswith('would restore') for line in more):
            changes.append('would issue a certificate for %s from %s' % (' '.join(config['names']), args.directory))
        changes += sync_nginx(config, cert, check=True)
        reason = previous.get('reason', '') or ('the pod has no domain: no certificate' if not domain else 'dry run: nothing issued')
        state = state_for(config, cert, previous, reason)
        print(json.dumps({'changes': changes, 'https': public(state)}))
        return 0
    # Repair and the quick cases here (under the lock); an issuance in the unit, so that a slow CA
    # never holds the playbook longer than --wait and the attempt goes on after it.
    with Lock(timeout=max(args.wait, 5)):
        cert, more = repair_lineage(config) if domain else (None, [])
        changes += more
        needs_attempt = bool(domain) and (cert is None or renewal_due(cert, utcnow()))
        if not needs_attempt:
            state, more = converge(config)
            changes += more
    if needs_attempt:
        token = '%s-%d' % (iso(utcnow()), os.getpid())
        write_file(TRIGGER, token + '\n')
        run(['systemctl', 'start', '--no-block', 'cloudpod-https.service'])
        state, finished = wait_for_attempt(token, args.wait)
        if not finished:
            state = dict(state_for(config, certificate(config['names']), state,
                                   'no answer from the CA within %d s (cloudpods_https_wait): issuance goes on in the pod'
                                   % args.wait))
        if state.get('status') == 'active' and state.get('serial') != previous.get('serial'):
            changes.append('certificate issued for %s (valid until %s)' % (' '.join(config['names']), state['not_after']))
            changes.append('nginx: 443 with the certificate, http redirected')
        elif previous.get('status') != state.get('status'):
            changes.append('https %s' % state.get('status'))
    print(json.dumps({'changes': changes, 'https': public(state)}))
    return 0


def public(state):
    """What the role hands on: status, reason, not_after, names, last attempt."""
    return {key: state.get(key, '') for key in ('status', 'reason', 'not_after', 'names', 'last_attempt')}


def cmd_status(_args):
    print(json.dumps(read_json(STATE, {'status': 'none', 'reason': 'cloudpod-https has not run'}), indent=2))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog='cloudpod-https', description=__doc__.split('\n\n', maxsplit=1)[0])
    sub = parser.add_subparsers(dest='command', required=True)
    configure = sub.add_parser('configure')
    configure.add_argument('--domain', default='')
    configure.add_argument('--directory', required=True)
    configure.add_argument('--email', required=True)
    configure.add_argument('--retry', type=int, default=300)
    configure.add_argument('--wait', type=int, default=60)
    configure.add_argument('--no-ipv6', dest='ipv6', action='store_false')
    configure.add_argument('--check', action='store_true')
    configure.set_defaults(func=cmd_configure)
    renew = sub.add_parser('run')
    renew.add_argument('--force-renewal', action='store_true')
    renew.set_defaults(func=cmd_run)
    status = sub.add_parser('status')
    status.set_defaults(func=cmd_status)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
