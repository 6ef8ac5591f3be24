#!/usr/bin/python
# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: backup_archive
short_description: Back up a Compose project (secrets, certificates, CA, .env, data, database dumps) and restore it
description:
  - V(create) writes one archive (gzip'd tar) into O(backup_dir) holding the project's secrets tree with its
    C(.history) (and the certificates under it), C(.env), the local CA directory, every data directory
    (bind mounts C(hyhome.bootstrap.data_dirs) classifies as data) and a logical dump of each service in
    O(dumps), plus C(manifest.json) with the SHA-256, size, mode and owner of every member.
  - The archive holds secret values. It is created C(0600) in a C(0700) directory, and its name carries only
    the project name and a UTC time stamp (C(<project>-YYYYmmddTHHMMSSZ.tar.gz)). It is written to a temp file
    and linked into place, never over an existing archive.
  - Consistency. A database in O(dumps) is saved with C(pg_dumpall) run inside its running container (one
    snapshot per database); its data directory is then not copied. Every other data directory is copied with
    the services that write it stopped (stop, copy, start; see O(stop_writers)); services that were not running are
    left stopped.
  - V(verify) reads the archive end to end and refuses a damaged, truncated or tampered one (checksums, sizes,
    member list, structure), or a hostile one (absolute names, C(..), links leaving their tree, hard links,
    device files, setuid). Nothing is written.
  - V(restore) verifies first; a refused archive, or a missing one, fails before anything is touched. Each
    saved tree goes back to the place this project has for it (never a path named by the archive), namely the secrets
    dir, the env file, O(ca_dir), and each data directory of a service mounting the same target. Every tree is
    extracted into a staging directory beside its destination, re-checked, given the manifest's modes and
    owners, then renamed into place; an existing destination is kept as C(<dest>.pre-restore-<stamp>).
    Services writing a restored data directory are stopped during the swap and started again.
  - V(load_dumps) loads the archive's database dumps into the running services (after day0 started them on
    the restored secrets). The services depending on the database are stopped meanwhile and started again.
version_added: 0.4.0
author: Hy-Home Bootstrap maintainers (@hyhome)
extends_documentation_fragment:
  - hyhome.bootstrap.project
options:
  operation:
    description: What to do.
    type: str
    choices: [create, verify, restore, load_dumps]
    default: create
  backup_dir:
    description: Directory of the archives (V(create)); created C(0700), an existing one is tightened to C(0700).
    type: path
  archive:
    description: The archive to verify, restore or load (V(verify), V(restore), V(load_dumps)).
    type: path
  secrets_dir:
    description: The secrets tree. Default C(<project_dir>/secrets).
    type: path
  ca_dir:
    description:
      - The local CA directory. Default like C(hyhome.bootstrap.local_ca), C($HYHOME_CAROOT), else
        C(/var/lib/hyhome/ca) for root, else C(~/.local/share/hyhome/ca).
      - It must be on the host the module runs on (the controller, for a local run).
    type: path
  include_ca:
    description: Save (and restore) the CA directory. A missing CA directory is not saved, with a warning.
    type: bool
    default: true
  dumps:
    description:
      - Databases saved as logical dumps, instead of copying their data directory.
      - 'The embedded stack dumps its PostgreSQL: C([{service: postgres}]).'
    type: list
    elements: dict
    default: []
    suboptions:
      service:
        description: The database service (must be running for V(create) and V(load_dumps)).
        type: str
        required: true
      method:
        description: How it is dumped.
        type: str
        choices: [pg_dumpall]
        default: pg_dumpall
      user:
        description: The database superuser the dump runs as (peer authentication inside the container).
        type: str
        default: postgres
  extra_files:
    description:
      - Project files (relative to O(project_dir)) to save too, for files the compose files read that are
        state rather than configuration, such as the release pin C(app/release.env) C(rollout.yml) writes.
      - A restore puts them back at the same relative path; give the same list to V(restore). A missing file is
        not saved, with a warning.
    type: list
    elements: str
    default: []
  stop_writers:
    description: Stop the running services that write a data directory while it is copied or replaced.
    type: bool
    default: true
  timeout:
    description: Seconds allowed for each C(docker compose) call (a dump, a load, a stop, a start).
    type: int
    default: 600
attributes:
  check_mode:
    support: full
    description: V(create) says what it would save; V(verify) runs as usual; V(restore) verifies and plans;
      nothing is written or stopped.
  diff_mode:
    support: none
    description: An archive has no useful diff; the result lists roots, dumps and replaced paths (never values).
  idempotent:
    support: none
    description: V(create) writes a new archive each run; V(restore) and V(load_dumps) replace what is there.
notes:
  - The manifest detects damage and tampering of members, not a forged archive rebuilt with a matching manifest;
    keep archives where only root can write, and compare RV(sha256) with the value V(create) printed.
"""

EXAMPLES = r"""
- name: Back up the embedded stack
  hyhome.bootstrap.backup_archive:
    project_dir: /srv/hyhome/stack
    backup_dir: /var/backups/hyhome
    dumps: [{service: postgres}]

- name: Check an archive
  hyhome.bootstrap.backup_archive:
    operation: verify
    project_dir: /srv/hyhome/stack
    archive: /var/backups/hyhome/hyhome-20260101T000000Z.tar.gz
"""

RETURN = r"""
archive:
  description: Path of the archive written (V(create)) or read.
  returned: always
  type: str
  sample: /var/backups/hyhome/hyhome-20260101T000000Z.tar.gz
sha256:
  description: SHA-256 of the archive file.
  returned: when an archive was written or verified
  type: str
bytes:
  description: Bytes of file content in the archive (before compression).
  returned: when an archive was written or verified
  type: int
roots:
  description: Names of the saved trees (secrets, env, ca, data-<service>-<target>).
  returned: always
  type: list
  elements: str
dumps:
  description: Database dumps saved, verified or loaded (members of the archive).
  returned: always
  type: list
  elements: str
not_saved:
  description: Paths not saved, with the reason (missing CA, symlink leaving its tree, socket); each is a warning too.
  returned: when O(operation=create)
  type: list
  elements: str
restored:
  description: Per tree, where it went and where the previous content was kept.
  returned: when O(operation=restore)
  type: list
  elements: dict
stopped:
  description: Services stopped (and started again) around a copy, a swap or a load.
  returned: always
  type: list
  elements: str
seconds:
  description: How long the operation took.
  returned: always
  type: float
project_context:
  description:
    - Whether this call reused the run's project context (V(hit)) or ran C(docker compose config) (V(miss)),
      and a short form of the context key (V(off) when a restore read the archive's C(.env) before it is in place).
  returned: when the project was read (not for V(verify))
  type: dict
  sample: {cache: hit, key: 3f2a9c01b7de}
"""

import datetime as dt  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the documentation, as Ansible expects
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import os_error_text  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_options import (  # noqa: E402
    context_result,
    project_argspec,
)


def _project(p, check_mode, env_file=None):
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_options import load_checked

    return load_checked(p, check_mode, env_file)   # env_file: the archive's .env, before it is in place


def _paths(p):
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.tls import default_ca_dir

    project_dir = os.path.abspath(p["project_dir"])
    return {
        "secrets": os.path.abspath(p["secrets_dir"] or os.path.join(project_dir, "secrets")),
        "env": os.path.abspath(p["env_file"] or os.path.join(project_dir, ".env")),
        "ca": os.path.abspath(p["ca_dir"] or default_ca_dir()),
    }


def _dumps(p, project):
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.backup_plan import Dump

    return [Dump.from_spec(spec, project.services) for spec in p["dumps"]]


def _compose(p, project):
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.backup_plan import Compose

    return Compose(project, p["files"], p["env_file"], p["profiles"], p["docker_cli"])


def create(module, p):
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import backup, backup_plan

    if not p["backup_dir"]:
        raise HyHomeError("backup_dir is required to create an archive")
    project = _project(p, module.check_mode)
    paths = _paths(p)
    dumps = _dumps(p, project)
    data, writers = backup_plan.data_roots(project, [d.service for d in dumps])
    roots = [backup.Root("secrets", paths["secrets"], "secrets"),
             backup.Root("env", paths["env"], "env", kind="file")]
    if p["include_ca"]:
        roots.append(backup.Root("ca", paths["ca"], "ca", optional=True))
    roots += backup_plan.extra_roots(project.working_dir, p["extra_files"])
    roots += data
    result = {"roots": [r.name for r in roots], "dumps": [d.member for d in dumps], "stopped": [],
              "project_context": context_result(project)}
    if module.check_mode:
        result["not_saved"] = [f"{r.path}: not saved (missing)" for r in roots if not os.path.lexists(r.path)]
        return dict(changed=True, archive=os.path.join(p["backup_dir"], backup.archive_name(project.name, _now())),
                    **result)
    compose = _compose(p, project)
    running = compose.running() if (dumps or writers) else set()
    missing = [d.service for d in dumps if d.service not in running]
    if missing:
        raise HyHomeError(f"database service(s) {', '.join(missing)} not running: a consistent dump needs them up "
                          "(run day0 first)")
    sql = {d.member: compose.run(d.dump_args(), timeout=p["timeout"]) for d in dumps}
    to_stop = sorted({s for names in writers.values() for s in names} & running) if p["stop_writers"] else []
    extra = {"dumps": [d.describe() for d in dumps], "writers": writers}
    compose.stop(to_stop, timeout=p["timeout"])
    try:
        path, built = backup.create(p["backup_dir"], project.name, roots, sql, _now(), extra)
    finally:
        compose.start(to_stop, timeout=p["timeout"])
    verified = backup.verify(path)          # what was written reads back whole
    result.update(roots=[r["name"] for r in built.manifest["roots"]], not_saved=built.skipped, stopped=to_stop)
    return dict(changed=True, archive=path, sha256=verified.sha256, bytes=built.bytes, **result)


def _restore_targets(p, verified, archive):
    """Root name -> destination on this host, from this project (never from the archive)."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import backup, backup_plan

    paths = _paths(p)
    targets = {"secrets": paths["secrets"], "env": paths["env"]}
    if p["include_ca"]:
        targets["ca"] = paths["ca"]
    roots = {r["name"] for r in verified.manifest["roots"]}
    env_member = "files/env"
    with tempfile.TemporaryDirectory(prefix="hyhome-restore-") as tmp:
        env_file = None
        if "env" in roots and not os.path.exists(paths["env"]):
            env_file = os.path.join(tmp, "env")
            fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(backup.read_member(archive, verified, env_member))
        project = _project(p, True, env_file=env_file)
    dumped = [d.get("service") for d in verified.manifest.get("dumps") or [] if isinstance(d, dict)]
    roots_now, writers = backup_plan.data_roots(project, dumped)
    targets.update({r.name: r.path for r in roots_now})
    targets.update({r.name: r.path for r in backup_plan.extra_roots(project.working_dir, p["extra_files"])})
    return project, targets, writers


def restore(module, p):
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import backup

    archive = _archive(p)
    verified = backup.verify(archive)
    if not p["include_ca"]:
        verified.manifest["roots"] = [r for r in verified.manifest["roots"] if r["name"] != "ca"]
        verified.manifest["entries"] = [e for e in verified.manifest["entries"] if backup.root_of(e["path"]) != "ca"]
    project, targets, writers = _restore_targets(p, verified, archive)
    plan = backup.plan_restore(verified, targets)
    summary = verified.summary()
    summary["project_context"] = context_result(project)
    if module.check_mode:
        records = backup.restore(archive, verified, plan, _now(), check=True)
        return dict(changed=True, restored=records, stopped=[], **summary)
    compose = _compose(p, project)
    restored_data = {t.name for t in plan}
    to_stop = []
    if p["stop_writers"]:
        running = compose.running()
        to_stop = sorted({s for name, names in writers.items() if name in restored_data for s in names} & running)
    compose.stop(to_stop, timeout=p["timeout"])
    try:
        records = backup.restore(archive, verified, plan, _now())
    finally:
        compose.start(to_stop, timeout=p["timeout"])
    return dict(changed=True, restored=records, stopped=to_stop, **summary)


def load_dumps(module, p):
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import backup, backup_plan

    archive = _archive(p)
    verified = backup.verify(archive)
    summary = verified.summary()
    specs = verified.manifest.get("dumps") or []
    if not isinstance(specs, list):
        raise HyHomeError(f"archive {archive}: the manifest's dumps are not a list")
    if module.check_mode:       # a checked restore on a bare host has no .env yet: Compose would refuse
        return dict(changed=bool(specs), stopped=[], **summary)
    project = _project(p, module.check_mode)
    dumps = [backup_plan.Dump.from_spec(s, project.services) for s in specs]
    summary["project_context"] = context_result(project)
    if not dumps:
        return dict(changed=False, stopped=[], **summary)
    compose = _compose(p, project)
    running = compose.running()
    missing = [d.service for d in dumps if d.service not in running]
    if missing:
        raise HyHomeError(f"database service(s) {', '.join(missing)} not running: run day0 first, then load the dumps")
    stopped: list[str] = []
    for d in dumps:
        sql = backup_plan.prepare_pg_load(backup.read_member(archive, verified, d.member), d.user)
        users = [s for s in backup_plan.consumers(project, d.service) if s in running]
        compose.stop(users, timeout=p["timeout"])
        stopped += users
        try:
            compose.run(d.load_args(), timeout=p["timeout"], input=sql)
        finally:
            compose.start(users, timeout=p["timeout"])
    return dict(changed=True, stopped=sorted(set(stopped)), **summary)


def verify_only(module, p):
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import backup

    verified = backup.verify(_archive(p))
    return dict(changed=False, stopped=[], **verified.summary())


def _archive(p) -> str:
    if not p["archive"]:
        raise HyHomeError("archive is required: -e archive=/path/to/<project>-<stamp>.tar.gz")
    return os.path.abspath(p["archive"])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


OPERATIONS = {"create": create, "verify": verify_only, "restore": restore, "load_dumps": load_dumps}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **project_argspec(),
            operation=dict(type="str", choices=list(OPERATIONS), default="create"),
            backup_dir=dict(type="path"),
            archive=dict(type="path"),
            secrets_dir=dict(type="path"),
            ca_dir=dict(type="path"),
            include_ca=dict(type="bool", default=True),
            dumps=dict(type="list", elements="dict", default=[], options=dict(
                service=dict(type="str", required=True),
                method=dict(type="str", choices=["pg_dumpall"], default="pg_dumpall"),
                user=dict(type="str", default="postgres"),
            )),
            extra_files=dict(type="list", elements="str", default=[]),
            stop_writers=dict(type="bool", default=True),
            timeout=dict(type="int", default=600),
        ),
        supports_check_mode=True,
    )
    p = module.params
    started = time.monotonic()
    try:
        if p["timeout"] <= 0:
            raise HyHomeError("timeout must be a positive number of seconds")
        result = OPERATIONS[p["operation"]](module, p)
    except HyHomeError as exc:
        module.fail_json(msg=exc.msg)
    except OSError as exc:
        module.fail_json(msg=f"{p['operation']} failed: {os_error_text(exc)}")
    for line in result.get("not_saved", []):
        module.warn(line)
    result.setdefault("archive", p["archive"] or "")
    result["seconds"] = round(time.monotonic() - started, 2)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
