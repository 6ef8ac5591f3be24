"""Parity with the real mkcert 1.4.4: issue for the same names with both and compare the profiles.

Runs whenever ``mkcert`` is on PATH. In CI (``CI=true``) a missing mkcert is a FAILURE, not a
skip: install it with ``scripts/lib/mkcert.sh``. Outside CI without mkcert, the module is skipped
with that instruction.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import subprocess

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import tls
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

NAMES = ["home.arpa", "*.home.arpa", "localhost", "127.0.0.1", "::1", "192.168.1.10", "2001:db8::10"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def mkcert():
    path = shutil.which("mkcert")
    if path is None:
        msg = "mkcert is not installed: run scripts/lib/mkcert.sh (Debian's mkcert 1.4.4)"
        if IN_CI:
            pytest.fail(msg + " -- CI must run the parity tests")
        pytest.skip(msg)
    return path


def _mkcert_issue(mkcert, tmp, ecdsa):
    carot = tmp / ("caroot-ec" if ecdsa else "caroot-rsa")
    env = {**os.environ, "CAROOT": str(carot), "TRUST_STORES": "none"}
    cert, key = tmp / f"mk-{ecdsa}.pem", tmp / f"mk-{ecdsa}-key.pem"
    argv = [mkcert, *(["-ecdsa"] if ecdsa else []), "-cert-file", str(cert), "-key-file", str(key), *NAMES]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    ca = x509.load_pem_x509_certificate((carot / "rootCA.pem").read_bytes())
    return {
        "ca": ca,
        "ca_key": tls.load_key((carot / "rootCA-key.pem").read_bytes()),
        "leaf": x509.load_pem_x509_certificate(cert.read_bytes()),
        "key": tls.load_key(key.read_bytes()),
        "ca_key_mode": os.stat(carot / "rootCA-key.pem").st_mode & 0o777,
        "ca_mode": os.stat(carot / "rootCA.pem").st_mode & 0o777,
        "key_mode": os.stat(key).st_mode & 0o777,
    }


def _ours(ecdsa):
    kt = "ecdsa" if ecdsa else "rsa"
    ca_key = tls.generate_key(kt, tls.CA_RSA_BITS)
    ca = tls.build_ca(tls.CAProfile(key_type=kt), ca_key)
    key = tls.generate_key(kt, tls.LEAF_RSA_BITS)
    leaf = tls.issue_leaf(tls.LeafProfile.from_names(NAMES, key_type=kt), key, ca, ca_key)
    return {"ca": ca, "ca_key": ca_key, "leaf": leaf, "key": key}


@pytest.fixture(scope="module", params=[False, True], ids=["rsa", "ecdsa"])
def pair(request, mkcert, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mkcert")
    return request.param, _mkcert_issue(mkcert, tmp, request.param), _ours(request.param)


def shape(cert):
    """Extension OIDs with their criticality: what must match exactly."""
    return {(e.oid.dotted_string, e.critical) for e in cert.extensions}


def ext(cert, oid):
    return cert.extensions.get_extension_for_oid(oid).value


def subject_types(cert):
    return [a.oid for a in cert.subject]


def test_mkcert_is_the_reference_version(mkcert):
    out = subprocess.run([mkcert, "-version"], capture_output=True, text=True, check=False).stdout.strip()
    assert out.startswith("1.4."), out


def test_ca_extensions_and_criticality(pair):
    _, mk, ours = pair
    assert shape(ours["ca"]) == shape(mk["ca"])
    assert ext(ours["ca"], ExtensionOID.KEY_USAGE) == ext(mk["ca"], ExtensionOID.KEY_USAGE)
    assert ext(ours["ca"], ExtensionOID.BASIC_CONSTRAINTS) == ext(mk["ca"], ExtensionOID.BASIC_CONSTRAINTS)
    for side in (mk, ours):  # both derive the SKI from the public key the same way (RFC 5280 method 1)
        assert ext(side["ca"], ExtensionOID.SUBJECT_KEY_IDENTIFIER) == x509.SubjectKeyIdentifier.from_public_key(
            side["ca"].public_key())


def test_ca_key_subject_validity(pair):
    _, mk, ours = pair
    assert tls.key_kind(ours["ca"].public_key()) == tls.key_kind(mk["ca"].public_key())
    assert subject_types(ours["ca"]) == subject_types(mk["ca"]) == [
        NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME]
    assert mk["ca"].subject == mk["ca"].issuer and ours["ca"].subject == ours["ca"].issuer
    life = [c.not_valid_after_utc - c.not_valid_before_utc for c in (mk["ca"], ours["ca"])]
    assert life[0] == life[1]  # 10 calendar years from the same day
    for side in (mk, ours):
        assert 0 < side["ca"].serial_number < 2**128
        assert isinstance(side["ca"].signature_hash_algorithm, hashes.SHA256)
        side["ca"].verify_directly_issued_by(side["ca"])


def test_ca_file_modes_match_mkcert(pair):
    _, mk, _ = pair
    assert (mk["ca_key_mode"], mk["ca_mode"]) == (0o400, 0o644)  # what local_ca writes (test_tls_modules)


def test_leaf_extensions_and_criticality(pair):
    ecdsa, mk, ours = pair
    assert shape(ours["leaf"]) == shape(mk["leaf"])
    assert set(ext(ours["leaf"], ExtensionOID.EXTENDED_KEY_USAGE)) == set(
        ext(mk["leaf"], ExtensionOID.EXTENDED_KEY_USAGE))
    ku_ours, ku_mk = ext(ours["leaf"], ExtensionOID.KEY_USAGE), ext(mk["leaf"], ExtensionOID.KEY_USAGE)
    if not ecdsa:
        assert ku_ours == ku_mk
    else:
        # Deliberate difference: mkcert also sets keyEncipherment on ECDSA leaves, an RSA-only usage (RFC 8813).
        assert ku_mk.digital_signature and ku_mk.key_encipherment
        assert ku_ours.digital_signature and not ku_ours.key_encipherment
    for side in (mk, ours):
        aki = ext(side["leaf"], ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
        assert aki.key_identifier == ext(side["ca"], ExtensionOID.SUBJECT_KEY_IDENTIFIER).digest


def test_leaf_names(pair):
    _, mk, ours = pair
    assert tls.cert_sans(ours["leaf"]) == tls.cert_sans(mk["leaf"])
    san = ext(ours["leaf"], ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    assert san.get_values_for_type(x509.DNSName) == ext(mk["leaf"], ExtensionOID.SUBJECT_ALTERNATIVE_NAME) \
        .get_values_for_type(x509.DNSName)
    assert subject_types(ours["leaf"]) == subject_types(mk["leaf"]) == [
        NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME]


def test_leaf_keys(pair):
    ecdsa, mk, ours = pair
    assert tls.key_kind(ours["key"]) == tls.key_kind(mk["key"]) == (("ecdsa", 256) if ecdsa else ("rsa", 2048))
    assert tls.keys_match(mk["key"], mk["leaf"]) and tls.keys_match(ours["key"], ours["leaf"])
    assert mk["key_mode"] == 0o600  # tls_certificate's default key mode


def test_validity_policy(pair):
    _, mk, ours = pair
    life = [c.not_valid_after_utc - c.not_valid_before_utc for c in (mk["leaf"], ours["leaf"])]
    assert abs(life[0] - life[1]) <= dt.timedelta(days=1)  # 2 years 3 months from (almost) the same instant
    for side in (mk, ours):
        leaf = side["leaf"]
        assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= tls.MAX_LEAF_DAYS
        assert abs(leaf.not_valid_before_utc - tls.now_utc()) < dt.timedelta(minutes=5)
        assert 0 < leaf.serial_number < 2**128


def test_both_chains_verify_for_every_name(pair):
    _, mk, ours = pair
    for side in (mk, ours):
        store = Store([side["ca"]])
        for name in ["home.arpa", "gw.home.arpa", "localhost", "127.0.0.1", "::1", "192.168.1.10", "2001:db8::10"]:
            try:
                subject = x509.IPAddress(ipaddress.ip_address(name))
            except ValueError:
                subject = x509.DNSName(name)
            chain = PolicyBuilder().store(store).build_server_verifier(subject).verify(side["leaf"], [])
            assert chain[-1] == side["ca"]


def test_each_side_checks_the_other_as_foreign(pair):
    """Our re-issue logic recognises a mkcert leaf as not signed by our CA (and accepts its own)."""
    ecdsa, mk, ours = pair
    prof = tls.LeafProfile.from_names(NAMES, key_type="ecdsa" if ecdsa else "rsa",
                                      organizational_unit=ours["leaf"].subject.get_attributes_for_oid(
                                          NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value)
    own = tls.leaf_reasons(prof, tls.cert_to_pem(ours["leaf"]), tls.key_to_pem(ours["key"]), ours["ca"])
    assert own == []
    foreign = tls.leaf_reasons(prof, tls.cert_to_pem(mk["leaf"]), tls.key_to_pem(mk["key"]), ours["ca"])
    assert "issuer" in [r.code for r in foreign]


def test_openssl_verifies_both(pair, tmp_path):
    _, mk, ours = pair
    for i, side in enumerate((mk, ours)):
        ca, leaf = tmp_path / f"ca{i}.pem", tmp_path / f"leaf{i}.pem"
        ca.write_bytes(tls.cert_to_pem(side["ca"]))
        leaf.write_bytes(tls.cert_to_pem(side["leaf"]))
        proc = subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", str(ca),
                               str(leaf)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0 and ": OK" in proc.stdout, proc.stdout + proc.stderr
