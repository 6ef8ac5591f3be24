#!/usr/bin/python
# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: local_ca
short_description: Create and keep a local development CA (mkcert's profile), and install it into trust stores
description:
  - Keeps a local certificate authority in a directory outside the compose project, like mkcert's C(CAROOT), with
    C(rootCA-key.pem) (mode 0400, never to be mounted into a container) and C(rootCA.pem) (mode 0644).
  - The CA has mkcert 1.4.4's profile, built with the Python C(cryptography) package. RSA-3072 (or ECDSA
    P-256), 10 years, a random 128-bit serial, subject O/OU/CN naming the project and the user and host,
    KeyUsage keyCertSign (critical), BasicConstraints CA:TRUE pathlen 0 (critical), SubjectKeyIdentifier,
    and optional name constraints, which mkcert lacks.
  - An existing CA is never replaced unless O(regenerate=always), because a new CA breaks trust on every host
    that trusts the old one. When the existing CA differs from the requested profile, the module reports
    the differences in RV(drift) and keeps the CA. A CA that expires within O(expiry_warning_days) is reported
    with a warning.
  - With O(state=trusted) (or O(trust=true)), the CA certificate is installed into the host's system trust
    store (Debian/Ubuntu C(/usr/local/share/ca-certificates) + C(update-ca-certificates); RHEL family
    C(/etc/pki/ca-trust/source/anchors) + C(update-ca-trust extract)) and into NSS databases when
    C(certutil) exists. O(state=untrusted) removes it again. Installing trust needs only the certificate,
    never the CA key.
version_added: 0.1.0
author: Hy-Home Bootstrap maintainers
requirements:
  - cryptography >= 42.0 (for O(state=present); O(state=trusted) and O(state=untrusted) need only Python)
options:
  path:
    description:
      - The CA directory. Created with mode 0700 when missing.
      - Defaults to C($HYHOME_CAROOT), else C(/var/lib/hyhome/ca) for root, else C(~/.local/share/hyhome/ca).
      - Keep it outside the compose project, so the CA key is never mounted into a container.
    type: path
  state:
    description:
      - V(present) creates the CA when missing and keeps an existing one. It needs the CA key.
      - V(trusted) installs the CA certificate O(certificate_path) into the trust stores; nothing is created.
      - V(untrusted) removes the certificate named O(trust_name) from the trust stores.
    type: str
    choices: [present, trusted, untrusted]
    default: present
  regenerate:
    description:
      - V(never) keeps an existing CA whatever differs from the requested profile (differences are reported).
      - V(fail) fails when an existing CA differs from the profile, has expired, or expires within
        O(expiry_warning_days).
      - V(always) creates a new CA and key, moving the old files aside with a timestamped C(.bak) suffix.
        Every certificate it signed must then be re-issued and trust re-installed on every host.
    type: str
    choices: [never, fail, always]
    default: never
  key_type:
    description: Key algorithm of a new CA.
    type: str
    choices: [rsa, ecdsa]
    default: rsa
  rsa_bits:
    description: RSA key size of a new CA.
    type: int
    choices: [2048, 3072, 4096]
    default: 3072
  validity_days:
    description: Validity of a new CA in days. Unset means 10 calendar years, as mkcert.
    type: int
  organization:
    description: Subject O of a new CA.
    type: str
    default: Hy-Home development CA
  organizational_unit:
    description: Subject OU of a new CA. Defaults to C(user@host) of the machine running the module.
    type: str
  common_name:
    description: Subject CN of a new CA (iOS shows it in its trust settings). Defaults to C(Hy-Home user@host).
    type: str
  permitted_dns_domains:
    description:
      - Name constraints. The CA may only sign names in these DNS domains (and their subdomains).
      - Empty means no DNS constraint. A leak of the CA key then cannot impersonate public sites.
    type: list
    elements: str
    default: []
  permitted_ip_ranges:
    description: Name constraints. The CA may only sign IP addresses in these CIDR ranges. Empty means none.
    type: list
    elements: str
    default: []
  expiry_warning_days:
    description: Warn (and with O(regenerate=fail), fail) when the CA expires within this many days.
    type: int
    default: 180
  trust:
    description: With O(state=present), also install the CA into the trust stores (like C(mkcert -install)).
    type: bool
    default: false
  certificate_path:
    description:
      - The CA certificate to install with O(state=trusted). Defaults to C(rootCA.pem) in O(path).
      - Typically the copy in the project, C(<project>/secrets/certs/rootCA.pem), on a host that does not hold the CA.
    type: path
  trust_name:
    description: Name of the trust anchor file (C(<name>.crt) or C(<name>.pem)) and NSS nickname.
    type: str
    default: hyhome-local-ca
  trust_stores:
    description: Which trust stores to manage. V(nss) is skipped silently when C(certutil) is not installed.
    type: list
    elements: str
    choices: [system, nss]
    default: [system, nss]
  nss_databases:
    description:
      - NSS database directories to manage. Empty means those found in the home of the user running the module
        (C(~/.pki/nssdb), Firefox profiles), as mkcert does.
    type: list
    elements: path
    default: []
attributes:
  check_mode:
    support: full
    description: Reports what would be created or installed; writes nothing and runs no trust command.
  diff_mode:
    support: full
    description: Shows the CA subject, validity and fingerprint before and after, and trust anchors. Never key material.
  idempotent:
    support: full
    description: A second run with the same options reports no change.
notes:
  - Run it on the controller (C(delegate_to) C(localhost), C(run_once)) when many hosts share one CA,
    and with O(state=trusted) on each host that should trust it.
seealso:
  - module: hyhome.bootstrap.tls_certificate
"""

EXAMPLES = r"""
- name: Create the local CA on the controller (kept when it exists)
  hyhome.bootstrap.local_ca:
    path: /var/lib/hyhome/ca
  delegate_to: localhost
  run_once: true
  register: tls_ca

- name: Create it, restricted to the home network, and trust it on this machine
  hyhome.bootstrap.local_ca:
    path: ~/.local/share/hyhome/ca
    key_type: ecdsa
    permitted_dns_domains: [home.arpa, localhost]
    permitted_ip_ranges: [127.0.0.0/8, 192.168.0.0/16, "::1/128"]
    trust: true

- name: Trust the CA on a host that only has the certificate copy
  hyhome.bootstrap.local_ca:
    state: trusted
    certificate_path: /srv/stack/secrets/certs/rootCA.pem
  become: true

- name: Remove it from the trust stores
  hyhome.bootstrap.local_ca:
    state: untrusted
  become: true
"""

RETURN = r"""
ca_dir:
  description: The CA directory (the O(path) given, or its default).
  returned: always
  type: str
certificate_path:
  description: Path of the CA certificate.
  returned: always
  type: str
key_path:
  description: Path of the CA private key.
  returned: when O(state=present)
  type: str
certificate:
  description: The CA certificate in PEM (public).
  returned: when the certificate exists (not in check mode before creation)
  type: str
fingerprint_sha256:
  description: SHA-256 fingerprint of the CA certificate.
  returned: when the certificate exists
  type: str
created:
  description: Whether a new CA was (or in check mode would be) created.
  returned: when O(state=present)
  type: bool
regenerated:
  description: Whether an existing CA was (or would be) replaced.
  returned: when O(state=present)
  type: bool
drift:
  description: How the existing CA differs from the requested profile. It is kept anyway unless O(regenerate=always).
  returned: when O(state=present)
  type: list
  elements: str
ca:
  description: Public facts on the CA certificate.
  returned: when the certificate exists and C(cryptography) is installed
  type: dict
  contains:
    subject: {description: RFC 4514 subject., type: str}
    serial: {description: Serial number in hex., type: str}
    not_before: {description: Start of validity (ISO 8601, UTC)., type: str}
    not_after: {description: End of validity (ISO 8601, UTC)., type: str}
    days_left: {description: Whole days until it expires., type: int}
    expired: {description: Whether it has expired., type: bool}
    expires_soon: {description: Whether it expires within O(expiry_warning_days)., type: bool}
    fingerprint_sha256: {description: SHA-256 fingerprint of the certificate., type: str}
    key: {description: Key type and size, for example C(rsa-3072)., type: str}
trust:
  description: What was (or would be) done in each trust store.
  returned: when trust is managed
  type: dict
  contains:
    system: {description: "C(family), C(anchor), C(changed), C(in_bundle) for the system store, or null.", type: dict}
    nss: {description: "One entry per NSS database: C(database), C(changed).", type: list}
"""

# Ansible modules put their imports after the documentation strings.
import datetime as dt  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils import tls  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import (  # noqa: E402
    atomic_write,
    read_bytes,
    refuse_dangerous,
    remove_stale_temps,
)


class LocalCA:
    """Keeps the CA directory: create when missing, report drift, fix modes, never replace unasked."""

    def __init__(self, module):
        self.module = module
        p = module.params
        self.path = os.path.abspath(os.path.expanduser(p["path"] or tls.default_ca_dir()))
        self.cert_path = os.path.join(self.path, tls.CA_CERT_FILE)
        self.key_path = os.path.join(self.path, tls.CA_KEY_FILE)
        self.changed = False
        self.result = {"ca_dir": self.path, "certificate_path": self.cert_path, "key_path": self.key_path,
                       "created": False, "regenerated": False, "drift": []}
        self.diff = {"before": "", "after": ""}

    def profile(self):
        p = self.module.params
        return tls.CAProfile(
            organization=p["organization"],
            organizational_unit=p["organizational_unit"] or "",
            common_name=p["common_name"] or "",
            key_type=p["key_type"],
            rsa_bits=p["rsa_bits"],
            validity_days=p["validity_days"],
            permitted_dns=tuple(p["permitted_dns_domains"]),
            permitted_ip=tuple(p["permitted_ip_ranges"]),
        )

    def ensure(self):
        p = self.module.params
        refuse_dangerous(self.path, "CA directory")
        profile = self.profile()
        cert_pem, key_pem = read_bytes(self.cert_path), read_bytes(self.key_path)
        exists = cert_pem is not None or key_pem is not None
        if exists and p["regenerate"] != "always":
            if cert_pem is None or key_pem is None:
                missing = self.cert_path if cert_pem is None else self.key_path
                raise HyHomeError(
                    f"the CA in {self.path} is incomplete: {missing} is missing. Restore it from a backup; "
                    "creating a new CA (regenerate=always) would break trust on every host that trusts the old one"
                )
            cert = tls.load_cert(cert_pem, f"the CA certificate {self.cert_path}")
            key = tls.load_key(key_pem, f"the CA key {self.key_path}")
            tls.check_ca_pair(cert, key)
            drift = tls.ca_drift(cert, profile)
            self.result["drift"] = drift
            status = tls.ca_status(cert, warning_days=p["expiry_warning_days"])
            if p["regenerate"] == "fail" and (drift or status["expires_soon"]):
                problems = drift + ([tls.ca_warning(status)] if status["expires_soon"] else [])
                raise HyHomeError(
                    "the existing CA does not satisfy the request (regenerate=fail): " + "; ".join(problems)
                )
            for d in drift:
                self.module.warn(f"existing CA in {self.path} kept although it differs from the request: {d}")
            self.diff["before"] = self.diff["after"] = _describe(status)
            self._fix_modes()
            return cert
        # Create (missing) or replace (regenerate=always).
        self.result["created"] = True
        self.result["regenerated"] = exists
        now = tls.now_utc()
        key = tls.generate_key(profile.key_type, profile.rsa_bits)
        cert = tls.build_ca(profile, key, now)
        if exists:
            old = tls.load_cert(cert_pem, "the old CA certificate") if cert_pem else None
            self.diff["before"] = _describe(tls.ca_status(old)) if old else "(incomplete CA)\n"
        self.diff["after"] = _describe(tls.ca_status(cert, warning_days=p["expiry_warning_days"]))
        self.changed = True
        if self.module.check_mode:
            return None
        if not os.path.isdir(self.path):
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            os.chmod(self.path, 0o700)
        remove_stale_temps(self.path, tls.CA_KEY_FILE)
        remove_stale_temps(self.path, tls.CA_CERT_FILE)
        if exists:
            stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
            for path in (self.key_path, self.cert_path):
                if os.path.exists(path):
                    os.replace(path, f"{path}.{stamp}.bak")
        # Key first: a crash leaves a key without a certificate, which the next run reports
        # instead of silently pairing a certificate with nothing.
        atomic_write(self.key_path, tls.key_to_pem(key), mode=0o400)
        atomic_write(self.cert_path, tls.cert_to_pem(cert), mode=0o644)
        return cert

    def _fix_modes(self):
        for path, mode in ((self.key_path, 0o400), (self.cert_path, 0o644)):
            current = os.stat(path).st_mode & 0o7777
            if current != mode:
                self.changed = True
                self.result.setdefault("modes_fixed", []).append(path)
                if not self.module.check_mode:
                    os.chmod(path, mode)


def _describe(status):
    return "".join(f"{k}: {status[k]}\n" for k in ("subject", "serial", "not_after", "key", "fingerprint_sha256"))


class Trust:
    """Installs or removes one CA certificate (as DER) in the system store and NSS databases.

    Needs only the standard library: hosts that merely trust the CA need no ``cryptography``.
    """

    def __init__(self, module, name):
        self.module = module
        self.name = tls.check_trust_name(name)
        self.changed = False
        self.result = {"system": None, "nss": []}
        self.diff_before = []
        self.diff_after = []

    def _run(self, argv):
        rc, out, err = self.module.run_command(argv)
        if rc != 0:
            raise HyHomeError(f"{' '.join(argv)} failed (rc={rc}): {(err or out).strip()}")
        return out

    def system(self, der, present):
        store = tls.detect_system_store(shutil.which)
        if store is None:
            self.module.warn(
                "no system trust store tool found (update-ca-certificates or update-ca-trust); "
                "install the ca-certificates package to trust the local CA system-wide"
            )
            return
        anchor = store.anchor_path(self.name)
        current = read_bytes(anchor)
        in_bundle = der is not None and tls.bundle_contains(read_bytes(store.bundle) or b"", der)
        if present:
            pem = tls.der_to_pem(der)
            need_file = current != pem
            need_update = need_file or not in_bundle
        else:
            need_file = need_update = current is not None
        entry = {"family": store.family, "anchor": anchor, "changed": need_update, "in_bundle": in_bundle}
        self.result["system"] = entry
        if current is not None:
            self.diff_before.append(f"system anchor {anchor}: {_anchor_label(current)}")
        if present:
            self.diff_after.append(f"system anchor {anchor}: {tls.der_fingerprint(der)}")
        if not need_update:
            return
        self.changed = True
        if self.module.check_mode:
            return
        if present:
            os.makedirs(store.anchor_dir, mode=0o755, exist_ok=True)
            if need_file:
                atomic_write(anchor, pem, mode=0o644)
            self._run(list(store.update_cmd))
            entry["in_bundle"] = tls.bundle_contains(read_bytes(store.bundle) or b"", der)
            if not entry["in_bundle"]:
                raise HyHomeError(f"{' '.join(store.update_cmd)} ran but {store.bundle} does not contain the CA")
        else:
            os.unlink(anchor)
            self._run(list(store.remove_cmd or store.update_cmd))
            entry["in_bundle"] = False

    def nss(self, der, cert_path, present, databases):
        certutil = shutil.which("certutil")
        if not certutil:
            return
        dbs = databases or tls.nss_databases(os.path.expanduser("~"))
        for db in dbs:
            spec = tls.nss_dbspec(db)
            rc, out, _err = self.module.run_command([certutil, "-L", "-d", spec, "-n", self.name, "-a"])
            have = tls.pem_certificates_der(out.encode()) if rc == 0 else []
            need = (der not in have) if present else bool(have) or rc == 0
            self.result["nss"].append({"database": db, "changed": need})
            if rc == 0:
                self.diff_before.append(f"nss {db}: {tls.der_fingerprint(have[0]) if have else 'present'}")
            if present:
                self.diff_after.append(f"nss {db}: {tls.der_fingerprint(der)}")
            if not need:
                continue
            self.changed = True
            if self.module.check_mode:
                continue
            if rc == 0:
                self._run([certutil, "-D", "-d", spec, "-n", self.name])
            if present:
                self._run([certutil, "-A", "-d", spec, "-t", "C,,", "-n", self.name, "-i", cert_path])


def _anchor_label(pem):
    ders = tls.pem_certificates_der(pem)
    return tls.der_fingerprint(ders[0]) if ders else "(not a certificate)"


def _ca_facts(module, der, result):
    """Expiry facts and the loud warning, when ``cryptography`` is there to read the certificate."""
    if not tls.HAS_CRYPTOGRAPHY or der is None:
        return
    cert = tls.load_cert(tls.der_to_pem(der), "the CA certificate")
    status = tls.ca_status(cert, warning_days=module.params["expiry_warning_days"])
    result["ca"] = status
    warning = tls.ca_warning(status)
    if warning:
        module.warn(warning)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path"),
            state=dict(type="str", default="present", choices=["present", "trusted", "untrusted"]),
            regenerate=dict(type="str", default="never", choices=["never", "fail", "always"]),
            key_type=dict(type="str", default="rsa", choices=["rsa", "ecdsa"]),
            rsa_bits=dict(type="int", default=3072, choices=[2048, 3072, 4096]),
            validity_days=dict(type="int"),
            organization=dict(type="str", default="Hy-Home development CA"),
            organizational_unit=dict(type="str"),
            common_name=dict(type="str"),
            permitted_dns_domains=dict(type="list", elements="str", default=[]),
            permitted_ip_ranges=dict(type="list", elements="str", default=[]),
            expiry_warning_days=dict(type="int", default=180),
            trust=dict(type="bool", default=False),
            certificate_path=dict(type="path"),
            trust_name=dict(type="str", default="hyhome-local-ca"),
            trust_stores=dict(type="list", elements="str", default=["system", "nss"], choices=["system", "nss"]),
            nss_databases=dict(type="list", elements="path", default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["state"] == "present" and not tls.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=str(tls.CRYPTOGRAPHY_IMPORT_ERROR))
    try:
        if p["state"] == "present":
            ca = LocalCA(module)
            result, diff = ca.result, ca.diff
            cert = ca.ensure()
            changed = ca.changed
            der = tls.cert_to_der(cert) if cert is not None else None
            cert_path = ca.cert_path
        else:
            cert_path = os.path.abspath(os.path.expanduser(
                p["certificate_path"] or os.path.join(p["path"] or tls.default_ca_dir(), tls.CA_CERT_FILE)))
            result = {"certificate_path": cert_path}
            diff = {"before": "", "after": ""}
            changed = False
            pem = read_bytes(cert_path)
            ders = tls.pem_certificates_der(pem) if pem is not None else []
            der = ders[0] if ders else None
            if p["state"] == "trusted" and der is None:
                if pem is not None:
                    raise HyHomeError(f"cannot install trust: {cert_path} holds no PEM certificate")
                if not module.check_mode:
                    raise HyHomeError(f"cannot install trust: the CA certificate {cert_path} does not exist")
                # Check mode before the copy exists (a first run): report that trust would be installed.
                result["trust"] = {"system": {"changed": True}, "nss": []}
                module.exit_json(changed=True, msg=f"{cert_path} does not exist yet: trust would be installed",
                                 **result)
        if der is not None:
            result["certificate"] = tls.der_to_pem(der).decode()
            result["fingerprint_sha256"] = tls.der_fingerprint(der)
        _ca_facts(module, der, result)
        if p["state"] in ("trusted", "untrusted") or p["trust"]:
            present = p["state"] != "untrusted"
            trust = Trust(module, p["trust_name"])
            if present and der is None:
                # Check mode before the CA exists: everything would be installed.
                trust.changed = True
                trust.result["system"] = {"changed": True}
            else:
                if "system" in p["trust_stores"]:
                    trust.system(der, present)
                if "nss" in p["trust_stores"]:
                    trust.nss(der, cert_path, present, p["nss_databases"])
            result["trust"] = trust.result
            changed = changed or trust.changed
            diff["before"] += "".join(f"{x}\n" for x in trust.diff_before)
            diff["after"] += "".join(f"{x}\n" for x in trust.diff_after)
    except HyHomeError as exc:
        module.fail_json(msg=exc.msg)
    if module._diff:
        result["diff"] = diff
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
