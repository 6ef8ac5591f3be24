#!/usr/bin/python
# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tls_certificate
short_description: Issue and renew a leaf TLS certificate from the local CA (mkcert's profile)
description:
  - Writes the files the gateway mounts, by default C(<project>/secrets/certs/cert.pem), C(key.pem) and a copy
    of the CA certificate C(rootCA.pem), signed by the CA that M(hyhome.bootstrap.local_ca) keeps.
  - The certificate has mkcert 1.4.4's profile. RSA-2048 (or ECDSA P-256), valid 2 years 3 months, never more
    than 825 days unless O(allow_long_validity=true). Subject O/OU without CN, KeyUsage digitalSignature
    (+ keyEncipherment for RSA) critical, ExtendedKeyUsage serverAuth (+ clientAuth), AuthorityKeyIdentifier,
    and subjectAltNames only. The names are DNS names, C(*.) wildcards, IPv4 and IPv6 addresses.
  - Idempotent. Nothing is written while the files are right. The certificate is re-issued when it or its key
    is missing or unparsable, expires within O(renew_before_days), its names or profile differ from the request,
    it does not belong to the key, or the current CA did not sign it. RV(reasons) says why.
  - Owner, group and mode drift is fixed without re-issuing.
version_added: 0.1.0
author: Hy-Home Bootstrap maintainers
requirements:
  - cryptography >= 42.0
options:
  names:
    description:
      - The subjectAltNames, in order. Hostnames, C(*.domain) wildcards (whole left-most label only), IPv4 and
        IPv6 addresses. Duplicates are dropped; the order does not matter for idempotence.
    type: list
    elements: str
    required: true
  ca_path:
    description:
      - The CA directory holding C(rootCA.pem) and C(rootCA-key.pem) (see M(hyhome.bootstrap.local_ca)).
      - Defaults like the CA module. C($HYHOME_CAROOT), else C(/var/lib/hyhome/ca) for root, else
        C(~/.local/share/hyhome/ca). It must not be inside O(project_dir).
    type: path
  project_dir:
    description: The compose project. Output files default to C(<project_dir>/secrets/certs/).
    type: path
  certs_dir:
    description: Directory of the output files. Defaults to C(<project_dir>/secrets/certs). Created 0755 if missing.
    type: path
  cert_path:
    description: Leaf certificate file. Defaults to C(<certs_dir>/cert.pem).
    type: path
  key_path:
    description: Leaf private key file. Defaults to C(<certs_dir>/key.pem).
    type: path
  ca_copy_path:
    description:
      - Where to copy the CA certificate for the stack. Defaults to C(<certs_dir>/rootCA.pem).
      - An empty string disables the copy.
    type: path
  key_type:
    description: Key algorithm of the leaf.
    type: str
    choices: [rsa, ecdsa]
    default: rsa
  rsa_bits:
    description: RSA key size of the leaf.
    type: int
    choices: [2048, 3072, 4096]
    default: 2048
  validity_days:
    description: Validity in days. Unset means mkcert's 2 years 3 months (at most 823 days).
    type: int
  allow_long_validity:
    description: Allow O(validity_days) over 825 days (Apple platforms reject such certificates).
    type: bool
    default: false
  renew_before_days:
    description: Re-issue when the certificate expires within this many days.
    type: int
    default: 30
  client_auth:
    description: Add ExtendedKeyUsage clientAuth (mkcert's C(-client)).
    type: bool
    default: false
  organization:
    description: Subject O.
    type: str
    default: Hy-Home development certificate
  organizational_unit:
    description: Subject OU. Defaults to C(user@host) of the machine running the module, as mkcert.
    type: str
  regenerate:
    description:
      - V(auto) issues when missing and re-issues for any reason listed in the description.
      - V(never) only issues when nothing exists yet; existing files are kept and the reasons are reported.
      - V(fail) issues when nothing exists yet and fails when existing files would be re-issued.
      - V(always) re-issues on every run (mkcert's behaviour; not idempotent).
    type: str
    choices: [auto, never, fail, always]
    default: auto
  reuse_key:
    description:
      - Keep a valid existing key of the right type when re-issuing (for example on renewal).
      - V(false) makes a new key with every new certificate.
    type: bool
    default: true
  owner:
    description: Owner of the three files (name or uid). Give the gateway container's user so it can read the key.
    type: str
  group:
    description: Group of the three files (name or gid).
    type: str
  mode:
    description: Mode of the private key file. Keep it readable only by its owner (and group if needed).
    type: raw
    default: "0600"
  cert_mode:
    description: Mode of the certificate and the CA copy.
    type: raw
    default: "0644"
attributes:
  check_mode:
    support: full
    description: Reports whether and why the certificate would be issued; writes nothing.
  diff_mode:
    support: full
    description: Shows names, validity, serial and fingerprints before and after. Never key material.
  idempotent:
    support: full
    description: A second run with the same options reports no change.
notes:
  - For many hosts, run it on the controller (where the CA key is) into a per-host directory and copy the files to
    each host; the role C(hyhome.bootstrap.tls) does this.
seealso:
  - module: hyhome.bootstrap.local_ca
"""

EXAMPLES = r"""
- name: Certificate for the gateway, files in the project's secrets/certs
  hyhome.bootstrap.tls_certificate:
    project_dir: /srv/stack
    ca_path: /var/lib/hyhome/ca
    names: [home.arpa, "*.home.arpa", localhost, 127.0.0.1, "::1", 192.168.1.10]
    owner: "101"          # the gateway's uid
    group: "101"
    mode: "0400"
  register: tls_leaf

- name: ECDSA certificate, renewed 60 days before expiry
  hyhome.bootstrap.tls_certificate:
    project_dir: /srv/stack
    names: [dev.example.test]
    key_type: ecdsa
    renew_before_days: 60

- name: Only report whether a certificate would be re-issued, and why
  hyhome.bootstrap.tls_certificate:
    project_dir: /srv/stack
    names: [home.arpa]
  check_mode: true
  register: tls_check
"""

RETURN = r"""
issued:
  description: Whether a certificate was (or in check mode would be) issued.
  returned: always
  type: bool
reasons:
  description: Why it was (or would be) issued; empty when the files are right. Each is C(code) plus an explanation.
  returned: always
  type: list
  elements: str
  sample: ["sans: names differ: missing DNS:new.home.arpa", "expiring: expires in 12 days (2027-01-01T00:00:00+00:00)"]
reason_codes:
  description:
    - The codes alone. They are C(cert_missing), C(cert_unparsable), C(key_missing), C(key_unparsable), C(key_type),
      C(key_mismatch), C(issuer), C(expired), C(expiring), C(not_yet_valid), C(validity_policy), C(sans),
      C(profile), C(always), and in check mode before the CA exists, C(ca_missing).
  returned: always
  type: list
  elements: str
kept:
  description: With O(regenerate=never), true when reasons exist but the existing files were kept.
  returned: always
  type: bool
new_key:
  description: Whether a new private key was (or would be) generated.
  returned: always
  type: bool
cert_path:
  description: Certificate file.
  returned: always
  type: str
key_path:
  description: Private key file.
  returned: always
  type: str
ca_copy_path:
  description: Copy of the CA certificate, or null when disabled.
  returned: always
  type: str
not_before:
  description: Start of validity (ISO 8601, UTC) of the certificate in place after the run.
  returned: when a certificate is in place (not in check mode before the first issue)
  type: str
not_after:
  description: End of validity (ISO 8601, UTC) of the certificate in place after the run.
  returned: when a certificate is in place (not in check mode before the first issue)
  type: str
serial:
  description: Serial number in hex.
  returned: when a certificate is in place
  type: str
sans:
  description: The names in the certificate.
  returned: when a certificate is in place
  type: list
  elements: str
fingerprint_sha256:
  description: SHA-256 fingerprint of the certificate.
  returned: when a certificate is in place
  type: str
public_key_fingerprint_sha256:
  description: SHA-256 of the public key (SubjectPublicKeyInfo); identifies the key without revealing it.
  returned: when a certificate is in place
  type: str
ca_fingerprint_sha256:
  description: SHA-256 fingerprint of the CA certificate (null in check mode before the CA exists).
  returned: always
  type: str
ca_not_after:
  description: End of validity of the CA (null in check mode before the CA exists).
  returned: always
  type: str
"""

# Ansible modules put their imports after the documentation strings.
import datetime as dt  # noqa: E402
import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils import tls  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import (  # noqa: E402
    atomic_write,
    parse_mode,
    read_bytes,
    refuse_dangerous,
    remove_stale_temps,
    resolve_owner,
)


def _within(parent, path):
    parent = os.path.realpath(parent)
    path = os.path.realpath(path)
    return path == parent or path.startswith(parent.rstrip("/") + "/")


class LeafCertificate:
    """Desired state of the leaf files, computed first; ``apply`` writes only what differs."""

    def __init__(self, module):
        self.module = module
        p = module.params
        self.ca_dir = os.path.abspath(os.path.expanduser(p["ca_path"] or tls.default_ca_dir()))
        certs_dir = p["certs_dir"]
        if not certs_dir and p["project_dir"]:
            certs_dir = os.path.join(p["project_dir"], "secrets", "certs")
        if not certs_dir and not (p["cert_path"] and p["key_path"]):
            raise HyHomeError("give project_dir (or certs_dir, or both cert_path and key_path) to say where to write")
        self.cert_path = os.path.abspath(p["cert_path"] or os.path.join(certs_dir, "cert.pem"))
        self.key_path = os.path.abspath(p["key_path"] or os.path.join(certs_dir, "key.pem"))
        if p["ca_copy_path"] == "":
            self.ca_copy_path = None
        else:
            self.ca_copy_path = os.path.abspath(p["ca_copy_path"] or os.path.join(certs_dir or os.path.dirname(
                self.cert_path), tls.CA_CERT_FILE))
        for path, what in ((self.cert_path, "certificate path"), (self.key_path, "key path"),
                           (self.ca_copy_path, "CA copy path")):
            if path:
                refuse_dangerous(path, what)
                refuse_dangerous(os.path.dirname(path), f"directory of the {what}")
        if p["project_dir"] and _within(p["project_dir"], self.ca_dir):
            raise HyHomeError(
                f"the CA directory {self.ca_dir} is inside the project {p['project_dir']}: keep the CA key outside "
                "the compose project so it can never be mounted into a container"
            )
        if self.key_path in (self.cert_path, self.ca_copy_path):
            raise HyHomeError("key_path must differ from cert_path and ca_copy_path")
        self.key_mode = parse_mode(p["mode"], "mode")
        self.cert_mode = parse_mode(p["cert_mode"], "cert_mode")
        self.uid, self.gid = resolve_owner(p["owner"], p["group"])
        self.profile = tls.LeafProfile.from_names(
            p["names"],
            key_type=p["key_type"],
            rsa_bits=p["rsa_bits"],
            validity_days=p["validity_days"],
            allow_long_validity=p["allow_long_validity"],
            client_auth=p["client_auth"],
            renew_before_days=p["renew_before_days"],
            organization=p["organization"],
            organizational_unit=p["organizational_unit"] or "",
        )
        self.changed = False
        self.diff = {"before": "", "after": ""}

    def load_ca(self):
        cert_file = os.path.join(self.ca_dir, tls.CA_CERT_FILE)
        key_file = os.path.join(self.ca_dir, tls.CA_KEY_FILE)
        cert_pem = read_bytes(cert_file, "the CA certificate")
        if cert_pem is None:
            raise HyHomeError(f"no CA certificate at {cert_file}: create the CA first (hyhome.bootstrap.local_ca)")
        key_pem = read_bytes(key_file, "the CA key")
        if key_pem is None:
            raise HyHomeError(f"no CA key at {key_file}: the CA in {self.ca_dir} is incomplete")
        ca_cert = tls.load_cert(cert_pem, f"the CA certificate {cert_file}")
        ca_key = tls.load_key(key_pem, f"the CA key {key_file}")
        tls.check_ca_pair(ca_cert, ca_key)
        return ca_cert, ca_key, cert_pem

    def _would_create_ca(self):
        """Check mode on a new machine: the CA task before this one only pretended to create the CA."""
        reason = tls.Reason("ca_missing", f"the CA in {self.ca_dir} does not exist yet; it would be created first")
        self.changed = True
        return {
            "issued": True, "kept": False, "new_key": True, "reasons": [str(reason)], "reason_codes": [reason.code],
            "cert_path": self.cert_path, "key_path": self.key_path, "ca_copy_path": self.ca_copy_path,
            "ca_fingerprint_sha256": None, "ca_not_after": None,
        }

    def run(self):
        p = self.module.params
        if self.module.check_mode and not os.path.exists(os.path.join(self.ca_dir, tls.CA_CERT_FILE)):
            return self._would_create_ca()
        ca_cert, ca_key, ca_pem = self.load_ca()
        tls.check_name_constraints(self.profile.sans, ca_cert)
        cert_pem = read_bytes(self.cert_path, "the certificate")
        key_pem = read_bytes(self.key_path, "the private key")
        reasons = tls.leaf_reasons(self.profile, cert_pem, key_pem, ca_cert)
        if p["regenerate"] == "always" and not any(r.code in ("cert_missing",) for r in reasons):
            reasons.append(tls.Reason("always", "regenerate=always"))
        exists = cert_pem is not None or key_pem is not None
        issue = bool(reasons)
        kept = False
        if issue and exists and p["regenerate"] == "never":
            issue, kept = False, True
            self.module.warn("certificate kept (regenerate=never) although: " + "; ".join(map(str, reasons)))
        if issue and exists and p["regenerate"] == "fail":
            raise HyHomeError("the certificate would be re-issued (regenerate=fail): " + "; ".join(map(str, reasons)))
        codes = {r.code for r in reasons}
        new_key = issue and (not p["reuse_key"] or bool(codes & tls.KEY_REASONS))
        result = {
            "issued": issue, "kept": kept, "new_key": new_key,
            "reasons": [str(r) for r in reasons], "reason_codes": [r.code for r in reasons],
            "cert_path": self.cert_path, "key_path": self.key_path, "ca_copy_path": self.ca_copy_path,
            "ca_fingerprint_sha256": tls.cert_fingerprint(ca_cert),
            "ca_not_after": ca_cert.not_valid_after_utc.isoformat(),
        }
        before = None
        if cert_pem is not None and "cert_unparsable" not in codes:
            before = tls.cert_summary(tls.load_cert(cert_pem))
        current = after = before
        if issue:
            key = tls.generate_key(self.profile.key_type, self.profile.rsa_bits) if new_key else None
            key = key or tls.load_key(key_pem)
            cert = tls.issue_leaf(self.profile, key, ca_cert, ca_key)
            after = tls.cert_summary(cert)
            self.changed = True
            if not self.module.check_mode:
                self._write(cert, key if new_key else None)
                current = after
        if self.ca_copy_path:
            self._ca_copy(ca_pem)
        if not self.module.check_mode or not issue:
            self._fix_attrs(self.key_path, self.key_mode)
            self._fix_attrs(self.cert_path, self.cert_mode)
        if current is not None:
            for k in ("not_before", "not_after", "serial", "sans", "fingerprint_sha256",
                      "public_key_fingerprint_sha256"):
                result[k] = current[k]
        if self.module._diff:
            self.diff["before"] = _describe(before, key_pem is not None)
            self.diff["after"] = _describe(after, True)
            result["diff"] = self.diff
        warning = tls.ca_warning(tls.ca_status(ca_cert))
        if warning:
            self.module.warn(warning)
        if after is not None and ca_cert.not_valid_after_utc < dt.datetime.fromisoformat(after["not_after"]):
            self.module.warn("the CA expires before this certificate: clients stop trusting it when the CA expires")
        return result

    def _write(self, cert, key):
        for path in {os.path.dirname(self.cert_path), os.path.dirname(self.key_path)}:
            os.makedirs(path, mode=0o755, exist_ok=True)
        remove_stale_temps(os.path.dirname(self.key_path), os.path.basename(self.key_path))
        remove_stale_temps(os.path.dirname(self.cert_path), os.path.basename(self.cert_path))
        # Key before certificate: a crash in between leaves a mismatch the next run repairs.
        if key is not None:
            atomic_write(self.key_path, tls.key_to_pem(key), mode=self.key_mode, uid=self.uid, gid=self.gid)
        atomic_write(self.cert_path, tls.cert_to_pem(cert), mode=self.cert_mode, uid=self.uid, gid=self.gid)

    def _ca_copy(self, ca_pem):
        have = read_bytes(self.ca_copy_path, "the CA copy")
        if have != ca_pem:
            self.changed = True
            if not self.module.check_mode:
                os.makedirs(os.path.dirname(self.ca_copy_path), mode=0o755, exist_ok=True)
                atomic_write(self.ca_copy_path, ca_pem, mode=self.cert_mode, uid=self.uid, gid=self.gid)
            return
        self._fix_attrs(self.ca_copy_path, self.cert_mode)

    def _fix_attrs(self, path, mode):
        """Owner/mode drift is fixed apart from content drift (as community.crypto does)."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        want_uid = st.st_uid if self.uid == -1 else self.uid
        want_gid = st.st_gid if self.gid == -1 else self.gid
        if (st.st_uid, st.st_gid) != (want_uid, want_gid):
            self.changed = True
            if not self.module.check_mode:
                os.chown(path, want_uid, want_gid)
        if st.st_mode & 0o7777 != mode:
            self.changed = True
            if not self.module.check_mode:
                os.chmod(path, mode)


def _describe(summary, key_present):
    if summary is None:
        return "(no certificate)\n" if not key_present else "(no valid certificate)\n"
    return "".join(f"{k}: {summary[k]}\n" for k in (
        "sans", "subject", "issuer", "serial", "not_before", "not_after", "key", "fingerprint_sha256",
        "public_key_fingerprint_sha256"))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            names=dict(type="list", elements="str", required=True),
            ca_path=dict(type="path"),
            project_dir=dict(type="path"),
            certs_dir=dict(type="path"),
            cert_path=dict(type="path"),
            key_path=dict(type="path"),
            ca_copy_path=dict(type="path"),
            key_type=dict(type="str", default="rsa", choices=["rsa", "ecdsa"]),
            rsa_bits=dict(type="int", default=2048, choices=[2048, 3072, 4096]),
            validity_days=dict(type="int"),
            allow_long_validity=dict(type="bool", default=False),
            renew_before_days=dict(type="int", default=30),
            client_auth=dict(type="bool", default=False),
            organization=dict(type="str", default="Hy-Home development certificate"),
            organizational_unit=dict(type="str"),
            regenerate=dict(type="str", default="auto", choices=["auto", "never", "fail", "always"]),
            reuse_key=dict(type="bool", default=True),
            owner=dict(type="str"),
            group=dict(type="str"),
            mode=dict(type="raw", default="0600"),
            cert_mode=dict(type="raw", default="0644"),
        ),
        supports_check_mode=True,
    )
    if not tls.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=str(tls.CRYPTOGRAPHY_IMPORT_ERROR))
    try:
        leaf = LeafCertificate(module)
        result = leaf.run()
    except HyHomeError as exc:
        module.fail_json(msg=exc.msg)
    module.exit_json(changed=leaf.changed, **result)


if __name__ == "__main__":
    main()
