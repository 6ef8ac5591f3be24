"""Throw-away local CA + gateway leaf for the compose scenario (cryptography, on the controller).

usage: make_certs.py <certs dir> <dns name> <ip>   -- writes rootCA.pem, cert.pem, key.pem once.
"""

import datetime as dt
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

out, dns, ip = sys.argv[1], sys.argv[2], sys.argv[3]
if all(os.path.exists(os.path.join(out, f)) for f in ("rootCA.pem", "cert.pem", "key.pem")):
    sys.exit(0)
os.makedirs(out, exist_ok=True)
now = dt.datetime.now(dt.UTC)
ca_key = ec.generate_private_key(ec.SECP256R1())
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hyhome molecule compose CA")])
ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
      .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
      .not_valid_after(now + dt.timedelta(days=7))
      .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
      .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
      .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
      .sign(ca_key, hashes.SHA256()))
key = ec.generate_private_key(ec.SECP256R1())
leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns), x509.IPAddress(ipaddress.ip_address(ip))]),
                       critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
with open(os.path.join(out, "rootCA.pem"), "wb") as fh:
    fh.write(ca.public_bytes(serialization.Encoding.PEM))
with open(os.path.join(out, "cert.pem"), "wb") as fh:
    fh.write(leaf.public_bytes(serialization.Encoding.PEM))
fd = os.open(os.path.join(out, "key.pem"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "wb") as fh:
    fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()))
print("created")
