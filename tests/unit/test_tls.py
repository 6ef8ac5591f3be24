"""Pure core of the local CA and leaf certificates: profile fields, re-issue reasons, bad input."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import tls
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.UTC)
NAMES = ["home.arpa", "*.home.arpa", "localhost", "127.0.0.1", "::1", "192.168.1.10"]


def ext(cert, oid):
    return cert.extensions.get_extension_for_oid(oid)


def ext_oids(cert):
    return {e.oid for e in cert.extensions}


def codes(reasons):
    return [r.code for r in reasons]


@pytest.fixture(scope="module")
def ca():
    """RSA-3072 CA with the default profile (built once: RSA key generation is the slow part)."""
    key = tls.generate_key("rsa", 3072)
    profile = tls.CAProfile(organizational_unit="tester@box")
    return tls.build_ca(profile, key, NOW), key


@pytest.fixture(scope="module")
def ec_ca():
    key = tls.generate_key("ecdsa")
    return tls.build_ca(tls.CAProfile(key_type="ecdsa", organizational_unit="tester@box"), key, NOW), key


@pytest.fixture(scope="module")
def rsa_leaf_key():
    return tls.generate_key("rsa", 2048)


@pytest.fixture(scope="module")
def ec_leaf_key():
    return tls.generate_key("ecdsa")


def profile(names=NAMES, **kw):
    kw.setdefault("organizational_unit", "tester@box")
    return tls.LeafProfile.from_names(names, **kw)


def issued(ca, key, prof=None, now=NOW):
    ca_cert, ca_key = ca
    prof = prof or profile(key_type="ecdsa" if isinstance(key, ec.EllipticCurvePrivateKey) else "rsa")
    cert = tls.issue_leaf(prof, key, ca_cert, ca_key, now)
    return prof, tls.cert_to_pem(cert), tls.key_to_pem(key), cert


# ------------------------------------------------------------------------------------------
# Names


def test_names_are_normalised_deduplicated_and_ordered():
    sans = tls.parse_sans(["Home.ARPA.", "*.home.arpa", "home.arpa", "127.0.0.1", "::0:1", "[fe80::1]", "10.0.0.1"])
    assert [str(s) for s in sans] == [
        "DNS:home.arpa", "DNS:*.home.arpa", "IP:127.0.0.1", "IP:::1", "IP:fe80::1", "IP:10.0.0.1",
    ]


def test_single_string_is_one_name():
    assert tls.parse_sans("localhost") == (tls.San("dns", "localhost"),)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("exa mple.test", "not a valid hostname label"),
        ("-a.test", "not a valid hostname label"),
        ("a-.test", "not a valid hostname label"),
        ("a..test", "not a valid hostname label"),
        ("under_score.test", "not a valid hostname label"),
        ("a" * 64 + ".test", "not a valid hostname label"),
        (".".join(["abcdefghi"] * 26), "longer than 253"),
        ("*", "wildcard"),
        ("*.test", "at least two labels"),
        ("a.*.home.arpa", "whole left-most label"),
        ("*a.home.arpa", "whole left-most label"),
        ("a*.home.arpa", "whole left-most label"),
        ("*.*.home.arpa", "whole left-most label"),
        ("home.*", "whole left-most label"),
        ("user@home.arpa", "no e-mail addresses"),
        ("https://home.arpa/", "no e-mail addresses, URIs or ports"),
        ("home.arpa:443", "ports"),
        ("fe80::1%eth0", "zone identifiers"),
        ("bücher.test", "punycode"),
        ("1.2.3", "numeric top label"),
        ("999.1.1.1", "numeric top label"),
    ],
)
def test_invalid_names_are_refused_with_a_reason(name, fragment):
    with pytest.raises(HyHomeError, match="invalid certificate name") as err:
        tls.parse_san(name)
    assert fragment in err.value.msg


def test_non_string_name_is_refused():
    with pytest.raises(HyHomeError, match="expected a string"):
        tls.parse_san(5)


@pytest.mark.parametrize("names", [[], None, ()])
def test_empty_name_list_is_refused(names):
    with pytest.raises(HyHomeError, match="no certificate names"):
        tls.parse_sans(names)


def test_valid_edge_names_are_accepted():
    sans = tls.parse_sans(["xn--bcher-kva.test", "a" * 63 + ".test", "1a.test", "*.a.b", "2001:db8::1"])
    assert len(sans) == 5


# ------------------------------------------------------------------------------------------
# CA profile


def test_ca_profile_fields(ca):
    cert, key = ca
    assert tls.key_kind(cert.public_key()) == ("rsa", 3072)
    assert cert.public_key().public_numbers().e == 65537
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Hy-Home development CA"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "tester@box"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Hy-Home tester@box"
    assert 0 < cert.serial_number < 2**128
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW.replace(year=2036)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    ku = ext(cert, ExtensionOID.KEY_USAGE)
    assert ku.critical and ku.value.key_cert_sign
    assert not (ku.value.digital_signature or ku.value.crl_sign or ku.value.key_encipherment)
    bc = ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ski = ext(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    assert not ski.critical
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    # mkcert's CA has exactly these three extensions (no AKI on a self-signed root, no constraints).
    assert ext_oids(cert) == {
        ExtensionOID.KEY_USAGE, ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    }
    cert.verify_directly_issued_by(cert)
    tls.check_ca_pair(cert, key)


def test_ca_ecdsa_option_and_custom_subject(ec_ca):
    cert, _ = ec_ca
    assert tls.key_kind(cert.public_key()) == ("ecdsa", 256)
    assert isinstance(cert.public_key().curve, ec.SECP256R1)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    p = tls.CAProfile(organization="Lab CA", organizational_unit="ops@lab", common_name="Lab root", validity_days=30)
    key = tls.generate_key("ecdsa")
    c = tls.build_ca(p, key, NOW)
    assert c.subject.rfc4514_string() == "CN=Lab root,OU=ops@lab,O=Lab CA"
    assert c.not_valid_after_utc - c.not_valid_before_utc == dt.timedelta(days=30)


def test_random_serials_differ():
    assert len({tls.random_serial() for _ in range(64)}) == 64


def test_ca_name_constraints_are_critical_and_enforced():
    p = tls.CAProfile(organizational_unit="t@b", key_type="ecdsa", permitted_dns=("home.arpa",),
                      permitted_ip=("127.0.0.0/8", "::1/128"))
    key = tls.generate_key("ecdsa")
    cert = tls.build_ca(p, key, NOW)
    nc = ext(cert, ExtensionOID.NAME_CONSTRAINTS)
    assert nc.critical
    assert set(nc.value.permitted_subtrees) == {
        x509.DNSName("home.arpa"), x509.IPAddress(ipaddress.ip_network("127.0.0.0/8")),
        x509.IPAddress(ipaddress.ip_network("::1/128")),
    }
    assert nc.value.excluded_subtrees is None
    ok = tls.LeafProfile.from_names(["home.arpa", "*.home.arpa", "gw.home.arpa", "127.0.0.1", "::1"],
                                    key_type="ecdsa", organizational_unit="t@b")
    tls.issue_leaf(ok, tls.generate_key("ecdsa"), cert, key, NOW)
    for bad in (["evil.test"], ["home.arpa.evil.test"], ["192.168.1.1"], ["::2"]):
        prof = tls.LeafProfile.from_names(bad, key_type="ecdsa", organizational_unit="t@b")
        with pytest.raises(HyHomeError, match="name constraints do not permit"):
            tls.issue_leaf(prof, tls.generate_key("ecdsa"), cert, key, NOW)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"key_type": "dsa"}, "unsupported CA key type"),
        ({"rsa_bits": 1024}, "unsupported CA RSA key size"),
        ({"rsa_bits": 8192}, "unsupported CA RSA key size 8192: use one of 2048, 3072, 4096"),
        ({"rsa_bits": 10**8}, "unsupported CA RSA key size"),
        ({"validity_days": 0}, r"validity \(validity_days\) must be between 1 and 7305 days, got 0"),
        ({"validity_days": 7306}, "must be between 1 and 7305 days"),
        ({"validity_days": 10**9}, "must be between 1 and 7305 days"),     # not an OverflowError
        ({"validity_days": "365"}, "whole number of days"),
        ({"organization": " "}, "must not be empty"),
        ({"permitted_dns": ("*.home.arpa",)}, "invalid permitted DNS"),
        ({"permitted_dns": ("10.0.0.1",)}, "invalid permitted DNS"),
        ({"permitted_ip": ("10.0.0.1/8",)}, "invalid permitted IP range"),
        ({"permitted_ip": ("nonsense",)}, "invalid permitted IP range"),
    ],
)
def test_bad_ca_profile(kwargs, fragment):
    with pytest.raises(HyHomeError, match=fragment):
        tls.CAProfile(**kwargs)


def test_ca_pair_checks(ca, ec_ca):
    cert, _ = ca
    _, other_key = ec_ca
    with pytest.raises(HyHomeError, match="does not belong to the CA certificate"):
        tls.check_ca_pair(cert, other_key)


def test_a_leaf_is_not_a_ca(ca, ec_leaf_key):
    _, _, _, leaf = issued(ca, ec_leaf_key)
    with pytest.raises(HyHomeError, match="not a CA"):
        tls.check_ca_pair(leaf, ec_leaf_key)


def test_ca_drift_is_reported(ca):
    cert, _ = ca
    assert tls.ca_drift(cert, tls.CAProfile(organizational_unit="tester@box")) == []
    drift = tls.ca_drift(cert, tls.CAProfile(organizational_unit="other@box", key_type="ecdsa",
                                             permitted_dns=("home.arpa",)))
    assert len(drift) == 3
    assert "rsa-3072" in drift[0] and "ecdsa-256" in drift[0]
    assert "subject" in drift[1]
    assert "name constraints" in drift[2]


def test_ca_expiry_status_and_loud_warning(ca):
    cert, _ = ca
    fresh = tls.ca_status(cert, NOW)
    assert not fresh["expires_soon"] and not fresh["expired"] and tls.ca_warning(fresh) is None
    assert fresh["key"] == "rsa-3072" and fresh["fingerprint_sha256"] == tls.cert_fingerprint(cert)
    soon = tls.ca_status(cert, cert.not_valid_after_utc - dt.timedelta(days=100), warning_days=180)
    assert soon["expires_soon"] and soon["days_left"] == 100
    assert "THE LOCAL CA EXPIRES in 100 days" in tls.ca_warning(soon)
    gone = tls.ca_status(cert, cert.not_valid_after_utc + dt.timedelta(days=1))
    assert gone["expired"] and "THE LOCAL CA EXPIRED" in tls.ca_warning(gone)


# ------------------------------------------------------------------------------------------
# Leaf profile


def test_rsa_leaf_profile_fields(ca, rsa_leaf_key):
    ca_cert, _ca_key = ca
    prof, _, _, cert = issued(ca, rsa_leaf_key)
    assert tls.key_kind(cert.public_key()) == ("rsa", 2048)
    assert cert.issuer == ca_cert.subject
    assert cert.subject.rfc4514_string() == "OU=tester@box,O=Hy-Home development certificate"
    assert not cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert 0 < cert.serial_number < 2**128
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == dt.datetime(2029, 2, 22, 12, 0, 0, tzinfo=dt.UTC)  # + 2 years 3 months
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= tls.MAX_LEAF_DAYS
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    ku = ext(cert, ExtensionOID.KEY_USAGE)
    assert ku.critical
    assert ku.value.digital_signature and ku.value.key_encipherment
    assert not (ku.value.key_cert_sign or ku.value.crl_sign or ku.value.content_commitment
                or ku.value.data_encipherment or ku.value.key_agreement)
    eku = ext(cert, ExtendedKeyUsage := ExtensionOID.EXTENDED_KEY_USAGE)
    assert not eku.critical and list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = ext(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    assert not aki.critical
    assert aki.value.key_identifier == ext(ca_cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER).value.digest
    assert aki.value.authority_cert_issuer is None and aki.value.authority_cert_serial_number is None
    san = ext(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    assert not san.critical
    assert san.value.get_values_for_type(x509.DNSName) == ["home.arpa", "*.home.arpa", "localhost"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"), ipaddress.ip_address("192.168.1.10"),
    ]
    # Exactly mkcert's four leaf extensions: no BasicConstraints, no SKI.
    assert ext_oids(cert) == {ExtensionOID.KEY_USAGE, ExtendedKeyUsage, ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
                              ExtensionOID.SUBJECT_ALTERNATIVE_NAME}
    cert.verify_directly_issued_by(ca_cert)
    assert tls.keys_match(rsa_leaf_key, cert)
    assert prof.nominal_days == 819


def test_ecdsa_leaf_profile_fields(ca, ec_leaf_key):
    _, _, _, cert = issued(ca, ec_leaf_key)
    assert tls.key_kind(cert.public_key()) == ("ecdsa", 256)
    ku = ext(cert, ExtensionOID.KEY_USAGE).value
    assert ku.digital_signature and not ku.key_encipherment  # RFC 8813: no key transport with ECDSA


def test_leaf_signed_by_ecdsa_ca(ec_ca, rsa_leaf_key):
    ca_cert, _ = ec_ca
    _, _, _, cert = issued(ec_ca, rsa_leaf_key)
    cert.verify_directly_issued_by(ca_cert)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def test_client_auth_and_custom_validity(ca, ec_leaf_key):
    prof = profile(key_type="ecdsa", client_auth=True, validity_days=90, organization="Lab cert")
    _, _, _, cert = issued(ca, ec_leaf_key, prof)
    assert list(ext(cert, ExtensionOID.EXTENDED_KEY_USAGE).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=90)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Lab cert"


def test_leaf_rsa_size_option():
    assert profile(rsa_bits=3072).rsa_bits == 3072


def test_default_owner_label_is_user_at_host():
    prof = tls.LeafProfile.from_names(["a.test"])
    assert "@" in prof.organizational_unit


@pytest.mark.parametrize(
    ("start", "years", "months", "expected"),
    [
        (dt.datetime(2026, 11, 22, tzinfo=dt.UTC), 2, 3, dt.datetime(2029, 2, 22, tzinfo=dt.UTC)),
        (dt.datetime(2026, 11, 30, tzinfo=dt.UTC), 2, 3, dt.datetime(2029, 3, 2, tzinfo=dt.UTC)),  # Feb 30 -> Mar 2
        (dt.datetime(2021, 1, 31, tzinfo=dt.UTC), 0, 1, dt.datetime(2021, 3, 3, tzinfo=dt.UTC)),
        (dt.datetime(2024, 2, 29, tzinfo=dt.UTC), 10, 0, dt.datetime(2034, 3, 1, tzinfo=dt.UTC)),
    ],
)
def test_calendar_addition_matches_go_adddate(start, years, months, expected):
    assert tls.add_years_months(start, years, months) == expected


def test_default_validity_never_exceeds_825_days():
    day = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    for i in range(0, 366 * 4, 7):
        start = day + dt.timedelta(days=i)
        assert (tls.add_years_months(start, 2, 3) - start).days <= tls.MAX_LEAF_DAYS


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"validity_days": 826}, "over the 825-day limit"),
        ({"validity_days": 3650}, "allow_long_validity"),
        ({"validity_days": 0}, "must be between 1 and 3650 days, got 0"),
        ({"validity_days": 3651, "allow_long_validity": True}, "must be between 1 and 3650 days"),
        ({"validity_days": 10**9, "allow_long_validity": True}, "must be between 1 and 3650 days"),
        ({"key_type": "ed25519"}, "unsupported certificate key type"),
        ({"rsa_bits": 1024}, "unsupported certificate RSA key size"),
        ({"rsa_bits": 8192}, "unsupported certificate RSA key size 8192"),
        ({"renew_before_days": -1}, "renew_before_days must be between 0 and"),
        ({"renew_before_days": 30, "validity_days": 30}, "every run would re-issue"),
        ({"renew_before_days": 900}, "every run would re-issue"),
        ({"organization": ""}, "must not be empty"),
    ],
)
def test_bad_leaf_profile(kwargs, fragment):
    with pytest.raises(HyHomeError, match=fragment):
        profile(**kwargs)


def test_long_validity_needs_the_override(ca, ec_leaf_key):
    prof = profile(key_type="ecdsa", validity_days=3650, allow_long_validity=True)
    _, _, _, cert = issued(ca, ec_leaf_key, prof)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 3650


def test_empty_san_tuple_is_refused():
    with pytest.raises(HyHomeError, match="no certificate names"):
        tls.LeafProfile(sans=())


def test_san_count_is_bounded():
    names = [f"h{i}.home.arpa" for i in range(tls.MAX_SANS)]
    assert len(profile(names).sans) == tls.MAX_SANS
    with pytest.raises(HyHomeError, match=r"^101 certificate names given, at most 100"):
        profile([*names, "one-more.home.arpa"])


# ------------------------------------------------------------------------------------------
# Re-issue reasons


def test_no_reason_when_everything_is_right(ca, rsa_leaf_key):
    prof, cert_pem, key_pem, _ = issued(ca, rsa_leaf_key)
    assert tls.leaf_reasons(prof, cert_pem, key_pem, ca[0], NOW) == []
    # Still right one year later, and the day before the renewal window opens.
    assert tls.leaf_reasons(prof, cert_pem, key_pem, ca[0], NOW + dt.timedelta(days=365)) == []
    later = dt.datetime(2029, 2, 22, 12, 0, tzinfo=dt.UTC) - dt.timedelta(days=31)
    assert tls.leaf_reasons(prof, cert_pem, key_pem, ca[0], later) == []


def test_names_in_another_order_are_not_a_change(ca, rsa_leaf_key):
    _, cert_pem, key_pem, _ = issued(ca, rsa_leaf_key)
    assert tls.leaf_reasons(profile(list(reversed(NAMES))), cert_pem, key_pem, ca[0], NOW) == []


def test_missing_files(ca):
    prof = profile()
    assert codes(tls.leaf_reasons(prof, None, None, ca[0], NOW)) == ["key_missing", "cert_missing"]


def test_missing_certificate_only(ca, rsa_leaf_key):
    prof, _, key_pem, _ = issued(ca, rsa_leaf_key)
    assert codes(tls.leaf_reasons(prof, None, key_pem, ca[0], NOW)) == ["cert_missing"]


def test_missing_key_only(ca, rsa_leaf_key):
    prof, cert_pem, _, _ = issued(ca, rsa_leaf_key)
    assert codes(tls.leaf_reasons(prof, cert_pem, None, ca[0], NOW)) == ["key_missing"]


def test_unparsable_certificate(ca, rsa_leaf_key):
    prof, cert_pem, key_pem, _ = issued(ca, rsa_leaf_key)
    for junk in (b"", b"garbage", cert_pem[:200]):
        reasons = tls.leaf_reasons(prof, junk, key_pem, ca[0], NOW)
        assert codes(reasons) == ["cert_unparsable"]
        assert "not a PEM certificate" in reasons[0].message


def test_unparsable_key(ca, rsa_leaf_key):
    prof, cert_pem, _key_pem, _ = issued(ca, rsa_leaf_key)
    assert codes(tls.leaf_reasons(prof, cert_pem, b"junk", ca[0], NOW)) == ["key_unparsable"]
    encrypted = rsa_leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(b"pw"))
    assert codes(tls.leaf_reasons(prof, cert_pem, encrypted, ca[0], NOW)) == ["key_unparsable"]
    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    assert codes(tls.leaf_reasons(prof, cert_pem, ed, ca[0], NOW)) == ["key_unparsable"]


def test_key_does_not_match_certificate(ca, rsa_leaf_key):
    prof, cert_pem, _, _ = issued(ca, rsa_leaf_key)
    other = tls.key_to_pem(tls.generate_key("rsa", 2048))
    assert codes(tls.leaf_reasons(prof, cert_pem, other, ca[0], NOW)) == ["key_mismatch"]


def test_key_type_differs_from_profile(ca, rsa_leaf_key):
    _, cert_pem, key_pem, _ = issued(ca, rsa_leaf_key)
    reasons = tls.leaf_reasons(profile(key_type="ecdsa"), cert_pem, key_pem, ca[0], NOW)
    assert codes(reasons) == ["key_type", "profile"]  # ECDSA also means no keyEncipherment
    assert "rsa-2048" in reasons[0].message and "ecdsa-256" in reasons[0].message
    assert codes(tls.leaf_reasons(profile(rsa_bits=3072), cert_pem, key_pem, ca[0], NOW)) == ["key_type"]


def test_not_signed_by_the_current_ca(ca, rsa_leaf_key):
    prof, cert_pem, key_pem, _ = issued(ca, rsa_leaf_key)
    # A new CA with the very same subject: issuer name matches, key identifier and signature do not.
    twin_key = tls.generate_key("ecdsa")
    twin = tls.build_ca(tls.CAProfile(organizational_unit="tester@box", key_type="ecdsa"), twin_key, NOW)
    reasons = tls.leaf_reasons(prof, cert_pem, key_pem, twin, NOW)
    assert codes(reasons) == ["issuer"]
    assert "authority key identifier" in reasons[0].message


def test_issuer_name_differs(ca, ec_ca, rsa_leaf_key):
    prof, cert_pem, key_pem, _ = issued(ca, rsa_leaf_key)
    other_ca = tls.build_ca(tls.CAProfile(organizational_unit="x@y", key_type="ecdsa"), ec_ca[1], NOW)
    reasons = tls.leaf_reasons(prof, cert_pem, key_pem, other_ca, NOW)
    assert codes(reasons) == ["issuer"] and "issuer is" in reasons[0].message


def test_forged_signature_is_detected(ca, rsa_leaf_key):
    """Same issuer name and AKI as the CA, but signed by another key."""
    ca_cert, _ = ca
    prof = profile()
    rogue = tls.generate_key("rsa", 2048)
    ski = ext(ca_cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER).value.digest
    cert = (
        x509.CertificateBuilder().subject_name(prof.subject()).issuer_name(ca_cert.subject)
        .public_key(rsa_leaf_key.public_key()).serial_number(5).not_valid_before(NOW)
        .not_valid_after(prof.not_after(NOW))
        .add_extension(prof.key_usage(), critical=True)
        .add_extension(prof.extended_key_usage(), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(ski, None, None), critical=False)
        .add_extension(x509.SubjectAlternativeName([s.to_x509() for s in prof.sans]), critical=False)
        .sign(rogue, hashes.SHA256())
    )
    reasons = tls.leaf_reasons(prof, tls.cert_to_pem(cert), tls.key_to_pem(rsa_leaf_key), ca_cert, NOW)
    assert codes(reasons) == ["issuer"] and "signature does not verify" in reasons[0].message


def test_expiring_within_renew_before_days(ca, rsa_leaf_key):
    prof, cert_pem, key_pem, cert = issued(ca, rsa_leaf_key)
    when = cert.not_valid_after_utc - dt.timedelta(days=10)
    reasons = tls.leaf_reasons(prof, cert_pem, key_pem, ca[0], when)
    assert codes(reasons) == ["expiring"] and "expires in 10 days" in reasons[0].message
    # A wider window catches it earlier.
    early = cert.not_valid_after_utc - dt.timedelta(days=50)
    assert tls.leaf_reasons(prof, cert_pem, key_pem, ca[0], early) == []
    assert codes(tls.leaf_reasons(profile(renew_before_days=60), cert_pem, key_pem, ca[0], early)) == ["expiring"]


def test_expired(ca, rsa_leaf_key):
    prof, cert_pem, key_pem, cert = issued(ca, rsa_leaf_key)
    reasons = tls.leaf_reasons(prof, cert_pem, key_pem, ca[0], cert.not_valid_after_utc + dt.timedelta(seconds=1))
    assert codes(reasons) == ["expired"]


def test_not_yet_valid(ca, rsa_leaf_key):
    prof, cert_pem, key_pem, _ = issued(ca, rsa_leaf_key)
    assert codes(tls.leaf_reasons(prof, cert_pem, key_pem, ca[0], NOW - dt.timedelta(days=2))) == ["not_yet_valid"]


def test_validity_longer_than_policy(ca, rsa_leaf_key):
    _prof, cert_pem, key_pem, _ = issued(ca, rsa_leaf_key)
    reasons = tls.leaf_reasons(profile(validity_days=90), cert_pem, key_pem, ca[0], NOW)
    assert codes(reasons) == ["validity_policy"]
    # A longer policy than the certificate has is no reason: it will be renewed in time.
    long_policy = profile(validity_days=3650, allow_long_validity=True)
    assert tls.leaf_reasons(long_policy, cert_pem, key_pem, ca[0], NOW) == []


def test_san_set_differs(ca, rsa_leaf_key):
    _, cert_pem, key_pem, _ = issued(ca, rsa_leaf_key)
    reasons = tls.leaf_reasons(profile([*NAMES[:-1], "gw.home.arpa"]), cert_pem, key_pem, ca[0], NOW)
    assert codes(reasons) == ["sans"]
    assert reasons[0].message == "names differ: missing DNS:gw.home.arpa; unexpected IP:192.168.1.10"
    assert "missing DNS:new.test" in str(tls.leaf_reasons(profile([*NAMES, "new.test"]), cert_pem, key_pem,
                                                          ca[0], NOW)[0])


def test_profile_differs_client_auth(ca, rsa_leaf_key):
    _, cert_pem, key_pem, _ = issued(ca, rsa_leaf_key)
    reasons = tls.leaf_reasons(profile(client_auth=True), cert_pem, key_pem, ca[0], NOW)
    assert codes(reasons) == ["profile"] and "extendedKeyUsage" in reasons[0].message


def test_profile_differs_subject(ca, rsa_leaf_key):
    _, cert_pem, key_pem, _ = issued(ca, rsa_leaf_key)
    reasons = tls.leaf_reasons(profile(organization="Other"), cert_pem, key_pem, ca[0], NOW)
    assert codes(reasons) == ["profile"] and "subject is" in reasons[0].message


def _custom_leaf(ca, key, prof, *, extra=None, ku_critical=True, drop=None, digest=None):
    ca_cert, ca_key = ca
    ski = ext(ca_cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER).value.digest
    exts = [
        (prof.key_usage(), ku_critical),
        (prof.extended_key_usage(), False),
        (x509.AuthorityKeyIdentifier(ski, None, None), False),
        (x509.SubjectAlternativeName([s.to_x509() for s in prof.sans]), False),
    ]
    if drop:
        exts = [e for e in exts if not isinstance(e[0], drop)]
    if extra:
        exts.append(extra)
    b = (x509.CertificateBuilder().subject_name(prof.subject()).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(7).not_valid_before(NOW).not_valid_after(prof.not_after(NOW)))
    for value, critical in exts:
        b = b.add_extension(value, critical=critical)
    cert = b.sign(ca_key, digest or hashes.SHA256())
    return tls.cert_to_pem(cert)


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"extra": (x509.BasicConstraints(ca=False, path_length=None), True)}, "unexpected extension basicConstraints"),
        ({"ku_critical": False}, "keyUsage is not critical"),
        ({"drop": x509.AuthorityKeyIdentifier}, "missing extension authorityKeyIdentifier"),
        ({"digest": hashes.SHA384()}, "signature hash is sha384"),
    ],
)
def test_profile_differs_extensions(ca, rsa_leaf_key, kw, fragment):
    prof = profile()
    pem = _custom_leaf(ca, rsa_leaf_key, prof, **kw)
    reasons = tls.leaf_reasons(prof, pem, tls.key_to_pem(rsa_leaf_key), ca[0], NOW)
    assert codes(reasons) == ["profile"]
    assert fragment in reasons[0].message


def test_key_usage_differs(ca, rsa_leaf_key):
    prof = profile()
    wrong = profile(key_type="ecdsa")  # digitalSignature only
    ca_cert, ca_key = ca
    cert = tls.issue_leaf(wrong, rsa_leaf_key, ca_cert, ca_key, NOW)
    reasons = tls.leaf_reasons(prof, tls.cert_to_pem(cert), tls.key_to_pem(rsa_leaf_key), ca_cert, NOW)
    assert codes(reasons) == ["profile"] and "keyUsage differs" in reasons[0].message


def test_several_reasons_at_once(ca, rsa_leaf_key):
    _, cert_pem, _, cert = issued(ca, rsa_leaf_key)
    other = tls.key_to_pem(tls.generate_key("rsa", 2048))
    reasons = tls.leaf_reasons(profile(["other.test"]), cert_pem, other, ca[0], cert.not_valid_after_utc)
    assert codes(reasons) == ["key_mismatch", "expired", "sans"]


def test_key_reasons_decide_key_reuse():
    assert {"key_missing", "key_unparsable", "key_type"} == tls.KEY_REASONS


# ------------------------------------------------------------------------------------------
# Keys, fingerprints, summaries


def test_key_pem_is_pkcs8_unencrypted(rsa_leaf_key, ec_leaf_key):
    for key in (rsa_leaf_key, ec_leaf_key):
        pem = tls.key_to_pem(key)
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
        assert tls.keys_match(tls.load_key(pem), tls.issue_leaf(
            profile(key_type="ecdsa" if key is ec_leaf_key else "rsa"), key, *_ca_pair_cache(), NOW))


_CACHE = {}


def _ca_pair_cache():
    if "ca" not in _CACHE:
        key = tls.generate_key("ecdsa")
        _CACHE["ca"] = (tls.build_ca(tls.CAProfile(key_type="ecdsa", organizational_unit="c@d"), key, NOW), key)
    return _CACHE["ca"]


def test_load_key_errors():
    with pytest.raises(HyHomeError, match="cannot read the CA key"):
        tls.load_key(b"nope", "the CA key")
    dsa_like = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(HyHomeError, match="only RSA and ECDSA"):
        tls.load_key(dsa_like)


def test_load_cert_error():
    with pytest.raises(HyHomeError, match="cannot read the CA certificate"):
        tls.load_cert(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "the CA certificate")


def test_key_kind_of_other_curves():
    assert tls.key_kind(ec.generate_private_key(ec.SECP384R1())) == ("ecdsa-secp384r1", 0)
    assert tls.key_kind(rsa.generate_private_key(65537, 2048).public_key()) == ("rsa", 2048)


def test_fingerprints_and_summary(ca, ec_leaf_key):
    _, _, _, cert = issued(ca, ec_leaf_key)
    fp = tls.cert_fingerprint(cert)
    assert len(fp) == 32 * 3 - 1 and fp == fp.upper() and fp.count(":") == 31
    assert fp.replace(":", "").lower() == cert.fingerprint(hashes.SHA256()).hex()
    summary = tls.cert_summary(cert)
    assert summary["fingerprint_sha256"] == fp
    assert summary["public_key_fingerprint_sha256"] == tls.public_key_fingerprint(ec_leaf_key)
    assert summary["key"] == "ecdsa-256"
    assert summary["not_after"] == "2029-02-22T12:00:00+00:00"
    assert "DNS:*.home.arpa" in summary["sans"] and "IP:::1" in summary["sans"]
    assert "PRIVATE" not in repr(summary)


# ------------------------------------------------------------------------------------------
# Trust stores and CA location


def test_default_ca_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HYHOME_CAROOT", str(tmp_path / "ca"))
    assert tls.default_ca_dir() == str(tmp_path / "ca")
    monkeypatch.delenv("HYHOME_CAROOT")
    monkeypatch.setattr(tls.os, "geteuid", lambda: 0)
    assert tls.default_ca_dir() == "/var/lib/hyhome/ca"
    monkeypatch.setattr(tls.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert tls.default_ca_dir() == str(tmp_path / "data" / "hyhome" / "ca")


def test_detect_system_store():
    assert tls.detect_system_store(lambda c: c == "update-ca-certificates").family == "debian"
    assert tls.detect_system_store(lambda c: c == "update-ca-trust").family == "rhel"
    assert tls.detect_system_store(lambda c: None) is None
    deb = tls.SYSTEM_TRUST_STORES[0]
    assert deb.anchor_path("hyhome-local-ca") == "/usr/local/share/ca-certificates/hyhome-local-ca.crt"
    assert tls.SYSTEM_TRUST_STORES[1].anchor_path("x") == "/etc/pki/ca-trust/source/anchors/x.pem"


def test_bundle_contains(ca, ec_ca):
    pem = tls.cert_to_pem(ca[0])
    der = ca[0].public_bytes(serialization.Encoding.DER)
    bundle = b"# comment\n" + tls.cert_to_pem(ec_ca[0]) + b"\nCN = x\n" + pem.replace(b"\n", b"\r\n")
    assert tls.bundle_contains(bundle, der)
    assert not tls.bundle_contains(tls.cert_to_pem(ec_ca[0]), der)
    assert not tls.bundle_contains(b"", der)
    assert not tls.bundle_contains(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n", der)


def test_stdlib_pem_helpers_agree_with_cryptography(ca):
    der = ca[0].public_bytes(serialization.Encoding.DER)
    pem = tls.cert_to_pem(ca[0])
    assert tls.pem_certificates_der(pem) == [der]
    assert tls.der_to_pem(der) == pem
    assert tls.der_fingerprint(der) == tls.cert_fingerprint(ca[0])


@pytest.mark.parametrize("name", ["", "../x", "a/b", "a b", "-x", "a..b"])
def test_bad_trust_names(name):
    with pytest.raises(HyHomeError, match="invalid trust name"):
        tls.check_trust_name(name)


def test_nss_databases_found_like_mkcert(tmp_path):
    (tmp_path / ".pki" / "nssdb").mkdir(parents=True)
    (tmp_path / ".pki" / "nssdb" / "cert9.db").write_bytes(b"")
    prof = tmp_path / ".mozilla" / "firefox" / "abc.default"
    prof.mkdir(parents=True)
    (prof / "cert9.db").write_bytes(b"")
    (tmp_path / ".mozilla" / "firefox" / "empty").mkdir()
    found = tls.nss_databases(str(tmp_path))
    assert found == sorted([str(tmp_path / ".pki" / "nssdb"), str(prof)])
    assert tls.nss_dbspec(str(prof)) == f"sql:{prof}"
