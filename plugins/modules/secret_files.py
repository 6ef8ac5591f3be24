#!/usr/bin/python
# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0 (see LICENSE at the collection root)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: secret_files
short_description: Make every file-based secret of a Compose project exist, safely and idempotently
version_added: "0.1.0"
description:
  - Derives the secrets a Compose project needs from its model (top-level C(secrets:) entries with
    C(file:), consumers from each service's C(secrets:)), merged with an optional O(registry) that sets
    per secret the kind, length/charset, owner/group/mode, consumers, and whether a person must provide it.
  - Generates missing values from the OS CSPRNG; never overwrites an existing non-empty value (an empty
    file, or the empty directory Docker creates for a missing file, counts as missing).
  - "Kinds: C(password), C(hex), C(base64), C(token) (urlsafe), C(uuid), C(username) (a readable account name,
    C(hyhome_) and a pronounceable random word with two digits), C(htpasswd) (derived from another
    secret; bcrypt, apr1 or sha512_crypt; verified, never re-hashed while it still matches), C(rsa) and
    C(ed25519) private keys (PEM PKCS#8, public key written alongside as C(<file>.pub)), C(fernet) and
    C(provided) (only a person can supply it: when missing, the module fails before writing anything and
    lists each one with the file to put it in; an optional provided secret gets a placeholder instead)."
  - "Without a registry C(kind), the name may say it: names with C(webhook), C(smtp), OAuth/OIDC client
    credentials, credentials of named outside services (C(github_client_secret), C(cloudflare_api_token)) and
    C(*_api_key) are C(provided) and optional (a marked placeholder, a warning on every run naming the file
    and who reads it, listed in RV(provided_pending)); names ending in C(_user), C(_username), C(_root_user)
    or C(_login) are C(username). Other names get O(default_kind). A registry C(kind) always wins."
  - Rotation is explicit (O(rotate)); the old value is kept in C(<secrets_dir>/.history/<file>/) (mode 0400,
    timestamped) and the result lists the services that read it so they can be recreated.
  - Persistent secrets (default) have the value in use recorded in the history, so a deleted file is
    restored instead of being silently replaced by a different value that no longer opens the consumer's data.
  - Owner and mode make the file readable by exactly the consuming containers' users (Compose bind-mounts
    file secrets with the host file's owner and mode). One reader identity gives mode 0400 owned by it;
    consumers running as different users share a group and mode 0440, and the result says so.
  - "The uid:gid a consumer runs as comes from the shared identity resolver, first answer wins: O(overrides)
    for the service; a numeric C(user:); C(user:) by name in the image's C(/etc/passwd); the image's configured
    user when the image is on the engine; the built-in table of well-known images (extended by
    O(image_users)). When nothing answers, the run warns with the fix and O(default_owner) is used."
  - Writes are atomic (temporary file in the same directory, fsync, rename, fsync of the directory). The temporary
    file is named C(.<file>.tmp.hyhome-<12 hex digits>); only files of exactly that shape are removed as leftovers of
    an interrupted run (and the removal is listed in the diff), never anyone else's C(.<file>.tmp*) file.
  - "Refused before anything is written, with a one-line message: a secret name (compose C(secrets:), registry
    file or option) that is not one plain file name (1-200 letters, digits, C(.), C(_), C(-), starting with a
    letter or digit, no C(/), no C(..)) - the name becomes a file name in the controller store; a secrets tree
    inside the project that a symlink (the directory itself or a parent) makes resolve outside the project; a
    secret file or public key that is a symlink or has other hard links (its owner and mode would change a file
    outside the tree); registry values of the wrong type or beyond the limits below."
  - A failure part-way (a full disk, say) fails with C(changed=true) and RV(written), the paths already written;
    a re-run finishes the work.
author:
  - Hy-Home Bootstrap maintainers (@hyhome)
requirements:
  - Python C(cryptography) on the managed host for C(rsa) and C(ed25519).
  - C(passlib) (the C(libpass) fork) for C(htpasswd) with apr1 and sha512_crypt; bcrypt uses passlib with the
    C(bcrypt) package, or the system crypt(3) when that backend is missing.
  - Docker Compose v2 on the managed host when O(project_dir) is given and O(derive_from_compose=true).
  - The Docker engine, with the Python C(docker) SDK or the C(docker) CLI, to read an image's configured user;
    without the image, the built-in table and O(image_users) answer.
attributes:
  check_mode:
    support: full
    description: >-
      Reads everything and reports what would be generated, restored, rotated or re-permissioned; writes nothing.
  diff_mode:
    support: full
    description: The diff lists secret names and actions only, never values or hashes of values.
  idempotent:
    support: full
    description: A second run with the same inputs reports C(changed=false); salted hashes are verified, not re-made.
extends_documentation_fragment:
  - hyhome.bootstrap.project
options:
  project_dir:
    description:
      - Directory of the Compose project. Its model gives the secrets and their consumers.
      - Omit it to manage registry entries with a C(file) only.
      - Its C(.hyhome/) state directory keeps the run's project context (see RV(project_context)).
    type: path
    required: false
  secrets_dir:
    description:
      - The secrets tree. Every secret file must be inside it (no C(../), no symlink pointing out).
      - Defaults to C(<project_dir>/secrets). A tree inside O(project_dir) must stay inside it once symlinks are
        resolved; to keep the secrets elsewhere, set this option to the real directory.
    type: path
  derive_from_compose:
    description: Read the Compose project at all. With V(false) only registry entries with a C(file) are managed.
    type: bool
    default: true
  registry:
    description:
      - "Per secret name: C(kind) (one of the kinds above, default O(default_kind)); C(length) (characters for
        password/hex, random bytes for base64/token); C(charset) (password: characters or named sets alnum,
        ascii_letters, ascii_lowercase, ascii_uppercase, digits, hexdigits, punctuation, urlsafe; default alnum);
        C(size) (RSA bits, default 3072, floor 2048); C(source), C(username) (default admin), C(scheme)
        (bcrypt, apr1, sha512_crypt) and C(rounds) for htpasswd; C(public_key) (default true) and
        C(public_format) (pem or openssh) for keys; C(owner), C(group), C(mode); C(consumers) (service names,
        overrides compose); C(persistent); C(optional) and C(hint) for provided secrets; C(file) (relative to
        O(secrets_dir)) for secrets compose does not declare."
      - "Floors: password 16 characters and 80 bits of entropy, hex 32 characters, base64/token 16 bytes,
        bcrypt 10 rounds, sha512_crypt 5000 rounds."
      - "Limits: C(length) at most 4096 (characters for password/hex, random bytes for base64/token), RSA C(size)
        at most 8192 bits, bcrypt at most 16 rounds, sha512_crypt at most 1000000 rounds."
      - "Types: C(length), C(size), C(rounds) integers (or strings of digits); C(consumers) a list of strings;
        C(charset) a string or a list of strings; C(persistent), C(optional), C(public_key) booleans (or
        true/false/yes/no strings); other keys strings (C(owner), C(group), C(mode) may be numbers)."
      - Holds no values.
    type: dict
    default: {}
  registry_file:
    description:
      - A YAML file on the managed host with registry entries (for example one shipped with the project), at
        the top level or under C(secrets:). Entries in O(registry) win, key by key. A missing file is ignored.
      - Default C(<project_dir>/hyhome-secrets.yml).
    type: path
  default_kind:
    description: Kind of a secret the registry does not describe.
    type: str
    default: password
    choices: [password, hex, base64, token, uuid, username, rsa, ed25519, fernet, provided]
  persistent_default:
    description:
      - Whether secrets are persistent unless the registry says otherwise. A persistent secret whose file
        disappears is restored from the history; a non-persistent one is generated anew with a warning.
    type: bool
    default: true
  default_owner:
    description: >-
      Owner (name or uid) of secrets no service reads, and of those whose consumer's user nothing resolves
      (see O(overrides) and O(image_users)).
    type: raw
    default: 0
  default_group:
    description: Group (name or gid) in the same cases.
    type: raw
    default: 0
  overrides:
    description:
      - The uid:gid a service runs as, by service name, when nothing else says it right. Values are dicts with
        C(owner) and C(group) (names resolved on the managed host, or numbers) or C("uid[:gid]").
      - The same table as the C(overrides) of M(hyhome.bootstrap.data_dirs); keys containing C(/) (path
        overrides) are ignored here.
    type: dict
    default: {}
  image_users:
    description:
      - C("uid[:gid]") per image repository (C(myorg/worker), C(grafana/loki)), on top of the built-in table of
        well-known images. The same table as the C(image_users) of M(hyhome.bootstrap.data_dirs).
    type: dict
    default: {}
  shared_group:
    description: >-
      Group (name or gid) that consumers running as different users share, when their C(user:) gives none in common.
    type: raw
  rotate:
    description: Names of secrets to give a new value now (the old one goes to the history).
    type: list
    elements: str
    default: []
  restore:
    description: Names of secrets to roll back to the newest different value in their history.
    type: list
    elements: str
    default: []
  seed:
    description:
      - Values from the source of truth (the controller store), by secret name. A missing secret, or a
        placeholder, takes its seed value instead of a new one. An existing different value is kept and warned about.
    type: dict
    default: {}
  rotate_to_seed:
    description:
      - The secrets in O(rotate) and O(restore) take their O(seed) value instead of a new one (or one from this host's
        history). For the other hosts of a stack that shares one controller store, after the first host rotated
        (or rolled back) and stored the value, so that every host moves to the same one, a rebuilt host without
        the history included. A seed that is missing or equal to the current value is an error (nothing changes).
    type: bool
    default: false
  exclude:
    description:
      - Glob patterns, relative to O(secrets_dir), of secret files another job owns. Compose secrets matching
        them are not generated nor re-permissioned (the default leaves C(certs/) to the TLS role).
    type: list
    elements: str
    default: ["certs/*"]
  manage_dir_modes:
    description: Remove access for other users from the secrets directory and the directories holding secret files.
    type: bool
    default: true
notes:
  - Values never appear in the result, the diff or warnings; O(seed) is C(no_log).
  - Run it where the files live (the Docker host). See the C(hyhome.bootstrap.secrets) role README for the
    controller store that makes a rebuilt host get the same values back.
seealso:
  - module: community.crypto.openssl_privatekey
  - module: community.general.htpasswd
"""

EXAMPLES = r"""
- name: Generate every secret the project declares
  hyhome.bootstrap.secret_files:
    project_dir: /srv/hyhome
    registry:
      postgres_password: {kind: password, length: 40}
      grafana_admin_password: {kind: password, file: grafana/admin_password, consumers: []}
      gateway_htpasswd: {kind: htpasswd, source: grafana_admin_password, username: admin}
      app_signing_key: {kind: ed25519}
      smtp_password: {kind: provided, hint: "app password of the SMTP relay"}
      slack_webhook: {kind: provided, optional: true}
  register: secrets_result

- name: Own each file by the user its consumer's image runs as, with the inventory's identity tables
  hyhome.bootstrap.secret_files:
    project_dir: /srv/hyhome
    image_users:
      myorg/worker: "1500:1500"
    overrides:
      legacy-app: {owner: 2000, group: 2000}
  register: secrets_result

- name: Rotate the database password and recreate exactly its consumers
  hyhome.bootstrap.secret_files:
    project_dir: /srv/hyhome
    rotate: [postgres_password]
  register: rotated

- name: Show what would change, writing nothing
  hyhome.bootstrap.secret_files:
    project_dir: /srv/hyhome
  check_mode: true
  diff: true
"""

RETURN = r"""
secrets:
  description: One entry per managed secret, names and actions only.
  returned: success
  type: list
  elements: dict
  contains:
    name: {description: Secret name., type: str}
    path: {description: Host file., type: str}
    kind: {description: Kind., type: str}
    action:
      description: >-
        ok, generated, restored, rotated, rederived, rolled-back or placeholder-written.
      type: str
    owner: {description: Owner uid the file has (or will have)., type: int}
    group: {description: Group gid., type: int}
    mode: {description: Octal mode., type: str, sample: "0400"}
    consumers: {description: Services that read it., type: list, elements: str}
    permissions_fixed: {description: Owner or mode drift was (or would be) corrected., type: bool}
    public_key: {description: 'Public key file written (keys only, when written).', type: str, returned: when written}
    history: {description: History records written., type: list, elements: str, returned: when written}
    readers:
      description: The consuming services with the uid and gid each runs as and where that came from
        (override, user, image-config, image-table, unresolved).
      type: list
      elements: dict
      returned: when the secret has consumers in the project
    kind_inferred:
      description: What the name signals, when the kind was inferred from the name (no registry C(kind)).
      type: str
      returned: when inferred
    notes:
      description: Why, in words (different users sharing a group, restore reasons).
      type: list
      elements: str
      returned: when any
  sample:
    - {name: db_password, path: /srv/hyhome/secrets/db/pg.txt, kind: password, action: generated,
       owner: 999, group: 999, mode: "0400", consumers: [db], permissions_fixed: false}
changed_secrets:
  description: Names of secrets whose content or permissions changed (or would change in check mode).
  returned: success
  type: list
  elements: str
provided_pending:
  description: >-
    Provided secrets that hold a placeholder (written in this run or earlier) until a person writes the real
    value; the run also warns about each, every run.
  returned: success
  type: list
  elements: dict
  contains:
    name: {description: Secret name., type: str}
    path: {description: The file to write the value to., type: str}
    consumers: {description: Services that read it (and fail until it is supplied)., type: list, elements: str}
    hint: {description: What the value is and where it comes from., type: str}
    inferred: {description: The kind C(provided) was inferred from the name., type: bool}
  sample:
    - {name: slack_webhook, path: /srv/hyhome/secrets/slack_webhook, consumers: [alertmanager],
       hint: "a webhook URL issued by the receiving service (Slack, Discord, Teams, ...)", inferred: true}
rotated:
  description: Names rotated in this run.
  returned: success
  type: list
  elements: str
recreate_services:
  description: Services that read a secret whose content changed in this run; recreate exactly these.
  returned: success
  type: list
  elements: str
  sample: [api, db]
store_paths:
  description: >-
    Files whose value is new on this host (generated, rotated, rolled back, re-derived), keyed by secret name,
    for copying back to a controller store. Public keys and placeholders are not listed.
  returned: success
  type: dict
excluded:
  description: Compose secrets left alone because they match O(exclude).
  returned: success
  type: list
  elements: str
unused_registry:
  description: Registry names that matched no compose secret and have no C(file) (typos, or other stacks).
  returned: success
  type: list
  elements: str
secrets_dir:
  description: The secrets tree.
  returned: success
  type: str
written:
  description:
    - Paths (never values) a failed run had already written or changed when it stopped; the task then reports
      C(changed=true). Re-run to finish.
  returned: on failure part-way through the writes
  type: list
  elements: str
project_context:
  description:
    - Whether this call reused the run's project context (V(hit)) or ran C(docker compose config) (V(miss)),
      and a short form of the context key. Counting V(miss) over a run counts the computations.
  returned: when the compose project was read
  type: dict
  sample: {cache: hit, key: 3f2a9c01b7de}
"""

import os  # noqa: E402 - after the docs, as Ansible expects
import traceback  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402

try:  # PyYAML (compose model) must exist where the module runs
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import secrets as core
except ImportError:
    YAML_IMPORT_ERROR = traceback.format_exc()
else:
    YAML_IMPORT_ERROR = None
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import os_error_text  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_options import (  # noqa: E402
    context_result,
    project_argspec,
)

STORE_ACTIONS = ("generated", "restored", "rotated", "rolled-back", "rederived")


def _load_registry_file(path):
    if not path or not os.path.exists(path):
        return {}
    # The one bounded project-YAML loader: alias bombs, NUL/binary, non-UTF-8 and oversized files
    # are refused with one line naming the file; YAML's own message (which quotes text) is not echoed.
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import load_yaml_file

    data = load_yaml_file(path, "registry_file") or {}
    if isinstance(data, dict) and isinstance(data.get("secrets"), dict):
        data = data["secrets"]   # the mapping may also sit under `secrets:` (as preflight accepts)
    if not isinstance(data, dict):
        raise HyHomeError(f"registry_file {path} must be a mapping of secret names to entries")
    return data


def _load_project(p, check_mode):
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_options import load

    return load(p, check_mode)


def _identities(p, project):
    """The shared identity resolver; it asks the engine about images only when a project is read."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.identity import DockerImages, IdentityResolver

    if project is None:
        return core.offline_resolver()
    images = DockerImages(docker_cli=p.get("docker_cli") or "docker")
    return IdentityResolver(overrides=p["overrides"], image_users=p["image_users"], images=images)


def _apply(plan):
    """Apply the plan; a failure part-way says what was already written (paths, never values)."""
    try:
        core.apply(plan)
    except (HyHomeError, OSError) as e:
        why = e.msg if isinstance(e, HyHomeError) else os_error_text(e)
        if not plan.written:
            raise HyHomeError(f"secrets: {why}; nothing was written") from None
        raise HyHomeError(f"secrets: {why}; {len(plan.written)} path(s) were already written (see 'written'), "
                          "re-run to finish", changed=True, written=list(plan.written)) from None


def run(module):
    p = module.params
    if not p["project_dir"] and not p["secrets_dir"]:
        raise HyHomeError("give project_dir (the compose project) or secrets_dir")
    secrets_dir = p["secrets_dir"] or os.path.join(p["project_dir"], "secrets")
    project = None
    warnings = []
    if p["project_dir"] and p["derive_from_compose"]:
        project = _load_project(p, module.check_mode)
        if project.config_error:
            from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import split_compose_stderr

            errors = split_compose_stderr(project.config_error)[0]
            warnings.append("docker compose config failed, secrets were read from the raw compose files: "
                            + ("; ".join(errors) or "no error line"))
    registry_file = p["registry_file"]
    if registry_file is None and p["project_dir"]:
        registry_file = os.path.join(p["project_dir"], "hyhome-secrets.yml")
    registry = core.merge_registry(_load_registry_file(registry_file), registry_file, p["registry"])
    specs = core.build_specs(project, registry, secrets_dir, p["default_kind"], p["persistent_default"],
                             p["exclude"])
    plan = core.plan(specs, secrets_dir, project, rotate=p["rotate"], restore=p["restore"], seed=p["seed"],
                     default_owner=p["default_owner"], default_group=p["default_group"],
                     shared_group=p["shared_group"], manage_dir_modes=p["manage_dir_modes"],
                     identities=_identities(p, project), project_dir=p["project_dir"],
                     rotate_to_seed=p["rotate_to_seed"])
    excluded = core.excluded_secrets(project, secrets_dir, p["exclude"])
    if plan.changed and not module.check_mode:
        _apply(plan)
    result = {
        "changed": plan.changed,
        "secrets_dir": plan.secrets_dir,
        "secrets": plan.results(),
        "changed_secrets": [i.spec.name for i in plan.items if i.changed],
        "rotated": [i.spec.name for i in plan.items if i.action == "rotated"],
        "provided_pending": plan.provided_pending(),
        "recreate_services": plan.recreate_services(),
        "store_paths": {i.spec.name: i.spec.path for i in plan.items
                        if (i.action in STORE_ACTIONS or i.spec.name not in p["seed"])
                        and i.final_value is not None and not core.is_placeholder(i.final_value)},
        "unused_registry": [n for n in core.unused_registry_entries(specs, registry) if n not in excluded],
        "excluded": excluded,
    }
    if project is not None:
        result["project_context"] = context_result(project)
    if module._diff:
        result["diff"] = plan.diff()
    for w in warnings + plan.warnings:
        module.warn(w)
    return result


def argument_spec() -> dict:
    """The module's options (a fresh dict each call)."""
    return {
        **project_argspec(project_dir_required=False),
        "secrets_dir": {"type": "path"},
        "derive_from_compose": {"type": "bool", "default": True},
        "registry": {"type": "dict", "default": {}},
        "registry_file": {"type": "path"},
        "default_kind": {"type": "str", "default": "password",
                         "choices": ["password", "hex", "base64", "token", "uuid", "username", "rsa", "ed25519",
                                     "fernet", "provided"]},
        "persistent_default": {"type": "bool", "default": True},
        "default_owner": {"type": "raw", "default": 0},
        "default_group": {"type": "raw", "default": 0},
        "shared_group": {"type": "raw"},
        "overrides": {"type": "dict", "default": {}},
        "image_users": {"type": "dict", "default": {}},
        "rotate": {"type": "list", "elements": "str", "default": []},
        "restore": {"type": "list", "elements": "str", "default": []},
        "seed": {"type": "dict", "default": {}, "no_log": True},
        "rotate_to_seed": {"type": "bool", "default": False},
        "exclude": {"type": "list", "elements": "str", "default": ["certs/*"]},
        "manage_dir_modes": {"type": "bool", "default": True},
    }


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
    )
    if YAML_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("PyYAML (Debian: python3-yaml)"), exception=YAML_IMPORT_ERROR)
    try:
        result = run(module)
    except HyHomeError as e:
        # changed and the paths a failed apply already wrote (paths only); nothing else leaves
        module.fail_json(msg=e.msg, **{k: v for k, v in e.details.items() if k in ("changed", "written")})
    except OSError as e:
        # Paths and errno only: no value is ever part of an OSError raised here.
        module.fail_json(msg=f"secrets: {os_error_text(e)}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
