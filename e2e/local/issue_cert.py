"""Local CA + Istio-style workload certificates for the e2e stack.

Called by e2e/local/issue-cert (which picks the venv python); see that script
for the command line. The CA is created once (in <state>/ca) and reused.
"""
import argparse
import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

USAGE = (
    "usage: issue-cert <namespace> <serviceaccount> [--trust-domain TD] [--subject DN]\n"
    "                  [--out DIR] [--name BASENAME] [--dns NAME]... [--ip ADDR]...\n"
    "                  [--hours N]\n"
    "  issues an EC P-256 workload certificate with URI SAN\n"
    "  spiffe://<TD>/ns/<namespace>/sa/<serviceaccount> (TD default cluster.local),\n"
    "  empty subject unless --subject 'CN=x,O=y', signed by the local CA;\n"
    "  writes <BASENAME>.crt, <BASENAME>.key (PKCS#8 PEM) and <BASENAME>.pem (key + cert,\n"
    "  for Java ssl.keystore.type=PEM) into DIR (default <state>/certs);\n"
    "  BASENAME defaults to <namespace>.<serviceaccount>."
)

NAME_ATTRS = {
    "CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "C": NameOID.COUNTRY_NAME,
    "L": NameOID.LOCALITY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME,
}


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parse_dn(text):
    attrs = []
    for part in filter(None, (p.strip() for p in text.replace("/", ",").split(","))):
        if "=" not in part:
            raise UsageError(f"bad --subject component {part!r} (expected KEY=VALUE, KEY in {sorted(NAME_ATTRS)})")
        key, value = part.split("=", 1)
        if key.strip().upper() not in NAME_ATTRS:
            raise UsageError(f"unsupported --subject attribute {key!r} (supported: {sorted(NAME_ATTRS)})")
        attrs.append(x509.NameAttribute(NAME_ATTRS[key.strip().upper()], value.strip()))
    return x509.Name(attrs)


def write(path, data, mode=0o644):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def load_or_create_ca(ca_dir):
    crt_path, key_path = os.path.join(ca_dir, "ca.crt"), os.path.join(ca_dir, "ca.key")
    if os.path.exists(crt_path) and os.path.exists(key_path):
        with open(crt_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        if cert.not_valid_after_utc > now() + datetime.timedelta(days=2):
            return cert, key
    os.makedirs(ca_dir, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local"),
        x509.NameAttribute(NameOID.COMMON_NAME, "kafka-identity local e2e CA"),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - datetime.timedelta(minutes=5))
        .not_valid_after(now() + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()), 0o600)
    write(crt_path, cert.public_bytes(serialization.Encoding.PEM))
    print(f"issue-cert: created local CA {crt_path}", file=sys.stderr)
    return cert, key


def main(argv):
    p = Parser(add_help=False)
    p.add_argument("namespace")
    p.add_argument("serviceaccount")
    p.add_argument("--trust-domain", default="cluster.local")
    p.add_argument("--subject", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--name", default=None)
    p.add_argument("--dns", action="append", default=[])
    p.add_argument("--ip", action="append", default=[])
    p.add_argument("--hours", type=int, default=24)
    p.add_argument("--state", required=True)  # passed by the wrapper
    p.add_argument("-h", "--help", action="store_true")
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        a = p.parse_args(argv)
        for label, v in (("namespace", a.namespace), ("serviceaccount", a.serviceaccount),
                         ("trust domain", a.trust_domain)):
            if not v or "/" in v or v.startswith("-") or any(c.isspace() for c in v):
                raise UsageError(f"bad {label} {v!r}")
        if a.hours <= 0:
            raise UsageError("--hours must be positive")
        subject = parse_dn(a.subject) if a.subject else x509.Name([])
        ips = [ipaddress.ip_address(i) for i in a.ip]
    except (UsageError, ValueError) as e:
        print(f"issue-cert: {e}\n{USAGE}", file=sys.stderr)
        return 2

    ca_cert, ca_key = load_or_create_ca(os.path.join(a.state, "ca"))
    out = a.out or os.path.join(a.state, "certs")
    os.makedirs(out, exist_ok=True)
    base = a.name or f"{a.namespace}.{a.serviceaccount}"
    spiffe = f"spiffe://{a.trust_domain}/ns/{a.namespace}/sa/{a.serviceaccount}"

    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.UniformResourceIdentifier(spiffe)]
    sans += [x509.DNSName(d) for d in a.dns]
    sans += [x509.IPAddress(i) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - datetime.timedelta(minutes=5))
        .not_valid_after(now() + datetime.timedelta(hours=a.hours))
        # RFC 5280: SAN must be critical when the subject is empty (Istio does the same).
        .add_extension(x509.SubjectAlternativeName(sans), critical=len(subject) == 0)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    crt_pem = cert.public_bytes(serialization.Encoding.PEM)
    write(os.path.join(out, base + ".key"), key_pem, 0o600)
    write(os.path.join(out, base + ".crt"), crt_pem)
    write(os.path.join(out, base + ".pem"), key_pem + crt_pem, 0o600)
    print(f"issue-cert: {os.path.join(out, base)}.crt/.key/.pem  {spiffe}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
