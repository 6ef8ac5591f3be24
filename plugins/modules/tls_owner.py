#!/usr/bin/python
# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tls_owner
short_description: Say which uid and gid must own the TLS key and certificate, from the services that mount them
description:
  - Reads the Compose project and finds the services that read the leaf key (and certificate) written by
    M(hyhome.bootstrap.tls_certificate). A service reads a file when it bind-mounts the file or a directory
    above it, or declares it as a compose secret (C(secrets.<name>.file)).
  - Resolves the user each reader runs as with the collection's identity resolver, in order. An owner
    override for the service comes first. Then a numeric C(user:), then C(user:) by name in the image's own
    C(/etc/passwd). Then the image's configured user when the image is on the engine and it is not root.
    Then the built-in table of well-known images, extended by O(image_users). Else root, with a warning
    naming the fix.
  - One reader uid gives that uid and its gid, key mode C(0400); every other uid is refused. Several reader
    uids give owner root and a group every non-root reader has (its primary gid or a numeric C(group_add)),
    key mode C(0440). When there is no common group, the result's RV(hint) names the services that need
    C(group_add).
  - Changes nothing. The M(hyhome.bootstrap.tls) role passes the result to M(hyhome.bootstrap.tls_certificate)
    (or to the copy of the files when they are issued on the controller).
version_added: 0.2.0
author: Hy-Home Bootstrap maintainers (@hyhome)
requirements:
  - Docker Compose v2 (C(docker compose config)) to read the project.
  - Only when a user name or an image's configured user must be read, the Docker engine and either the Python
    C(docker) SDK or the C(docker) CLI.
extends_documentation_fragment:
  - hyhome.bootstrap.project
options:
  profiles:
    description: Compose profiles to activate (V(*) for all). Services of inactive profiles are not readers.
  docker_cli:
    description: The docker CLI used for C(docker compose config) (and image lookups without the SDK).
  certs_dir:
    description: Directory of the leaf files. Defaults to C(<project_dir>/secrets/certs).
    type: path
  key_path:
    description: The private key whose readers decide the owner. Defaults to C(<certs_dir>/key.pem).
    type: path
  cert_path:
    description: The certificate, whose readers decide when nobody mounts the key. Defaults to C(<certs_dir>/cert.pem).
    type: path
  overrides:
    description: 'Owner per service name, as C({service: {owner, group}}) or C({service: "uid[:gid]"}).'
    type: dict
    default: {}
  image_users:
    description: C(uid[:gid]) per image repository (C(myorg/proxy)), on top of the built-in table.
    type: dict
    default: {}
  missing_image:
    description: A user name must be resolved in an image that is not on the engine. V(warn) falls through to
      the next rule and warns; V(fail) stops.
    type: str
    choices: [warn, fail]
    default: warn
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode gives the same answer.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
  idempotent:
    support: full
    description: Never reports a change.
seealso:
  - module: hyhome.bootstrap.tls_certificate
  - module: hyhome.bootstrap.data_dirs
"""

EXAMPLES = r"""
- name: Who must own the gateway key
  hyhome.bootstrap.tls_owner:
    project_dir: /srv/stack
  register: tls_owner

- name: Certificate readable by exactly those services
  hyhome.bootstrap.tls_certificate:
    project_dir: /srv/stack
    names: [home.arpa, "*.home.arpa"]
    owner: "{{ tls_owner.owner }}"
    group: "{{ tls_owner.group }}"
    mode: "{{ tls_owner.key_mode }}"
"""

RETURN = r"""
owner:
  description: The uid that must own the key, certificate and CA copy (0 when several uids read them).
  returned: success
  type: int
  sample: 101
group:
  description: The gid of the files (the shared group when several uids read them).
  returned: success
  type: int
  sample: 101
key_mode:
  description: C(0400) for one reader uid (or none), C(0440) when several uids share the key through the group.
  returned: success
  type: str
  sample: "0400"
shared:
  description: Whether several uids read the key.
  returned: success
  type: bool
hint:
  description: What to change when a reader does not have the shared group (null otherwise).
  returned: success
  type: str
key_readers:
  description: Services that read the key, how, and the user they run as.
  returned: success
  type: list
  elements: dict
  contains:
    service: {description: Service name., type: str}
    via: {description: "C(bind <host path> -> <target>) or C(secret <name> -> <target>).", type: str}
    uid: {description: Resolved uid., type: int}
    gid: {description: Resolved gid., type: int}
    source: {description: "Which rule answered: override, user, image-config, image-table, unresolved.", type: str}
    detail: {description: "The rule's detail (the image, the table entry).", type: str}
  sample:
    - {service: gateway, via: "bind /srv/stack/secrets/certs/key.pem -> /etc/nginx/tls/key.pem", uid: 101,
       gid: 101, source: user, detail: "101:101"}
cert_readers:
  description: Services that read the certificate, in the same form as RV(key_readers).
  returned: success
  type: list
  elements: dict
project_context:
  description:
    - Whether this call reused the run's project context (V(hit)) or ran C(docker compose config) (V(miss)),
      and a short form of the context key. Counting V(miss) over a run counts the computations.
  returned: success
  type: dict
  sample: {cache: hit, key: 3f2a9c01b7de}
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the documentation, as Ansible expects
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import os_error_text  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_options import (  # noqa: E402
    context_result,
    project_argspec,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **project_argspec(),
            certs_dir=dict(type="path"),
            key_path=dict(type="path"),
            cert_path=dict(type="path"),
            overrides=dict(type="dict", default={}),
            image_users=dict(type="dict", default={}),
            missing_image=dict(type="str", choices=["warn", "fail"], default="warn"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        from ansible_collections.hyhome.bootstrap.plugins.module_utils import identity, tls_files
        from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import split_compose_stderr
        from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_options import load

        certs_dir = p["certs_dir"] or os.path.join(p["project_dir"], "secrets", "certs")
        key_path = os.path.abspath(p["key_path"] or os.path.join(certs_dir, "key.pem"))
        cert_path = os.path.abspath(p["cert_path"] or os.path.join(certs_dir, "cert.pem"))
        project = load(p, module.check_mode)
        if project.config_error:
            errors = split_compose_stderr(project.config_error)[0]
            module.warn("docker compose rejects the project, readers are taken from the raw files: "
                        + ("; ".join(errors) or "no error line"))
        resolver = identity.IdentityResolver(p["overrides"], p["image_users"],
                                             identity.DockerImages(docker_cli=p["docker_cli"]), p["missing_image"])
        outcome = tls_files.derive_owner(project, key_path, cert_path, resolver)
    except HyHomeError as exc:
        module.fail_json(msg=f"{exc.msg}. Set the owner explicitly (tls_key_owner, tls_key_group) to skip the "
                             "derivation from the project")
    except OSError as exc:
        module.fail_json(msg=f"cannot read the project: {os_error_text(exc)}")
    for warning in outcome.warnings:
        module.warn(warning)
    module.exit_json(changed=False, project_context=context_result(project), **outcome.result)


if __name__ == "__main__":
    main()
