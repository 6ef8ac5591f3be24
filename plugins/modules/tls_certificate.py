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
  - Owner, group and mode drift is fixed without re-issuing, through a descriptor opened without following links
    (C(O_NOFOLLOW), C(fchown), C(fchmod)); RV(attributes_fixed) and the diff list what was changed.
  - Refused with a one-line error, before anything is written, also in check mode. A key, certificate or CA copy
    file that is a symlink, has more than one hard link, is not a regular file or is over 1 MiB. A symlinked
    directory between O(project_dir) (else O(certs_dir)) and those files, such as a linked C(secrets/). Any of them
    inside the CA directory. A key that is the CA's own key (same public key). A CA that has expired or is not
    valid yet, or whose key does not belong to its certificate, or whose files are symlinks or hard-linked.
version_added: 0.1.0
author: Hy-Home Bootstrap maintainers (@hyhome)
requirements:
  - cryptography >= 42.0
options:
  names:
    description:
      - The subjectAltNames, in order. Hostnames, C(*.domain) wildcards (whole left-most label only), IPv4 and
        IPv6 addresses. Duplicates are dropped; the order does not matter for idempotence. At most 100 names.
    type: list
    elements: str
    required: true
  add_host_addresses:
    description:
      - Add the default IPv4 and IPv6 addresses of the host the module runs on to O(names) (what Ansible's
        C(default_ipv4) and C(default_ipv6) facts report), so no facts need to be gathered.
    type: bool
    default: false
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
    description: RSA key size of the leaf. Larger keys are refused (they take minutes to generate and add nothing here).
    type: int
    choices: [2048, 3072, 4096]
    default: 2048
  validity_days:
    description:
      - Validity in days. Unset means mkcert's 2 years 3 months (at most 823 days).
      - At most 825 days, or 3650 with O(allow_long_validity=true).
    type: int
  allow_long_validity:
    description: Allow O(validity_days) over 825 days (Apple platforms reject such certificates).
    type: bool
    default: false
  renew_before_days:
    description: Re-issue when the certificate expires within this many days (0 to 3650, and shorter than the validity).
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
    description:
      - Mode of the private key file.
      - It may grant the owner read (required) and write, and the group read. Nothing else. So V(0400), V(0440),
        V(0600) or V(0640). Any access for others, group write, execute or special bits are refused.
    type: raw
    default: "0600"
  cert_mode:
    description:
      - Mode of the certificate and the CA copy.
      - Owner read is required. Group or world write and special bits are refused.
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
attributes_fixed:
  description: >-
    Owner and mode changes made (or in check mode, that would be made) on existing files, as
    C(<attribute> of <path>: <before> -> <after>).
  returned: when an owner or mode differed
  type: list
  elements: str
  sample: ["mode of /srv/stack/secrets/certs/key.pem: 0644 -> 0400"]
"""

# Ansible modules put their imports after the documentation strings.
from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils import hostinfo, tls, tls_files  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            names=dict(type="list", elements="str", required=True),
            add_host_addresses=dict(type="bool", default=False),
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
        if module.params["add_host_addresses"]:
            module.params["names"] = hostinfo.with_host_addresses(module.params["names"])
        request = tls_files.LeafRequest.from_options(module.params)
        outcome = tls_files.ensure_leaf(request, check=module.check_mode, diff=module._diff)
    except HyHomeError as exc:
        module.fail_json(msg=exc.msg)
    for warning in outcome.warnings:
        module.warn(warning)
    if module._diff:
        outcome.result["diff"] = outcome.diff
    module.exit_json(changed=outcome.changed, **outcome.result)


if __name__ == "__main__":
    main()
