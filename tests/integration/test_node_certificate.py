"""bootstrap_node.yml's optional step 5 against a private simulator: a custom TLS certificate for the node's
API through POST /nodes/{node}/certificates/custom. A new TLS connection presents it afterwards, a second run is
changed=0, a key that does not match gets PVE's error and changes nothing, a token without Sys.Modify on
/nodes/<node> gets 403 and changes nothing; the key never appears in the output.

The module uses only a lab of its own (it changes the certificate the simulator serves).
"""

import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from playbooks import PrivateLab, run_playbook
from test_bootstrap_node import ADMIN, ADMIN_SECRET, Lab, _run, changed_tasks

pytestmark = pytest.mark.own_lab

NOSYS = 'helper@pve!nosys'
NOSYS_SECRET = 'cert14-nosys-secret-0123456789'
TASK = "Install the node's custom TLS certificate and check that the API presents it"


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _fingerprint(der):
    digest = hashlib.sha256(der).hexdigest().upper()
    return ':'.join(digest[i:i + 2] for i in range(0, len(digest), 2))


def issue(ca_dir, common_name):
    """A server certificate for 127.0.0.1 from the lab CA; (cert PEM, key PEM, fingerprint)."""
    ca_cert = x509.load_pem_x509_certificate(open(os.path.join(ca_dir, 'ca.pem'), 'rb').read())
    ca_key = serialization.load_pem_private_key(open(os.path.join(ca_dir, 'ca-key.pem'), 'rb').read(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(common_name), x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key),
            _fingerprint(cert.public_bytes(serialization.Encoding.DER)))


def presented(lab):
    """The certificate a NEW verified TLS connection (lab CA, host 127.0.0.1) gets: (fingerprint, subject CN)."""
    url = urlsplit(lab.env['PROXMOX_API_URL'])
    context = ssl.create_default_context(cafile=lab.verify)
    with socket.create_connection((url.hostname, url.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=url.hostname) as tls:
            subject = dict(item[0] for item in tls.getpeercert()['subject'])
            return _fingerprint(tls.getpeercert(binary_form=True)), subject['commonName']


def custom_info(lab):
    answer = lab.api(ADMIN, ADMIN_SECRET, 'GET', '/nodes/{node}/certificates/info')
    assert answer.status_code == 200, answer.text
    return [entry for entry in answer.json()['data'] if entry['filename'] == 'pveproxy-ssl.pem']


@pytest.fixture(scope='module')
def lab():
    with PrivateLab() as env:
        lab = Lab(env)
        lab.control('POST', '/tokens', {'token_id': ADMIN, 'secret': ADMIN_SECRET, 'privs': ['*']})
        lab.control('POST', '/tokens', {'token_id': NOSYS, 'secret': NOSYS_SECRET,
                                        'privs': ['Sys.Audit', 'Permissions.Modify', 'User.Modify',
                                                  'Realm.AllocateUser']})
        lab.ca_dir = os.path.dirname(lab.verify)
        yield lab


@pytest.fixture(scope='module')
def files(lab, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('certs')
    cert, key, fingerprint = issue(lab.ca_dir, 'pve-custom.lab.example')
    dummy_cert, other_key, dummy_fp = issue(lab.ca_dir, 'other.lab.example')
    paths = {}
    for name, text in (('cert.pem', cert), ('key.pem', key), ('other-key.pem', other_key)):
        (tmp / name).write_text(text)
        paths[name] = str(tmp / name)
    return dict(paths, cert=cert, key=key, other_key=other_key, fingerprint=fingerprint)


def with_cert(lab, files, key_file, **kwargs):
    """bootstrap_node.yml with the administrator token and the certificate's files."""
    env = dict(lab.env, PROXMOX_ADMIN_TOKEN_ID=ADMIN, PROXMOX_ADMIN_TOKEN_SECRET=ADMIN_SECRET)
    return _run(env, {'cloudpods_api_user': 'cert-api@pve', 'cloudpods_api_token': 'prov',
                      'cloudpods_api_role': 'CertProv', 'cloudpods_net_role': 'CertNet',
                      'cloudpods_node_certificate': files['cert.pem'], 'cloudpods_node_key': files[key_file]},
                **kwargs)


def _key_body(pem):
    return ''.join(pem.strip().splitlines()[1:-1])


def test_without_sys_modify_403_and_nothing_changes(lab, files):
    before = presented(lab)
    answer = lab.api(NOSYS, NOSYS_SECRET, 'POST', '/nodes/{node}/certificates/custom', certificates=files['cert'],
                     key=files['key'], force=1, restart=1)
    assert (answer.status_code, answer.reason) == (403, 'Permission check failed (/nodes/pve, Sys.Modify)')
    # The module with that token (bootstrap_node.yml would stop earlier: it also lacks Sys.Modify on /access).
    run = run_playbook([{'name': 'cert', 'mpanel.cloudpods.proxmox_node_certificate': {
        'certificate': files['cert'], 'private_key': files['key']}}],
        env=dict(lab.env, PROXMOX_API_TOKEN_ID=NOSYS, PROXMOX_API_TOKEN_SECRET=NOSYS_SECRET))
    assert run.rc != 0
    assert 'Permission check failed (/nodes/pve, Sys.Modify)' in run.stdout, run.stdout[-3000:]
    assert _key_body(files['key']) not in run.stdout + run.stderr
    assert custom_info(lab) == [] and presented(lab) == before


def test_mismatched_key_gets_pves_error_and_changes_nothing(lab, files):
    before = presented(lab)
    answer = lab.api(ADMIN, ADMIN_SECRET, 'POST', '/nodes/{node}/certificates/custom', certificates=files['cert'],
                     key=files['other_key'], restart=1)
    assert answer.status_code == 500
    assert answer.reason.startswith('Setting certificate files failed - key does not match the certificate (chain)')
    run = with_cert(lab, files, 'other-key.pem')
    assert run.rc != 0
    assert 'key does not match the certificate (chain)' in run.stdout, run.stdout[-3000:]
    assert _key_body(files['other_key']) not in run.stdout + run.stderr
    assert custom_info(lab) == [] and presented(lab) == before


def test_install_then_new_connections_present_it_and_second_run_is_unchanged(lab, files):
    assert presented(lab)[0] != files['fingerprint']
    check = with_cert(lab, files, 'key.pem', check=True)
    assert check.rc == 0, check.stdout[-3000:]
    assert TASK in changed_tasks(check) and custom_info(lab) == []

    run = with_cert(lab, files, 'key.pem', diff=True)
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert TASK in changed_tasks(run)
    assert _key_body(files['key']) not in run.stdout + run.stderr
    result = [task['result'] for task in run.tasks if task['name'] == TASK][0]
    assert result['diff']['after'] == {'custom_fingerprint': files['fingerprint'],
                                       'presented_fingerprint': files['fingerprint']}
    assert result['diff']['before']['custom_fingerprint'] is None
    assert result['info']['subject'] == '/CN=pve-custom.lab.example' and 'pem' not in result['info']
    assert presented(lab) == (files['fingerprint'], 'pve-custom.lab.example')
    info = custom_info(lab)
    assert len(info) == 1 and info[0]['fingerprint'] == files['fingerprint']
    assert info[0]['subject'] == '/CN=pve-custom.lab.example'
    assert set(info[0]['san']) == {'pve-custom.lab.example', '127.0.0.1'}
    assert info[0]['notbefore'] < info[0]['notafter']
    nodes = lab.api(ADMIN, ADMIN_SECRET, 'GET', '/nodes').json()['data']
    assert nodes[0]['ssl_fingerprint'] == files['fingerprint']

    again = with_cert(lab, files, 'key.pem')
    assert again.rc == 0, again.stdout[-3000:]
    assert changed_tasks(again) == []
    uploads = [r for r in lab.control('GET', '/state')['requests']
               if r['path'].endswith('/certificates/custom') and r['status'] == 200]
    assert len(uploads) == 1


def test_custom_endpoint_answers_as_pve(lab, files):
    """With a custom certificate installed: no force, junk, the stored key, then DELETE with restart brings the
    lab certificate back, and without a stored key a key is required."""
    answer = lab.api(ADMIN, ADMIN_SECRET, 'POST', '/nodes/{node}/certificates/custom', certificates=files['cert'],
                     key=files['key'], force=1, restart=1)
    assert answer.status_code == 200, answer.text
    answer = lab.api(ADMIN, ADMIN_SECRET, 'POST', '/nodes/{node}/certificates/custom', certificates=files['cert'],
                     key=files['key'])
    assert (answer.status_code, answer.reason) == (500, 'Custom certificate file exists but force flag is not set.')
    answer = lab.api(ADMIN, ADMIN_SECRET, 'POST', '/nodes/{node}/certificates/custom', certificates='not a pem')
    assert answer.status_code == 400
    assert answer.json()['errors'] == {'certificates': 'invalid format - not a valid PEM-formatted string.'}
    # The stored key is used when none is given (force: the file exists).
    answer = lab.api(ADMIN, ADMIN_SECRET, 'POST', '/nodes/{node}/certificates/custom', certificates=files['cert'],
                     force=1)
    assert answer.status_code == 200, answer.text
    assert answer.json()['data']['fingerprint'] == files['fingerprint']
    answer = lab.api(ADMIN, ADMIN_SECRET, 'DELETE', '/nodes/{node}/certificates/custom', restart=1)
    assert answer.status_code == 200, answer.text
    assert custom_info(lab) == []
    assert presented(lab)[1] == 'localhost'
    answer = lab.api(ADMIN, ADMIN_SECRET, 'POST', '/nodes/{node}/certificates/custom', certificates=files['cert'])
    assert answer.status_code == 400
    assert answer.json()['errors'] == {'key': 'Attempted to upload custom certificate without (existing) key.'}
