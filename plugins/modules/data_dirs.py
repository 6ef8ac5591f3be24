#!/usr/bin/python
"""Ansible module: every bind-mounted host path with the owner its container runs as."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: data_dirs
short_description: Create bind-mount directories with the container's owner and fix ownership drift
version_added: "0.1.0"
description:
  - Derives every host path a Compose project bind-mounts from the project model (short and long
    C(bind) syntax, and named volumes on the C(local) driver with C(o=bind) and C(device)), so nothing
    is listed twice by hand.
  - "Decides the owner of each path from, in order: O(overrides) for the path, then for the service;
    the service's C(user:) (a name is resolved in the image's own C(/etc/passwd), read from a created,
    never started container); the image's configured user (C(Config.User)) when the image is on the
    engine and it is not root; the built-in table of well-known images, which also covers images that
    start as root and drop to a fixed uid (postgres 999, grafana 472, loki and tempo 10001, prometheus
    and the exporters 65534, opensearch, kafka and keycloak 1000, redis and valkey 999, spilo 101, ...;
    extend or override it with O(image_users)); else root, with a warning naming the fix."
  - Read-only binds of host paths outside the project (cAdvisor's C(/:/rootfs:ro), C(/sys), C(/var/run),
    C(/var/lib/docker), C(/etc/machine-id)) belong to the host. They are never changed nor refused, and
    are listed in RV(host_paths) as C(host path, not managed). A writable bind of a system path is still
    refused.
  - A writable directory gets that owner and O(mode). Two services with different users writing to
    one directory share it through a group (O(shared_mode), setgid) and the module reports which
    service needs C(group_add). A read-only mount keeps its owner and only gains read access for the
    container user (owner class, group or other, whichever already applies, else the group).
  - A bind-mounted config file that exists only as C(<name>.example) (or C(<stem>.example.<ext>)) is
    copied into place when missing, never overwritten, readable by the container user. An empty
    directory Docker created in its place is replaced. A missing file without an example is reported,
    never created as a directory.
  - Drift is fixed on the path itself always, and on its whole subtree with O(recurse), in one pass
    that changes only entries that differ, never follows a symlink, never crosses into another
    filesystem, skips device nodes and other managed paths nested inside, and reports how many
    entries were checked and fixed.
  - A file with more than one hard link shares its content and owner with another name, possibly outside
    the project, so it is never changed. The walk skips it with a warning listing it. A bind-mounted
    file that is hard-linked and would need a change is refused.
  - Refuses, before changing anything, writable binds of C(/), system directories, C(/var/lib/docker),
    the Docker socket, paths outside O(allowed_roots), and symlinked components that lead outside them.
    Paths under O(exclude) are skipped before that check. Owners and groups are checked the same way,
    so a negative uid or gid, or one beyond 32 bits, in the service user, O(overrides), O(shared_group) or
    O(image_users) is an error before any directory is created.
author: Hy-Home Bootstrap maintainers (@hyhome)
requirements:
  - Docker Compose v2 (C(docker compose config)) to read the project.
  - Only when a user name or an image's configured user must be resolved, the Docker engine and either
    the Python C(docker) SDK or the C(docker) CLI on the managed host.
attributes:
  check_mode:
    support: full
    description: Nothing is created, copied or changed; the result says what would be, with per-path
      counts of entries that would be fixed.
  diff_mode:
    support: full
    description: Owner, group and mode of each path before and after, with subtree counts.
  idempotent:
    support: full
    description: A second run reports C(changed=false).
extends_documentation_fragment:
  - hyhome.bootstrap.project
options:
  allowed_roots:
    description: Paths may only be inside these directories. Default is O(project_dir).
    type: list
    elements: path
  exclude:
    description: Trees never touched nor refused (reported as skipped); relative paths are relative to
      O(project_dir). Default is C(<project_dir>/secrets), which the secrets and tls roles own.
    type: list
    elements: path
  overrides:
    description:
      - Owner per service name or per path (a key containing C(/); relative to O(project_dir)). Values are
        dicts with C(owner), C(group) (names or numbers) and, for paths, C(mode). A path override wins.
    type: dict
    default: {}
  image_users:
    description: C(uid[:gid]) per image repository (C(postgres), C(grafana/loki)), on top of the built-in table.
    type: dict
    default: {}
  mode:
    description:
      - Mode of a writable directory used by one user when it is created. An existing one is never left
        looser than this and always gives its owner C(rwx); a mode the application tightened (PostgreSQL's
        C(0700)) is kept. Use a path override with C(mode) for an exact mode.
    type: str
    default: "0750"
  shared_mode:
    description: Mode of a writable directory shared by services with different users.
    type: str
    default: "2770"
  config_mode:
    description: Mode of a config file copied from its example.
    type: str
    default: "0640"
  shared_group:
    description: Group of shared directories when the services' primary groups differ. Default is the owner's group.
    type: raw
  recurse:
    description: Also fix owner, group and mode drift in the whole subtree of each directory.
    type: bool
    default: false
  copy_examples:
    description: Copy missing config files from their C(*.example).
    type: bool
    default: true
  missing_image:
    description: What to do when a user name or configured user cannot be resolved because the image is not
      on the engine yet. V(warn) falls through to the next rule and warns; V(fail) stops.
    type: str
    choices: [warn, fail]
    default: warn
  docker_cli:
    description: The docker CLI used for C(docker compose config) (and image lookups without the SDK).
notes:
  - Group sharing only works when the other services run with that group; the result's RV(shared) says
    which service needs C(group_add).
seealso:
  - module: ansible.builtin.file
"""

EXAMPLES = r"""
- name: Create every bind-mount directory with its container's owner
  hyhome.bootstrap.data_dirs:
    project_dir: /srv/hyhome

- name: Also fix ownership drift in every data tree, with overrides
  hyhome.bootstrap.data_dirs:
    project_dir: /srv/hyhome
    recurse: true
    allowed_roots: [/srv/hyhome, /data]
    overrides:
      minio: {owner: 1000, group: 1000}
      data/backups: {owner: root, group: root, mode: "0700"}
    image_users:
      myorg/worker: "1500:1500"
"""

RETURN = r"""
paths:
  description: One entry per bind-mounted path that is managed.
  returned: always
  type: list
  elements: dict
  contains:
    path: {description: Host path., type: str}
    kind: {description: C(dir) or C(file)., type: str}
    services: {description: Services mounting it., type: list, elements: str}
    read_only: {description: Every service mounts it read-only., type: bool}
    owner: {description: Enforced uid (null when the owner is kept)., type: int}
    group: {description: Enforced gid (null when the group is kept)., type: int}
    owner_source:
      description: "Which rule chose the owner: override, user, image-config, image-table, unresolved."
      type: str
    state: {description: "created, copied, fixed or ok.", type: str}
    checked: {description: Entries examined (the path itself plus its subtree with O(recurse))., type: int}
    fixed: {description: 'Entries whose owner, group or mode differed (fixed unless in check mode).', type: int}
    skipped_hardlinks:
      description:
        - Files with more than one hard link whose owner or mode differed, left unchanged (a warning lists
          them). Returned only when not zero.
      type: int
    hardlinks: {description: "The first 20 of those files.", type: list, elements: str}
  sample:
    - {path: /srv/hyhome/data/postgres, kind: dir, services: [postgres], read_only: false, owner: 999,
       group: 999, owner_source: image-table, state: fixed, checked: 1523, fixed: 3}
copied:
  description: Config files copied from their example.
  returned: always
  type: list
  elements: dict
  sample: [{path: /srv/hyhome/conf/pg.conf, from: /srv/hyhome/conf/pg.conf.example, services: [db]}]
shared:
  description: Paths written by services with different users, with the owner, group and a hint.
  returned: always
  type: list
  elements: dict
skipped_paths:
  description: Paths that are never changed (excluded trees, the allowed root itself), with the reason.
  returned: always
  type: list
  elements: dict
host_paths:
  description: Read-only binds of host paths outside the project, left alone, with the services and
    container targets that mount them.
  returned: always
  type: list
  elements: dict
  contains:
    path: {description: Host path., type: str}
    services: {description: Services mounting it., type: list, elements: str}
    targets: {description: Paths inside the containers., type: list, elements: str}
    reason: {description: 'Always C(host path, not managed).', type: str}
  sample:
    - {path: /var/lib/docker, services: [cadvisor], targets: [/var/lib/docker], reason: "host path, not managed"}
missing_files:
  description: Bind-mounted files that are missing and have no example (Docker would create a directory).
  returned: always
  type: list
  elements: dict
totals:
  description: Sum of RV(paths[].checked) and RV(paths[].fixed).
  returned: always
  type: dict
  sample: {checked: 1000001, fixed: 5}
project_context:
  description:
    - Whether this call reused the run's project context (V(hit)) or ran C(docker compose config) (V(miss)),
      and a short form of the context key. Counting V(miss) over a run counts the computations.
  returned: always
  type: dict
  sample: {cache: hit, key: 3f2a9c01b7de}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the documentation, as Ansible expects
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_options import (  # noqa: E402
    context_result,
    project_argspec,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **project_argspec(),
            allowed_roots=dict(type="list", elements="path"),
            exclude=dict(type="list", elements="path"),
            overrides=dict(type="dict", default={}),
            image_users=dict(type="dict", default={}),
            mode=dict(type="str", default="0750"),
            shared_mode=dict(type="str", default="2770"),
            config_mode=dict(type="str", default="0640"),
            shared_group=dict(type="raw"),
            recurse=dict(type="bool", default=False),
            copy_examples=dict(type="bool", default=True),
            missing_image=dict(type="str", choices=["warn", "fail"], default="warn"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        from ansible_collections.hyhome.bootstrap.plugins.module_utils import data_dirs as core
        from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_options import load_checked
        project = load_checked(p, module.check_mode)
        options = {k: p[k] for k in ("allowed_roots", "exclude", "overrides", "image_users", "mode", "shared_mode",
                                     "config_mode", "shared_group", "missing_image", "copy_examples")}
        plan = core.plan(project, options, core.DockerImages(docker_cli=p["docker_cli"]))
        result = core.apply(plan, check=module.check_mode, recurse=p["recurse"])
    except HyHomeError as e:
        module.fail_json(msg=e.msg)
    except OSError as e:
        module.fail_json(msg=f"{e.filename or ''}: {e.strerror}")
    diff = result.pop("diff")
    for w in result.pop("notes"):
        module.warn(w)
    for s in result["shared"]:
        module.warn(f"{s['path']} is written by services with different users {s['users']}: owner {s['owner']}, "
                    f"group {s['group']}. {s.get('hint', '')}".strip())
    for m in result["missing_files"]:
        module.warn(f"{m['path']} (mounted by {', '.join(m['services'])}) is missing: {m['hint']}")
    for e in result["paths"]:
        if e.get("skipped_hardlinks"):
            more = e["skipped_hardlinks"] - len(e["hardlinks"])
            module.warn(f"{e['path']}: {e['skipped_hardlinks']} hard-linked file(s) left unchanged (another name "
                        "of the same file may be outside the project; replace them with copies to manage them): "
                        + ", ".join(e["hardlinks"]) + (f" and {more} more" if more > 0 else ""))
    if module._diff and result["changed"]:
        result["diff"] = diff
    result["project_context"] = context_result(project)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
