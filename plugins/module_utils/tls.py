"""Local CA and leaf certificates with mkcert 1.4.4's profile, built with ``cryptography``. Pure core.

What it answers:

- what a CA or leaf certificate must contain (``CAProfile``, ``LeafProfile``, ``build_ca``, ``issue_leaf``);
- whether an existing leaf must be re-issued, and why (``leaf_reasons``), the one question the
  ``tls_certificate`` module asks before writing anything;
- how an existing CA differs from what was asked (``ca_drift``): reported, never acted on, because
  replacing a CA breaks trust everywhere it was installed;
- whether a CA certificate is in the system trust store or an NSS database (``TrustStore``, ``nss_*``).

Deliberate differences from mkcert: no e-mail/URI SANs (the gateway serves hostnames and
addresses only); ECDSA leaves carry KeyUsage digitalSignature only, because keyEncipherment is an
RSA key-transport usage (RFC 8813); optional name constraints on the CA; a leaf is never re-issued
while it is still right (mkcert re-issues on every run).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import getpass
import glob
import hashlib
import ipaddress
import os
import re
import secrets
import socket
from dataclasses import dataclass

from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - the module reports it with missing_required_lib
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = _exc

KEY_TYPES = ("rsa", "ecdsa")
RSA_SIZES = (2048, 3072, 4096)  # the only sizes: larger keys cost minutes to generate and add nothing here
CA_RSA_BITS = 3072
LEAF_RSA_BITS = 2048
CA_VALIDITY_YEARS = 10
LEAF_VALIDITY = (2, 3)  # years, months: mkcert's "2 years 3 months", always under 825 days
MAX_LEAF_DAYS = 825  # Apple's limit for TLS server certificates, custom roots included
MAX_LONG_LEAF_DAYS = 3650  # hard ceiling even with allow_long_validity
MAX_CA_DAYS = 7305  # 20 years: twice mkcert's CA lifetime, and far from datetime's range
MAX_SANS = 100  # names per certificate (Let's Encrypt's limit too)
DEFAULT_RENEW_BEFORE_DAYS = 30
DEFAULT_CA_WARNING_DAYS = 180
CA_CERT_FILE = "rootCA.pem"
CA_KEY_FILE = "rootCA-key.pem"
CA_ORGANIZATION = "Hy-Home development CA"
LEAF_ORGANIZATION = "Hy-Home development certificate"

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


# --------------------------------------------------------------------------------------------
# Names


@dataclass(frozen=True, order=True)
class San:
    """One subjectAltName: ``kind`` is ``dns`` or ``ip``; ``value`` is normalised."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{'DNS' if self.kind == 'dns' else 'IP'}:{self.value}"

    def to_x509(self):
        if self.kind == "ip":
            return x509.IPAddress(ipaddress.ip_address(self.value))
        return x509.DNSName(self.value)


def _parse_ip(name: str):
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def parse_san(name) -> San:
    """Validate and normalise one name: hostname, ``*.`` wildcard, IPv4 or IPv6 address."""
    if not isinstance(name, str):
        raise HyHomeError(f"invalid certificate name {name!r}: expected a string")
    raw = name
    name = name.strip()
    if not name:
        raise HyHomeError("invalid certificate name '': empty")
    if "%" in name:
        raise HyHomeError(f"invalid certificate name {raw!r}: IPv6 zone identifiers cannot appear in a certificate")
    ip = _parse_ip(name.strip("[]")) if name.startswith("[") and name.endswith("]") else _parse_ip(name)
    if ip is not None:
        return San("ip", ip.compressed)
    if any(c in name for c in "@/:"):
        raise HyHomeError(
            f"invalid certificate name {raw!r}: only DNS names, '*.' wildcards and IP addresses are supported "
            "(no e-mail addresses, URIs or ports)"
        )
    if not name.isascii():
        raise HyHomeError(
            f"invalid certificate name {raw!r}: write internationalised names in their xn-- (punycode) form"
        )
    host = name.lower()
    if host.endswith("."):
        host = host[:-1]
    if len(host) > 253:
        raise HyHomeError(f"invalid certificate name {raw!r}: longer than 253 characters")
    labels = host.split(".")
    wildcard = labels[0] == "*"
    if "*" in host and not (wildcard and "*" not in ".".join(labels[1:])):
        raise HyHomeError(
            f"invalid certificate name {raw!r}: a wildcard must be the whole left-most label, as in '*.example.test'"
        )
    if wildcard and len(labels) < 3:
        raise HyHomeError(
            f"invalid certificate name {raw!r}: a wildcard needs at least two labels after it "
            "('*.example.test'); clients reject wildcards directly under a top-level label"
        )
    for label in labels[1:] if wildcard else labels:
        if not _LABEL.match(label):
            raise HyHomeError(
                f"invalid certificate name {raw!r}: label {label!r} is not a valid hostname label "
                "(letters, digits and inner hyphens, 1-63 characters)"
            )
    if labels[-1].isdigit():
        raise HyHomeError(f"invalid certificate name {raw!r}: neither an IP address nor a hostname (numeric top label)")
    return San("dns", host)


def parse_sans(names) -> tuple[San, ...]:
    """Validate a list of names; duplicates removed, order kept. An empty list is an error."""
    if isinstance(names, str):
        names = [names]
    out: list[San] = []
    for name in names or ():
        san = parse_san(name)
        if san not in out:
            out.append(san)
    if not out:
        raise HyHomeError("no certificate names given: list at least one hostname or IP address")
    if len(out) > MAX_SANS:
        raise HyHomeError(f"{len(out)} certificate names given, at most {MAX_SANS} are allowed: "
                          "use a '*.' wildcard or several certificates")
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Profiles


def default_owner_label() -> str:
    """``user@host`` of the process, as mkcert puts in its subjects."""
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.geteuid())
    return f"{user}@{socket.gethostname()}"


def default_ca_dir() -> str:
    """CA directory outside any project, like mkcert's CAROOT. ``$HYHOME_CAROOT`` overrides."""
    env = os.environ.get("HYHOME_CAROOT")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    if os.geteuid() == 0:
        return "/var/lib/hyhome/ca"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "hyhome", "ca")


def add_years_months(when: dt.datetime, years: int = 0, months: int = 0) -> dt.datetime:
    """Calendar addition with Go's ``time.AddDate`` semantics (Jan 31 + 1 month = Mar 3)."""
    total = when.month - 1 + months
    year = when.year + years + total // 12
    month = total % 12 + 1
    first = when.replace(year=year, month=month, day=1)
    return first + dt.timedelta(days=when.day - 1)


def check_days(value, what: str, low: int, high: int) -> int:
    """``value`` as an int within ``low..high`` days, else a HyHomeError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise HyHomeError(f"{what} must be a whole number of days, got {value!r}")
    if not low <= value <= high:
        raise HyHomeError(f"{what} must be between {low} and {high} days, got {value}")
    return value


def _check_key(key_type: str, rsa_bits: int, what: str) -> None:
    if key_type not in KEY_TYPES:
        raise HyHomeError(f"unsupported {what} key type {key_type!r}: use one of {', '.join(KEY_TYPES)}")
    if key_type == "rsa" and rsa_bits not in RSA_SIZES:
        raise HyHomeError(f"unsupported {what} RSA key size {rsa_bits}: use one of {', '.join(map(str, RSA_SIZES))}")


@dataclass(frozen=True)
class CAProfile:
    """What a new CA contains. Defaults are mkcert's, named after this project."""

    organization: str = CA_ORGANIZATION
    organizational_unit: str = ""
    common_name: str = ""
    key_type: str = "rsa"
    rsa_bits: int = CA_RSA_BITS
    validity_days: int | None = None  # None: 10 calendar years
    permitted_dns: tuple[str, ...] = ()
    permitted_ip: tuple[str, ...] = ()

    def __post_init__(self):
        _check_key(self.key_type, self.rsa_bits, "CA")
        if self.validity_days is not None:
            check_days(self.validity_days, "the CA validity (validity_days)", 1, MAX_CA_DAYS)
        if not self.organization.strip():
            raise HyHomeError("the CA organization (O) must not be empty")
        for domain in self.permitted_dns:
            san = parse_san(domain.lstrip("."))
            if san.kind != "dns" or san.value.startswith("*."):
                raise HyHomeError(
                    f"invalid permitted DNS name constraint {domain!r}: give a domain such as 'home.arpa'"
                )
        for net in self.permitted_ip:
            try:
                ipaddress.ip_network(net, strict=True)
            except ValueError as exc:
                raise HyHomeError(
                    f"invalid permitted IP range {net!r}: {exc} (use CIDR, e.g. 192.168.0.0/16)"
                ) from None

    @property
    def owner(self) -> str:
        return self.organizational_unit or default_owner_label()

    def subject(self):
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization)]
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, self.owner))
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, self.common_name or f"Hy-Home {self.owner}"))
        return x509.Name(attrs)


@dataclass(frozen=True)
class LeafProfile:
    """What the leaf certificate must contain, and when it is due for renewal."""

    sans: tuple[San, ...]
    key_type: str = "rsa"
    rsa_bits: int = LEAF_RSA_BITS
    validity_days: int | None = None  # None: 2 years 3 months from issuance, like mkcert
    allow_long_validity: bool = False
    client_auth: bool = False
    renew_before_days: int = DEFAULT_RENEW_BEFORE_DAYS
    organization: str = LEAF_ORGANIZATION
    organizational_unit: str = ""  # empty: user@host of the process, like mkcert

    def __post_init__(self):
        if not self.sans:
            raise HyHomeError("no certificate names given: list at least one hostname or IP address")
        _check_key(self.key_type, self.rsa_bits, "certificate")
        if self.validity_days is not None:
            check_days(self.validity_days, "the certificate validity (validity_days)", 1, MAX_LONG_LEAF_DAYS)
            if self.validity_days > MAX_LEAF_DAYS and not self.allow_long_validity:
                raise HyHomeError(
                    f"certificate validity of {self.validity_days} days is over the {MAX_LEAF_DAYS}-day limit "
                    "that Apple platforms (and soon browsers) enforce; lower it or set allow_long_validity"
                )
        check_days(self.renew_before_days, "renew_before_days", 0, MAX_LONG_LEAF_DAYS)
        if self.renew_before_days >= self.nominal_days:
            raise HyHomeError(
                f"renew_before_days ({self.renew_before_days}) must be shorter than the validity "
                f"({self.nominal_days} days), or every run would re-issue the certificate"
            )
        if not self.organization.strip():
            raise HyHomeError("the certificate organization (O) must not be empty")
        if not self.organizational_unit:
            object.__setattr__(self, "organizational_unit", default_owner_label())

    @classmethod
    def from_names(cls, names, **kwargs) -> LeafProfile:
        return cls(sans=parse_sans(names), **kwargs)

    @property
    def nominal_days(self) -> int:
        """Validity in days (for the default, the shortest 2y3m span, so checks stay conservative)."""
        if self.validity_days is not None:
            return self.validity_days
        return 365 * 2 + 89

    def not_after(self, now: dt.datetime) -> dt.datetime:
        if self.validity_days is not None:
            return now + dt.timedelta(days=self.validity_days)
        return add_years_months(now, *LEAF_VALIDITY)

    def max_lifetime(self, not_before: dt.datetime) -> dt.timedelta:
        return self.not_after(not_before) - not_before

    def subject(self):
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, self.organizational_unit),
            ]
        )

    def key_usage(self):
        # keyEncipherment is RSA key transport; an ECDSA key cannot do it (RFC 8813).
        return x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=self.key_type == "rsa",
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False,
        )

    def extended_key_usage(self):
        usages = [ExtendedKeyUsageOID.SERVER_AUTH]
        if self.client_auth:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        return x509.ExtendedKeyUsage(usages)


# --------------------------------------------------------------------------------------------
# Keys


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def generate_key(key_type: str, rsa_bits: int = LEAF_RSA_BITS):
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)


def key_to_pem(key) -> bytes:
    """PKCS#8, unencrypted: what mkcert writes and what every TLS server reads."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(data: bytes, what: str = "private key", own_ca: bool = False):
    """Parse a PEM private key (RSA or ECDSA); anything else is a HyHomeError naming ``what``.

    ``own_ca``: the key is the local CA's, which this collection generated and keeps where only its
    owner can read it; cryptography's RSA consistency check (meant for keys from untrusted sources,
    160 ms for an RSA-3072 key on every run) is skipped for it. A leaf key may be one a user put
    in the project, so it is always checked.
    """
    try:
        key = serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=own_ca)
    except (ValueError, TypeError) as exc:
        raise HyHomeError(f"cannot read {what}: not an unencrypted PEM private key ({exc})") from None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm and others
        raise HyHomeError(f"cannot read {what}: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise HyHomeError(f"cannot use {what}: only RSA and ECDSA keys are supported")
    return key


def load_cert(data: bytes, what: str = "certificate"):
    try:
        return x509.load_pem_x509_certificate(data)
    except Exception as exc:
        raise HyHomeError(f"cannot read {what}: not a PEM certificate ({exc})") from None


def key_kind(key_or_public) -> tuple[str, int]:
    """``('rsa', bits)`` or ``('ecdsa', bits)`` for a private or public key."""
    pub = key_or_public.public_key() if hasattr(key_or_public, "public_key") else key_or_public
    if isinstance(pub, rsa.RSAPublicKey):
        return "rsa", pub.key_size
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return ("ecdsa", pub.curve.key_size) if isinstance(pub.curve, ec.SECP256R1) else (f"ecdsa-{pub.curve.name}", 0)
    return type(pub).__name__, 0


def _spki(pub) -> bytes:
    return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def keys_match(key, cert) -> bool:
    return _spki(key.public_key()) == _spki(cert.public_key())


def colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


def cert_fingerprint(cert) -> str:
    """SHA-256 of the DER certificate, as ``openssl x509 -fingerprint -sha256`` prints it."""
    return colon_hex(cert.fingerprint(hashes.SHA256()))


def public_key_fingerprint(key_or_cert) -> str:
    """SHA-256 of the SubjectPublicKeyInfo (safe to log: identifies the key, reveals nothing)."""
    pub = key_or_cert.public_key()
    return colon_hex(hashlib.sha256(_spki(pub)).digest())


def random_serial() -> int:
    """A random positive 128-bit serial, as mkcert draws it."""
    while True:
        serial = secrets.randbits(128)
        if serial:
            return serial


def _sign_hash(_key):
    return hashes.SHA256()


# --------------------------------------------------------------------------------------------
# CA


def build_ca(profile: CAProfile, key, now: dt.datetime | None = None):
    """Self-signed CA: KeyUsage keyCertSign (critical), CA:TRUE pathlen 0 (critical), SKI."""
    now = now or now_utc()
    not_after = (
        add_years_months(now, CA_VALIDITY_YEARS)
        if profile.validity_days is None
        else now + dt.timedelta(days=profile.validity_days)
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(profile.subject())
        .issuer_name(profile.subject())
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(now)
        .not_valid_after(not_after)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    constraints = name_constraints(profile)
    if constraints is not None:
        builder = builder.add_extension(constraints, critical=True)
    return builder.sign(key, _sign_hash(key))


def name_constraints(profile: CAProfile):
    if not profile.permitted_dns and not profile.permitted_ip:
        return None
    permitted = [x509.DNSName(d.lower().rstrip(".")) for d in profile.permitted_dns]
    permitted += [x509.IPAddress(ipaddress.ip_network(n)) for n in profile.permitted_ip]
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)


def _ext(cert, oid):
    try:
        return cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def check_ca_pair(cert, key) -> None:
    """Raise unless ``cert`` is a CA certificate and ``key`` is its private key."""
    if not keys_match(key, cert):
        raise HyHomeError(
            "the CA private key does not belong to the CA certificate: restore the matching "
            f"{CA_KEY_FILE}/{CA_CERT_FILE} pair (or regenerate the CA on purpose)"
        )
    bc = _ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    ku = _ext(cert, ExtensionOID.KEY_USAGE)
    if bc is None or not bc.value.ca or (ku is not None and not ku.value.key_cert_sign):
        raise HyHomeError("the CA certificate is not a CA (BasicConstraints CA:TRUE and keyCertSign are required)")


def ca_drift(cert, profile: CAProfile) -> list[str]:
    """How an existing CA differs from the requested profile (reported; a CA is never replaced for it)."""
    drift = []
    kind = key_kind(cert.public_key())
    want = (profile.key_type, profile.rsa_bits if profile.key_type == "rsa" else 256)
    if kind != want:
        drift.append(f"key is {kind[0]}-{kind[1]}, profile asks {want[0]}-{want[1]}")
    if cert.subject != profile.subject():
        have, want_s = cert.subject.rfc4514_string(), profile.subject().rfc4514_string()
        drift.append(f"subject is '{have}', profile asks '{want_s}'")
    have_nc = _ext(cert, ExtensionOID.NAME_CONSTRAINTS)
    want_nc = name_constraints(profile)
    if (have_nc.value if have_nc else None) != want_nc:
        drift.append("name constraints differ from the profile")
    return drift


def days_left(cert, now: dt.datetime | None = None) -> float:
    now = now or now_utc()
    return (cert.not_valid_after_utc - now).total_seconds() / 86400


def ca_status(cert, now: dt.datetime | None = None, warning_days: int = DEFAULT_CA_WARNING_DAYS) -> dict:
    left = days_left(cert, now)
    return {
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "days_left": int(left),
        "expired": left <= 0,
        "expires_soon": left <= warning_days,
        "subject": cert.subject.rfc4514_string(),
        "serial": f"{cert.serial_number:X}",
        "fingerprint_sha256": cert_fingerprint(cert),
        "key": "{}-{}".format(*key_kind(cert.public_key())),
    }


def ca_unusable(cert, ca_dir: str, now: dt.datetime | None = None) -> str | None:
    """Why the CA in ``ca_dir`` cannot sign today (expired, or not valid yet), or None."""
    now = now or now_utc()
    if cert.not_valid_after_utc <= now:
        return (f"the local CA in {ca_dir} expired on {cert.not_valid_after_utc.isoformat()}: clients trust nothing "
                "it signs. Create a new CA (local_ca regenerate=always, or tls_ca_regenerate=always), then "
                "re-issue the certificates and re-install trust on every host")
    if cert.not_valid_before_utc > now + dt.timedelta(minutes=5):
        return (f"the local CA in {ca_dir} is not valid before {cert.not_valid_before_utc.isoformat()}: "
                "check this machine's clock")
    return None


def ca_warning(status: dict) -> str | None:
    if status["expired"]:
        return (
            f"THE LOCAL CA EXPIRED on {status['not_after']}: no certificate it signed is trusted any more. "
            "Create a new CA (regenerate=always), re-issue every certificate and re-install trust on every host."
        )
    if status["expires_soon"]:
        return (
            f"THE LOCAL CA EXPIRES in {status['days_left']} days ({status['not_after']}). Plan a new CA "
            "(regenerate=always), then re-issue certificates and re-install trust on every host before that date."
        )
    return None


# --------------------------------------------------------------------------------------------
# Leaf


def _dns_within(name: str, constraint: str) -> bool:
    name = name[2:] if name.startswith("*.") else name
    constraint = constraint.lower().rstrip(".")
    if constraint.startswith("."):
        return name.endswith(constraint)
    return name == constraint or name.endswith("." + constraint)


def check_name_constraints(sans, ca_cert) -> None:
    """Refuse names the CA's name constraints forbid: clients would reject the certificate."""
    nc = _ext(ca_cert, ExtensionOID.NAME_CONSTRAINTS)
    if nc is None:
        return
    permitted = nc.value.permitted_subtrees or []
    dns = [g.value for g in permitted if isinstance(g, x509.DNSName)]
    nets = [g.value for g in permitted if isinstance(g, x509.IPAddress)]
    bad = []
    for san in sans:
        if san.kind == "dns" and dns and not any(_dns_within(san.value, c) for c in dns):
            bad.append(str(san))
        if san.kind == "ip" and nets:
            addr = ipaddress.ip_address(san.value)
            if not any(addr.version == n.version and addr in n for n in nets):
                bad.append(str(san))
    if bad:
        raise HyHomeError(
            f"the CA's name constraints do not permit {', '.join(bad)}: clients would reject this certificate"
        )


def issue_leaf(profile: LeafProfile, key, ca_cert, ca_key, now: dt.datetime | None = None):
    """Sign a leaf with mkcert's extensions: KU (critical), EKU, AKI, SAN; subject O/OU, no CN."""
    now = now or now_utc()
    check_name_constraints(profile.sans, ca_cert)
    ski = _ext(ca_cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    aki = (
        x509.AuthorityKeyIdentifier(ski.value.digest, None, None)
        if ski is not None
        else x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(profile.subject())
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(now)
        .not_valid_after(profile.not_after(now))
        .add_extension(profile.key_usage(), critical=True)
        .add_extension(profile.extended_key_usage(), critical=False)
        .add_extension(aki, critical=False)
        .add_extension(x509.SubjectAlternativeName([s.to_x509() for s in profile.sans]), critical=False)
    )
    return builder.sign(ca_key, _sign_hash(ca_key))


def cert_sans(cert) -> set[San]:
    ext = _ext(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    if ext is None:
        return set()
    out = set()
    for gn in ext.value:
        if isinstance(gn, x509.DNSName):
            out.add(San("dns", gn.value.lower()))
        elif isinstance(gn, x509.IPAddress):
            out.add(San("ip", gn.value.compressed))
        else:
            out.add(San(type(gn).__name__, str(gn.value)))
    return out


@dataclass(frozen=True)
class Reason:
    """Why a leaf is (or would be) re-issued: a stable ``code`` and a sentence for people."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# Codes that mean the existing key cannot be reused for the new certificate.
KEY_REASONS = frozenset({"key_missing", "key_unparsable", "key_type"})


def _profile_differences(cert, profile: LeafProfile, ca_cert) -> list[str]:
    diffs = []
    if cert.subject != profile.subject():
        diffs.append(f"subject is '{cert.subject.rfc4514_string()}', expected '{profile.subject().rfc4514_string()}'")
    expected = {
        ExtensionOID.KEY_USAGE: (True, profile.key_usage()),
        ExtensionOID.EXTENDED_KEY_USAGE: (False, profile.extended_key_usage()),
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER: (False, None),
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME: (False, None),
    }
    seen = set()
    for ext in cert.extensions:
        name = ext.oid._name
        seen.add(ext.oid)
        if ext.oid not in expected:
            diffs.append(f"unexpected extension {name}")
            continue
        critical, value = expected[ext.oid]
        if ext.critical != critical:
            diffs.append(f"{name} is {'critical' if ext.critical else 'not critical'}")
        if ext.oid == ExtensionOID.EXTENDED_KEY_USAGE:
            if set(ext.value) != set(value):
                diffs.append(f"extendedKeyUsage is {sorted(u._name for u in ext.value)}")
        elif value is not None and ext.value != value:
            diffs.append(f"{name} differs")
    for oid in expected:
        if oid not in seen:
            diffs.append(f"missing extension {oid._name}")
    if not isinstance(cert.signature_hash_algorithm, hashes.SHA256):
        algo = cert.signature_hash_algorithm.name if cert.signature_hash_algorithm else "none"
        diffs.append(f"signature hash is {algo}, expected sha256")
    return diffs


def _signed_by(cert, ca_cert) -> str | None:
    """None when ``ca_cert`` signed ``cert``; otherwise why not."""
    if cert.issuer != ca_cert.subject:
        return f"issuer is '{cert.issuer.rfc4514_string()}', the current CA is '{ca_cert.subject.rfc4514_string()}'"
    aki = _ext(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    ski = _ext(ca_cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    if aki is not None and ski is not None and aki.value.key_identifier != ski.value.digest:
        return "its authority key identifier is not the current CA's key"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return "its signature does not verify with the current CA's key"
    return None


def leaf_reasons(profile: LeafProfile, cert_pem: bytes | None, key_pem: bytes | None, ca_cert,
                 now: dt.datetime | None = None) -> list[Reason]:
    """Every reason to (re-)issue the leaf; empty means the existing files are right.

    ``cert_pem``/``key_pem`` are ``None`` when the file does not exist.
    """
    now = now or now_utc()
    reasons: list[Reason] = []
    key = cert = None
    if key_pem is None:
        reasons.append(Reason("key_missing", "the private key file does not exist"))
    else:
        try:
            key = load_key(key_pem, "the private key")
        except HyHomeError as exc:
            reasons.append(Reason("key_unparsable", exc.msg))
    if key is not None:
        kind = key_kind(key)
        want = (profile.key_type, profile.rsa_bits if profile.key_type == "rsa" else 256)
        if kind != want:
            reasons.append(Reason("key_type", f"the key is {kind[0]}-{kind[1]}, the profile asks {want[0]}-{want[1]}"))
    if cert_pem is None:
        reasons.append(Reason("cert_missing", "the certificate file does not exist"))
        return reasons
    try:
        cert = load_cert(cert_pem, "the certificate")
    except HyHomeError as exc:
        reasons.append(Reason("cert_unparsable", exc.msg))
        return reasons
    if key is not None and not keys_match(key, cert):
        reasons.append(Reason("key_mismatch", "the certificate is not for the private key next to it"))
    why = _signed_by(cert, ca_cert)
    if why:
        reasons.append(Reason("issuer", f"not signed by the current CA: {why}"))
    not_after = cert.not_valid_after_utc
    not_before = cert.not_valid_before_utc
    if not_after <= now:
        reasons.append(Reason("expired", f"expired on {not_after.isoformat()}"))
    elif not_after - now <= dt.timedelta(days=profile.renew_before_days):
        left = (not_after - now).days
        reasons.append(Reason("expiring", f"expires in {left} days ({not_after.isoformat()}), "
                                          f"within renew_before_days={profile.renew_before_days}"))
    if not_before > now + dt.timedelta(minutes=5):
        reasons.append(Reason("not_yet_valid", f"not valid before {not_before.isoformat()} (clock skew?)"))
    # One day of slack: the default is calendar based, its length varies with the issue date.
    if not_after - not_before > profile.max_lifetime(not_before) + dt.timedelta(days=1):
        days = (not_after - not_before).days
        reasons.append(Reason("validity_policy", f"valid for {days} days, longer than the policy allows"))
    have = cert_sans(cert)
    want = set(profile.sans)
    if have != want:
        parts = []
        if want - have:
            parts.append("missing " + ", ".join(str(s) for s in sorted(want - have)))
        if have - want:
            parts.append("unexpected " + ", ".join(str(s) for s in sorted(have - want)))
        reasons.append(Reason("sans", "names differ: " + "; ".join(parts)))
    diffs = _profile_differences(cert, profile, ca_cert)
    if diffs:
        reasons.append(Reason("profile", "; ".join(diffs)))
    return reasons


def cert_summary(cert) -> dict:
    """Public facts about a certificate for results and diffs (never key material)."""
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:X}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sans": [str(s) for s in sorted(cert_sans(cert))],
        "key": "{}-{}".format(*key_kind(cert.public_key())),
        "fingerprint_sha256": cert_fingerprint(cert),
        "public_key_fingerprint_sha256": public_key_fingerprint(cert),
    }


def cert_to_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_to_der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# --------------------------------------------------------------------------------------------
# Trust stores


@dataclass(frozen=True)
class TrustStore:
    """A system trust store fed by an anchor directory and a refresh command."""

    family: str
    anchor_dir: str
    suffix: str
    update_cmd: tuple[str, ...]
    bundle: str
    remove_cmd: tuple[str, ...] = ()

    def anchor_path(self, name: str) -> str:
        return os.path.join(self.anchor_dir, name + self.suffix)


SYSTEM_TRUST_STORES = (
    TrustStore("debian", "/usr/local/share/ca-certificates", ".crt", ("update-ca-certificates",),
               "/etc/ssl/certs/ca-certificates.crt", ("update-ca-certificates", "--fresh")),
    TrustStore("rhel", "/etc/pki/ca-trust/source/anchors", ".pem", ("update-ca-trust", "extract"),
               "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"),
)

_TRUST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_trust_name(name: str) -> str:
    if not _TRUST_NAME.match(name or "") or ".." in name:
        raise HyHomeError(
            f"invalid trust name {name!r}: letters, digits, '.', '_' and '-' only (it becomes a file name)"
        )
    return name


def detect_system_store(which) -> TrustStore | None:
    """The trust store of this host, found by its refresh command (``which`` is ``shutil.which``)."""
    for store in SYSTEM_TRUST_STORES:
        if which(store.update_cmd[0]):
            return store
    return None


# Trust installation runs on hosts that may lack ``cryptography``: the helpers below need only the stdlib.
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


def pem_certificates_der(data: bytes) -> list[bytes]:
    """DER of every PEM certificate block in ``data`` (comments and other text ignored)."""
    out = []
    for match in _PEM_CERT.finditer(data or b""):
        try:
            out.append(base64.b64decode(b"".join(match.group(1).split()), validate=True))
        except (binascii.Error, ValueError):
            continue
    return out


def der_to_pem(der: bytes) -> bytes:
    """PEM with 64-column lines, byte for byte what ``cryptography`` and ``ssl`` write."""
    body = base64.b64encode(der)
    lines = b"\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"


def der_fingerprint(der: bytes) -> str:
    return colon_hex(hashlib.sha256(der).digest())


def bundle_contains(bundle_pem: bytes, der: bytes) -> bool:
    """Whether a PEM bundle holds the certificate ``der`` (compared by DER, whatever the text around it)."""
    return der in pem_certificates_der(bundle_pem)


def nss_databases(home: str) -> list[str]:
    """NSS databases of one user (Chromium/Chrome, Firefox profiles), as mkcert finds them."""
    candidates = [
        os.path.join(home, ".pki", "nssdb"),
        os.path.join(home, "snap", "chromium", "current", ".pki", "nssdb"),
    ]
    candidates += glob.glob(os.path.join(home, ".mozilla", "firefox", "*"))
    candidates += glob.glob(os.path.join(home, "snap", "firefox", "common", ".mozilla", "firefox", "*"))
    out = []
    for path in candidates:
        if os.path.isfile(os.path.join(path, "cert9.db")) or os.path.isfile(os.path.join(path, "cert8.db")):
            out.append(path)
    return sorted(set(out))


def nss_dbspec(path: str) -> str:
    return ("sql:" if os.path.isfile(os.path.join(path, "cert9.db")) else "dbm:") + path
