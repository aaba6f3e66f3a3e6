"""``/nodes/{node}/certificates``: ``info`` and ``custom`` (upload, delete) as PVE 8 answers them.

pve-manager ``PVE/API2/Certificates.pm`` and ``PVE/CertHelpers.pm`` ``set_cert_files``:
- ``POST custom`` needs ``Sys.Modify`` on ``/nodes/{node}``; ``certificates`` is a PEM chain,
  ``key`` is optional only while a custom key is stored (else the parameter error
  ``Attempted to upload custom certificate without (existing) key.``); without ``force`` an
  existing custom certificate is refused (``Custom certificate file exists but force flag is
  not set.``); a key that does not match the certificate is refused and the old files stay
  (``Setting certificate files failed - key does not match the certificate (chain) ...``).
- ``restart=1`` is ``systemctl reload-or-restart pveproxy``: here the listening socket's TLS
  context is replaced, so every NEW connection presents the new certificate (open connections
  keep the old one, as pveproxy's old workers do).
- ``DELETE custom`` drops the files; with ``restart=1`` the lab's own certificate is served again.
- ``GET info`` lists the certificates the node has (the lab CA as ``pve-root-ca.pem``, the lab
  server certificate as ``pve-ssl.pem``, the custom one as ``pveproxy-ssl.pem``).

The custom files live in memory like the access configuration: a restart of pvesim or
``/_lab/reset`` forgets them and the lab certificate is served again.
"""

import hashlib
import os
import re
import ssl
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from .api import Call, Perm, route
from .errors import ParamError, fail
from .schema import FormatError, P, required

NODE_MODIFY = Perm("/nodes/{node}", "Sys.Modify")


def _pem_blocks_re(label: str, multiple: bool) -> re.Pattern:
    """Whole-content match of PEM blocks, as PVE::Certificate::check_pem accepts them (after the leading text)."""
    block = (rf"-----BEGIN {label}-----\s*(?:[0-9A-Za-z+/]+\s*\n)*[0-9A-Za-z+/]*(?:=\s*\n=|={{0,2}})?\s*\n"
             rf"-----END {label}-----\s*")
    return re.compile(rf"(?:{block}\n*)*{block}" if multiple else block)


CHAIN_RE = _pem_blocks_re("CERTIFICATE", True)
ANY_PEM_RE = _pem_blocks_re(".*?", False)


def _pem_chain(value: str, _name: str) -> None:
    """Format ``pem-certificate-chain``: PEM text and certificates that parse."""
    text = _strip_leading_text(value)
    try:
        parsed = CHAIN_RE.fullmatch(text) and x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        parsed = None
    if not parsed:
        raise FormatError("not a valid PEM-formatted string.")


def _pem_string(value: str, _name: str) -> None:
    """Format ``pem-string``: one PEM block of any label."""
    if not ANY_PEM_RE.fullmatch(_strip_leading_text(value)):
        raise FormatError("not a valid PEM-formatted string.")


def _strip_leading_text(text: str) -> str:
    """PVE::Certificate::strip_leading_text: anything before the first PEM header goes."""
    start = text.find("-----BEGIN ")
    return text[start:] if start >= 0 else text


def fingerprint(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _san_value(name) -> str:
    """PVE::Certificate's parse_san: DNS names as they are, IPv4 dotted, IPv6 as eight 4-digit hex groups."""
    if isinstance(name, x509.DNSName):
        return name.value
    packed = name.value.packed
    if len(packed) == 4:
        return str(name.value)
    return ":".join(packed[i:i + 2].hex() for i in range(0, 16, 2))


def _name(name: x509.Name) -> str:
    """X509_NAME_oneline: ``/CN=host/O=org``."""
    return "".join(f"/{attr.rfc4514_attribute_name}={attr.value}" for attr in name)


def certificate_info(pem: str, filename: str) -> dict:
    """PVE::Certificate::get_certificate_info of the chain's first certificate."""
    cert = x509.load_pem_x509_certificates(pem.encode())[0]
    der = cert.public_bytes(Encoding.DER)
    try:
        san = [_san_value(name) for name in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
               if isinstance(name, (x509.DNSName, x509.IPAddress))]
    except x509.ExtensionNotFound:
        san = []
    key = cert.public_key()
    key_type = {rsa.RSAPublicKey: "rsaEncryption", ec.EllipticCurvePublicKey: "id-ecPublicKey"}
    info = {
        "filename": filename,
        "fingerprint": fingerprint(der),
        "subject": _name(cert.subject),
        "issuer": _name(cert.issuer),
        "notbefore": int(cert.not_valid_before_utc.timestamp()),
        "notafter": int(cert.not_valid_after_utc.timestamp()),
        "san": san,
        "pem": cert.public_bytes(Encoding.PEM).decode(),
        "public-key-type": next((name for kind, name in key_type.items() if isinstance(key, kind)), "unknown"),
    }
    if hasattr(key, "key_size"):
        info["public-key-bits"] = key.key_size
    return info


def tls_context(cert_pem: str, key_pem: str) -> ssl.SSLContext:
    """A server context from PEM text; ssl.SSLError when the key does not match."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="pvesim-cert-") as tmp:
        cert_file, key_file = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "cert.key")
        with open(os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600), "w", encoding="ascii") as handle:
            handle.write(key_pem)
        with open(cert_file, "w", encoding="ascii") as handle:
            handle.write(cert_pem)
        context.load_cert_chain(cert_file, key_file)
    return context


class NodeCertificates:
    """The node's custom certificate files and the TLS context pveproxy serves."""

    def __init__(self, lab_cert_file: str | None, lab_ca_file: str | None, lab_context):
        self.lab_cert_file = lab_cert_file
        self.lab_ca_file = lab_ca_file
        self.lab_context = lab_context
        self.custom_pem: str | None = None
        self.custom_key: str | None = None
        self.serving = lab_context
        self.serving_pem = _read(lab_cert_file)

    def reset(self) -> None:
        self.custom_pem = self.custom_key = None
        self.serving = self.lab_context
        self.serving_pem = _read(self.lab_cert_file)

    def served_fingerprint(self) -> str:
        if not self.serving_pem:
            return ""
        return certificate_info(self.serving_pem, "")["fingerprint"]

    def reload(self) -> None:
        """``systemctl reload-or-restart pveproxy``: the custom files if present, else the lab's."""
        if self.custom_pem and self.custom_key and self.lab_context is not None:
            self.serving = tls_context(self.custom_pem, self.custom_key)
            self.serving_pem = self.custom_pem
        else:
            self.serving = self.lab_context
            self.serving_pem = _read(self.lab_cert_file)

    def info(self) -> list:
        found = []
        for path, filename in ((self.lab_ca_file, "pve-root-ca.pem"), (self.lab_cert_file, "pve-ssl.pem")):
            text = _read(path)
            if text:
                found.append(certificate_info(text, filename))
        if self.custom_pem:
            found.append(certificate_info(self.custom_pem, "pveproxy-ssl.pem"))
        return found


def _read(path: str | None) -> str | None:
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="ascii") as handle:
        return handle.read()


def _certs(call: Call) -> NodeCertificates:
    return call.cluster.certificates


@route("GET", "/nodes/{node}/certificates")
def certificates_index(call: Call):
    return [{"name": name} for name in ("acme", "custom", "info")]


@route("GET", "/nodes/{node}/certificates/info")
def certificates_info(call: Call):
    return _certs(call).info()


@route("POST", "/nodes/{node}/certificates/custom",
       {"certificates": required(format=_pem_chain), "key": P(format=_pem_string),
        "force": P(type="boolean"), "restart": P(type="boolean")},
       check=NODE_MODIFY)
def upload_custom(call: Call):
    certs = _certs(call)
    chain = _strip_leading_text(call.params["certificates"])
    key = call.params.get("key")
    if key:
        key = _strip_leading_text(key)
    elif not certs.custom_key:
        raise ParamError({"key": "Attempted to upload custom certificate without (existing) key."})
    if not call.params.get("force") and certs.custom_pem:
        raise fail("Custom certificate file exists but force flag is not set.")
    try:
        tls_context(chain, key or certs.custom_key)
    except ssl.SSLError as exc:
        # set_cert_files restores the old files and dies; nothing changed.
        raise fail("Setting certificate files failed - key does not match the certificate (chain) "
                   f"({exc.reason or exc.__class__.__name__})") from None
    certs.custom_pem = chain
    certs.custom_key = key or certs.custom_key
    if call.params.get("restart"):
        certs.reload()
    return certificate_info(chain, "pveproxy-ssl.pem")


@route("DELETE", "/nodes/{node}/certificates/custom", {"restart": P(type="boolean")}, check=NODE_MODIFY)
def delete_custom(call: Call):
    certs = _certs(call)
    certs.custom_pem = certs.custom_key = None
    if call.params.get("restart"):
        certs.reload()
