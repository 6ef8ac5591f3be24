"""Who must be able to read what in a prepared Compose project, as JSON for tests/e2e/realistic.sh.

    python tests/e2e/realistic_access.py PROJECT_DIR          # the JSON below
    python tests/e2e/realistic_access.py --plan ACCESS.json   # the readability plan, one line each

Prints ``{"files": [...], "data_dirs": [...], "host_paths": [...]}``:

- ``files``: every secret file a service declares and every file under ``secrets/certs`` a service
  bind-mounts, each with its readers' resolved identities ``{service, uid, gid, groups}``;
- ``data_dirs``: every writable data bind (``mounts.classify == "data"``) with its services;
- ``host_paths``: every read-only bind of the host (``mounts.classify == "host"``).

Identities come from the same resolver day0's steps use (plugins/module_utils/identity.py), with
its defaults (no overrides): this is the answer the files' owners and modes must satisfy.
"""

from __future__ import annotations

import json
import os
import sys

from ansible_collections.hyhome.bootstrap.plugins.module_utils import mounts
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import load_project
from ansible_collections.hyhome.bootstrap.plugins.module_utils.identity import IdentityResolver


def access(project_dir: str) -> dict:
    project = load_project(project_dir, profiles=["*"])
    if project.config_error:
        raise SystemExit(f"docker compose config failed: {project.config_error}")
    resolver = IdentityResolver()

    def who(svc) -> dict:
        ident = resolver.service(svc)
        return {"service": svc.name, "uid": ident.uid, "gid": ident.gid, "groups": list(ident.groups)}

    files: dict[str, dict] = {}
    for name, secret in sorted(project.secrets.items()):
        if secret.file and not secret.external:
            files[secret.file] = {"name": name, "path": secret.file, "kind": "secret", "readers": []}
    certs = os.path.join(project.working_dir, "secrets", "certs") + os.sep
    data: dict[str, set] = {}
    host: dict[str, set] = {}
    for svc in sorted(project.services.values(), key=lambda s: s.name):
        for ref in svc.secrets:
            secret = project.secrets.get(ref.source)
            if secret is not None and secret.file in files:
                files[secret.file]["readers"].append(who(svc))
        for m in svc.mounts:
            if not m.host_path:
                continue
            if m.host_path.startswith(certs):
                entry = files.setdefault(m.host_path, {"name": os.path.basename(m.host_path), "path": m.host_path,
                                                       "kind": "tls", "readers": []})
                entry["readers"].append(who(svc))
                continue
            cls = mounts.classify(project, svc, m)
            if cls == "data":
                data.setdefault(m.host_path, set()).add(svc.name)
            elif cls == "host":
                host.setdefault(m.host_path, set()).add(svc.name)
    return {
        "files": list(files.values()),
        "data_dirs": [{"path": p, "services": sorted(s)} for p, s in sorted(data.items())],
        "host_paths": [{"path": p, "services": sorted(s)} for p, s in sorted(host.items())],
        "warnings": resolver.warnings,
    }


def plan(data: dict) -> list[str]:
    """The readability plan: ``READ uid:gid groups|- path...`` per reader identity (the files it must
    read), ``ANY kind path`` per file somebody reads (kind ``secret``, ``key`` or ``cert``: an outsider
    must be refused all but certificates), ``NOTROOT kind path`` per file neither uid 0 nor gid 0
    reads (root without capabilities must be refused it, certificates aside)."""
    readers: dict[tuple, set] = {}
    out = []
    for f in data["files"]:
        for r in f["readers"]:
            key = (r["uid"], r["gid"], ",".join(str(g) for g in r["groups"]) or "-")
            readers.setdefault(key, set()).add(f["path"])
    for (uid, gid, groups), paths in sorted(readers.items()):
        out.append(f"READ {uid}:{gid} {groups} " + " ".join(sorted(paths)))
    for f in data["files"]:
        if not f["readers"]:
            continue
        kind = "secret" if f["kind"] == "secret" else ("key" if f["path"].endswith("key.pem") else "cert")
        out.append(f"ANY {kind} {f['path']}")
        ids = {r["uid"] for r in f["readers"]} | {g for r in f["readers"] for g in (r["gid"], *r["groups"])}
        if 0 not in ids:
            out.append(f"NOTROOT {kind} {f['path']}")
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--plan":
        with open(sys.argv[2], encoding="utf-8") as fh:
            print("\n".join(plan(json.load(fh))))
    elif len(sys.argv) == 2:
        json.dump(access(sys.argv[1]), sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
    else:
        raise SystemExit(__doc__)
