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
author: Hy-Home Bootstrap maintainers (@hyhome)
requirements:
  - cryptography >= 42.0 (for O(state=present); O(state=trusted) and O(state=untrusted) need only Python)
options:
  path:
    description:
      - The CA directory. Created with mode 0700 when missing; an existing one is set to 0700.
      - It must be a real directory (not a symlink) owned by the user running the module, and so must
        C(rootCA-key.pem) and C(rootCA.pem) (regular files, one hard link each); otherwise the module fails
        without changing anything, since another user could have written or could replace the CA key.
      - Defaults to C($HYHOME_CAROOT), else C(/var/lib/hyhome/ca) for root, else C(~/.local/share/hyhome/ca).
      - Keep it outside the compose project, so the CA key is never mounted into a container.
      - Creating the CA holds an exclusive lock on C(.hyhome-ca.lock) in this directory, so of two runs on a new
        directory one creates the CA and the other waits (up to 300 s), then keeps that CA (C(changed=false)).
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
        An expired CA is an error with V(never) and V(fail), since nothing it signs is trusted any more.
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
    description: Validity of a new CA in days, 1 to 7305 (20 years). Unset means 10 calendar years, as mkcert.
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
    description: Warn (and with O(regenerate=fail), fail) when the CA expires within this many days (0 to 7305).
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
modes_fixed:
  description: The CA directory and files whose mode was (or in check mode would be) set to 0700, 0400 or 0644.
  returned: when a mode differed
  type: list
  elements: str
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
    not_before: {description: 'Start of validity (ISO 8601, UTC).', type: str}
    not_after: {description: 'End of validity (ISO 8601, UTC).', type: str}
    days_left: {description: Whole days until it expires., type: int}
    expired: {description: Whether it has expired., type: bool}
    expires_soon: {description: Whether it expires within O(expiry_warning_days)., type: bool}
    fingerprint_sha256: {description: SHA-256 fingerprint of the certificate., type: str}
    key: {description: 'Key type and size, for example C(rsa-3072).', type: str}
trust:
  description: What was (or would be) done in each trust store.
  returned: when trust is managed
  type: dict
  contains:
    system: {description: "C(family), C(anchor), C(changed), C(in_bundle) for the system store, or null.", type: dict}
    nss: {description: "One entry per NSS database: C(database), C(changed).", type: list}
"""

# Ansible modules put their imports after the documentation strings.
from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils import tls, tls_files  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402


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
        outcome = tls_files.run_local_ca(p, module.run_command, check=module.check_mode)
    except HyHomeError as exc:
        module.fail_json(msg=exc.msg)
    for warning in outcome.warnings:
        module.warn(warning)
    if module._diff:
        outcome.result["diff"] = outcome.diff
    module.exit_json(changed=outcome.changed, **outcome.result)


if __name__ == "__main__":
    main()
