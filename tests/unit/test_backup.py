"""Tests for plugins/module_utils/backup.py and backup_plan.py: archive build, verify, restore, hostile archives."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import pathlib
import socket
import stat
import subprocess
import tarfile

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import backup, backup_plan
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import Mount, Project, Service
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
SECRET = b"s3cr3t-value-never-in-a-name"


def write(path, data: bytes, mode=0o600):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def tree(root) -> dict:
    """{relative path: (type, mode, content or link target)} of a tree, symlinks not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", None, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), None)
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), pathlib.Path(p).read_bytes())
    return out


@pytest.fixture
def project(tmp_path):
    """A project with secrets (+ .history, certs, an inner symlink), .env, a CA dir and a data dir."""
    src = tmp_path / "src"
    secrets = src / "secrets"
    write(str(secrets / "postgres" / "postgres_password"), SECRET, 0o400)
    write(str(secrets / ".history" / "postgres_password" / "20260101T000000Z"), b"old-value", 0o400)
    write(str(secrets / "certs" / "key.pem"), b"KEY", 0o400)
    write(str(secrets / "certs" / "cert.pem"), b"CERT", 0o644)
    os.symlink("cert.pem", secrets / "certs" / "current.pem")
    os.chmod(secrets, 0o700)
    os.chmod(secrets / "postgres", 0o500)
    write(str(src / ".env"), b"APP_DB_NAME=app\n", 0o644)
    write(str(tmp_path / "ca" / "rootCA-key.pem"), b"CAKEY", 0o400)
    write(str(tmp_path / "ca" / "rootCA.pem"), b"CA", 0o644)
    write(str(src / "data" / "prometheus" / "wal" / "0001"), b"\0" * 70000 + b"x", 0o644)
    roots = [backup.Root("secrets", str(secrets), "secrets"),
             backup.Root("env", str(src / ".env"), "env", kind="file"),
             backup.Root("ca", str(tmp_path / "ca"), "ca", optional=True),
             backup.Root("data-prometheus-prometheus", str(src / "data" / "prometheus"), "data",
                         service="prometheus", target="/prometheus", optional=True)]
    return tmp_path, roots


def make(tmp_path, roots, dumps=None):
    return backup.create(str(tmp_path / "backups"), "hyhome", roots,
                         dumps or {"dumps/postgres.sql": b"--\n-- PostgreSQL database cluster dump\n--\n"}, NOW)


def targets_for(base, roots):
    return {r.name: str(base / r.name) for r in roots}


# --------------------------------------------------------------------------------------------
# Round trip


def test_archive_is_private_named_without_values_and_verifies(project):
    tmp_path, roots = project
    path, built = make(tmp_path, roots)
    assert os.path.basename(path) == "hyhome-20260102T030405Z.tar.gz"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "backups").st_mode) == 0o700
    assert os.listdir(tmp_path / "backups") == [os.path.basename(path)]      # no temp file left
    v = backup.verify(path)
    assert v.sha256 == hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    entries = v.entries
    pw = entries["files/secrets/postgres/postgres_password"]
    assert pw["sha256"] == hashlib.sha256(SECRET).hexdigest() and pw["mode"] == 0o400 and pw["size"] == len(SECRET)
    assert pw["uid"] == os.getuid()
    assert "files/secrets/.history/postgres_password/20260101T000000Z" in entries
    assert entries["files/secrets/certs/current.pem"] == {**entries["files/secrets/certs/current.pem"],
                                                          "type": "symlink", "target": "cert.pem"}
    assert v.summary()["dumps"] == ["dumps/postgres.sql"]
    assert sorted(v.summary()["roots"]) == ["ca", "data-prometheus-prometheus", "env", "secrets"]
    assert built.bytes == v.bytes


def test_second_archive_in_the_same_second_never_replaces_the_first(project):
    tmp_path, roots = project
    first, _ = make(tmp_path, roots)
    second, _ = make(tmp_path, roots)
    assert first != second and second.endswith("-2.tar.gz")
    assert backup.verify(first) and backup.verify(second)


def test_restore_onto_bare_host_gives_back_contents_modes_and_links(project):
    tmp_path, roots = project
    path, _ = make(tmp_path, roots)
    v = backup.verify(path)
    dest = tmp_path / "restored"
    plan = backup.plan_restore(v, targets_for(dest, roots))
    records = backup.restore(path, v, plan, NOW, can_chown=os.geteuid() == 0)
    assert all(r["replaced"] is False for r in records)
    for r in roots:
        if r.kind == "file":
            assert pathlib.Path(dest / r.name).read_bytes() == pathlib.Path(r.path).read_bytes()
            assert stat.S_IMODE(os.stat(dest / r.name).st_mode) == 0o644
        else:
            assert tree(dest / r.name) == tree(r.path), r.name
            assert stat.S_IMODE(os.stat(dest / r.name).st_mode) == stat.S_IMODE(os.stat(r.path).st_mode)
    assert sorted(os.listdir(dest)) == sorted(r.name for r in roots)        # no staging left


def test_restore_keeps_what_it_replaces(project):
    tmp_path, roots = project
    path, _ = make(tmp_path, roots)
    v = backup.verify(path)
    dest = tmp_path / "restored"
    write(str(dest / "secrets" / "postgres" / "postgres_password"), b"other", 0o400)
    records = backup.restore(path, v, backup.plan_restore(v, targets_for(dest, roots)), NOW, can_chown=False)
    kept = {r["root"]: r["kept_as"] for r in records}
    assert pathlib.Path(dest / "secrets" / "postgres" / "postgres_password").read_bytes() == SECRET
    assert kept["secrets"].endswith(".pre-restore-20260102T030405Z")
    assert pathlib.Path(os.path.join(kept["secrets"], "postgres", "postgres_password")).read_bytes() == b"other"


def test_a_root_left_out_is_not_restored(project):
    """What the module does for include_ca=false: the CA root is dropped from the plan, its members skipped."""
    tmp_path, roots = project
    path, _ = make(tmp_path, roots)
    v = backup.verify(path)
    v.manifest["roots"] = [r for r in v.manifest["roots"] if r["name"] != "ca"]
    v.manifest["entries"] = [e for e in v.manifest["entries"] if backup.root_of(e["path"]) != "ca"]
    dest = tmp_path / "restored"
    targets = targets_for(dest, roots)
    del targets["ca"]
    backup.restore(path, v, backup.plan_restore(v, targets), NOW, can_chown=False)
    assert sorted(os.listdir(dest)) == ["data-prometheus-prometheus", "env", "secrets"]


def test_check_mode_restore_plans_and_writes_nothing(project):
    tmp_path, roots = project
    path, _ = make(tmp_path, roots)
    v = backup.verify(path)
    dest = tmp_path / "restored"
    records = backup.restore(path, v, backup.plan_restore(v, targets_for(dest, roots)), NOW, check=True)
    assert len(records) == len(roots) and not dest.exists()


def test_a_root_the_project_has_no_place_for_is_refused(project):
    tmp_path, roots = project
    path, _ = make(tmp_path, roots)
    v = backup.verify(path)
    targets = targets_for(tmp_path / "restored", roots)
    del targets["data-prometheus-prometheus"]
    with pytest.raises(HyHomeError, match="no place for"):
        backup.plan_restore(v, targets)


def test_a_symlinked_destination_is_refused(project):
    tmp_path, roots = project
    path, _ = make(tmp_path, roots)
    v = backup.verify(path)
    dest = tmp_path / "restored"
    dest.mkdir()
    os.symlink("/etc", dest / "secrets")
    with pytest.raises(HyHomeError, match="symlink"):
        backup.plan_restore(v, targets_for(dest, roots))


def test_backup_skips_what_it_must_not_save(project):
    tmp_path, roots = project
    secrets = roots[0].path
    os.symlink("/etc/shadow", os.path.join(secrets, "escape"))
    os.symlink("../../outside", os.path.join(secrets, "certs", "up"))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(os.path.join(secrets, "s.sock"))
    write(os.path.join(secrets, ".x.tmp.hyhome-0123456789ab"), b"half-written")
    try:
        path, built = make(tmp_path, roots)
    finally:
        sock.close()
    names = backup.verify(path).entries
    assert not any(n.endswith(("escape", "/up", "s.sock")) or ".tmp.hyhome-" in n for n in names)
    assert len([s for s in built.skipped if "not saved" in s]) == 3
    assert all(SECRET.decode() not in s for s in built.skipped)


def test_missing_required_root_fails_and_writes_no_archive(project):
    tmp_path, roots = project
    os.unlink(roots[1].path)
    with pytest.raises(HyHomeError, match=r"env .* does not exist"):
        make(tmp_path, roots)
    assert os.listdir(tmp_path / "backups") == []


def test_missing_optional_root_is_skipped(project):
    tmp_path, roots = project
    import shutil

    shutil.rmtree(roots[2].path)
    path, built = make(tmp_path, roots)
    assert "ca" not in backup.verify(path).summary()["roots"]
    assert any("missing" in s for s in built.skipped)


def test_backup_dir_is_tightened_and_a_symlink_refused(tmp_path):
    d = tmp_path / "b"
    d.mkdir(mode=0o755)
    assert backup.ensure_private_dir(str(d), check=True) == [f"mode of {d} set to 0700"]
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o755      # check mode changed nothing
    backup.ensure_private_dir(str(d))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    os.symlink(d, tmp_path / "link")
    with pytest.raises(HyHomeError, match="not a directory"):
        backup.ensure_private_dir(str(tmp_path / "link"))


def test_read_member_rechecks_the_checksum(project):
    tmp_path, roots = project
    path, _ = make(tmp_path, roots)
    v = backup.verify(path)
    assert backup.read_member(path, v, "files/env") == b"APP_DB_NAME=app\n"
    v.manifest["entries"] = [dict(e, sha256="0" * 64) if e["path"] == "files/env" else e
                             for e in v.manifest["entries"]]
    with pytest.raises(HyHomeError, match="changed since it was verified"):
        backup.read_member(path, v, "files/env")


# --------------------------------------------------------------------------------------------
# Damaged, truncated, tampered: refused, nothing touched


def refused_untouched(tmp_path, path, roots, match):
    dest = tmp_path / "restored"
    dest.mkdir(exist_ok=True)
    write(str(dest / "secrets" / "keep"), b"current", 0o600)
    before = tree(dest)
    with pytest.raises(backup.ArchiveRefused, match=match) as exc:
        v = backup.verify(path)
        backup.restore(path, v, backup.plan_restore(v, targets_for(dest, roots)), NOW, can_chown=False)
    assert "nothing was restored" in exc.value.msg
    assert tree(dest) == before


def test_truncated_archive_is_refused(project):
    tmp_path, roots = project
    path, _ = make(tmp_path, roots)
    data = pathlib.Path(path).read_bytes()
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])
    refused_untouched(tmp_path, path, roots, "damaged or truncated")


def test_flipped_byte_is_refused(project):
    tmp_path, roots = project
    path, _ = make(tmp_path, roots)
    data = bytearray(pathlib.Path(path).read_bytes())
    data[len(data) // 3] ^= 0xFF
    with open(path, "wb") as fh:
        fh.write(bytes(data))
    refused_untouched(tmp_path, path, roots, "refusing archive")


def test_empty_and_non_archive_files_are_refused(tmp_path, project):
    _, roots = project
    for content in (b"", b"not a tar at all", b"\x1f\x8b\x08\x00garbage"):
        p = tmp_path / "bad.tar.gz"
        p.write_bytes(content)
        refused_untouched(tmp_path, str(p), roots, "damaged or truncated")


def test_missing_archive_and_directory_give_clear_errors(tmp_path):
    with pytest.raises(HyHomeError, match=r"archive .*nope.tar.gz does not exist; nothing was restored"):
        backup.verify(str(tmp_path / "nope.tar.gz"))
    with pytest.raises(backup.ArchiveRefused, match="not a regular file"):
        backup.verify(str(tmp_path))


def rebuild(src: str, dst: str, edit=None, add=(), manifest_edit=None, drop=()):
    """Copy archive ``src`` to ``dst`` member by member: ``edit(name, data)`` may change content,
    ``add`` appends (TarInfo, bytes) members, ``manifest_edit(doc)`` changes the manifest."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz", format=tarfile.PAX_FORMAT) as tout:
        for ti in tin:
            if ti.name in drop:
                continue
            data = tin.extractfile(ti).read() if ti.isreg() else None
            if ti.name == backup.MANIFEST:
                doc = json.loads(data)
                if manifest_edit:
                    manifest_edit(doc)
                extra = list(add)
                for t, d in extra:
                    tout.addfile(t, io.BytesIO(d) if d is not None else None)
                data = json.dumps(doc).encode()
            elif edit and data is not None:
                data = edit(ti.name, data)
            if data is not None:
                ti.size = len(data)
            tout.addfile(ti, io.BytesIO(data) if data is not None else None)


def test_member_changed_behind_the_manifest_is_refused(project):
    tmp_path, roots = project
    path, _ = make(tmp_path, roots)
    bad = str(tmp_path / "tampered.tar.gz")
    rebuild(path, bad, edit=lambda n, d: b"attacker" if n.endswith("postgres_password") else d)
    refused_untouched(tmp_path, bad, roots, "does not match its checksum")


def test_member_removed_or_added_is_refused(project):
    tmp_path, roots = project
    path, _ = make(tmp_path, roots)
    gone = str(tmp_path / "gone.tar.gz")
    rebuild(path, gone, drop=("files/secrets/certs/key.pem",))
    refused_untouched(tmp_path, gone, roots, "missing")
    extra = str(tmp_path / "extra.tar.gz")
    ti = tarfile.TarInfo("files/secrets/planted")
    ti.size = 1
    rebuild(path, extra, add=[(ti, b"x")])
    refused_untouched(tmp_path, extra, roots, "not in the manifest")


def test_no_manifest_or_bad_manifest_is_refused(project):
    tmp_path, roots = project
    path, _ = make(tmp_path, roots)
    no_manifest = str(tmp_path / "nomanifest.tar.gz")
    rebuild(path, no_manifest, drop=(backup.MANIFEST,))
    refused_untouched(tmp_path, no_manifest, roots, "no manifest.json")
    wrong = str(tmp_path / "wrongversion.tar.gz")
    rebuild(path, wrong, manifest_edit=lambda d: d.update(version=99))
    refused_untouched(tmp_path, wrong, roots, "version 99 is not supported")


def hostile(tmp_path, name, ti, data=b"", entry=None):
    """A hand-made archive whose manifest agrees with its members (so only the safety rules can refuse it)."""
    path = str(tmp_path / name)
    entries = [{"path": "files/secrets", "type": "dir", "mode": 0o700, "uid": 0, "gid": 0}]
    default = {"path": ti.name, "type": "file", "mode": 0o600, "uid": 0, "gid": 0, "size": len(data),
               "sha256": hashlib.sha256(data).hexdigest()}
    entries.append(entry if entry is not None else default)
    doc = {"format": backup.FORMAT, "version": backup.VERSION, "project": "hyhome",
           "roots": [{"name": "secrets", "kind": "dir", "what": "secrets"}], "entries": entries}
    top = tarfile.TarInfo("files/secrets")
    top.type, top.mode = tarfile.DIRTYPE, 0o700
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(top)
        if ti.isreg():
            ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
        raw = json.dumps(doc).encode()
        m = tarfile.TarInfo(backup.MANIFEST)
        m.size = len(raw)
        tar.addfile(m, io.BytesIO(raw))
    return path


def member(name, kind=tarfile.REGTYPE, link=""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mode = kind, link, 0o600
    return ti


HOSTILE = [
    ("absolute", member("/etc/cron.d/x"), None, "absolute name"),
    ("dotdot", member("files/secrets/../../../etc/x"), None, r"'\.\.' component"),
    ("outside-roots", member("etc/passwd"), None, "outside files/<root>/"),
    ("hardlink", member("files/secrets/h", tarfile.LNKTYPE, "/etc/shadow"), None, "hard link"),
    ("chardev", member("files/secrets/null", tarfile.CHRTYPE), None, "device file"),
    ("blockdev", member("files/secrets/sda", tarfile.BLKTYPE), None, "device file"),
    ("fifo", member("files/secrets/f", tarfile.FIFOTYPE), None, "FIFO"),
    ("symlink-absolute", member("files/secrets/l", tarfile.SYMTYPE, "/etc/shadow"), None, "absolute path"),
    ("symlink-escape", member("files/secrets/l", tarfile.SYMTYPE, "../../x"), None, "outside its root"),
    ("setuid", member("files/secrets/x"), {"mode": 0o4755}, "setuid"),
    ("bad-uid", member("files/secrets/x"), {"uid": -1}, "negative"),
    ("huge-uid", member("files/secrets/x"), {"uid": 2**40}, "too large"),
]


@pytest.mark.parametrize(("name", "ti", "entry_edit", "match"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_archives_are_refused_and_nothing_is_written(tmp_path, name, ti, entry_edit, match):
    entry = None
    if entry_edit:
        data = b""
        entry = {"path": ti.name, "type": "file", "mode": 0o600, "uid": 0, "gid": 0, "size": 0,
                 "sha256": hashlib.sha256(data).hexdigest(), **entry_edit}
    path = hostile(tmp_path, f"{name}.tar.gz", ti, entry=entry)
    dest = tmp_path / "restored"
    with pytest.raises(backup.ArchiveRefused, match=match):
        v = backup.verify(path)
        backup.restore(path, v, backup.plan_restore(v, {"secrets": str(dest / "secrets")}), NOW, can_chown=False)
    assert not dest.exists()
    assert not os.path.exists("/etc/cron.d/x")


def test_member_through_a_symlink_is_refused(tmp_path):
    """A symlink inside the tree, then a file below it: written through the link it would land outside."""
    path = str(tmp_path / "through.tar.gz")
    doc_entries = [{"path": "files/secrets", "type": "dir", "mode": 0o700, "uid": 0, "gid": 0},
                   {"path": "files/secrets/l", "type": "symlink", "target": ".", "mode": 0o777, "uid": 0, "gid": 0},
                   {"path": "files/secrets/l/x", "type": "file", "mode": 0o600, "uid": 0, "gid": 0, "size": 0,
                    "sha256": hashlib.sha256(b"").hexdigest()}]
    doc = {"format": backup.FORMAT, "version": backup.VERSION, "project": "hyhome",
           "roots": [{"name": "secrets", "kind": "dir"}], "entries": doc_entries}
    with tarfile.open(path, "w:gz") as tar:
        top = member("files/secrets", tarfile.DIRTYPE)
        tar.addfile(top)
        tar.addfile(member("files/secrets/l", tarfile.SYMTYPE, "."))
        tar.addfile(member("files/secrets/l/x"), io.BytesIO(b""))
        raw = json.dumps(doc).encode()
        m = member(backup.MANIFEST)
        m.size = len(raw)
        tar.addfile(m, io.BytesIO(raw))
    with pytest.raises(backup.ArchiveRefused, match="not a directory in the manifest"):
        backup.verify(path)


def test_duplicate_member_is_refused(tmp_path):
    path = hostile(tmp_path, "dup.tar.gz", member("files/secrets/a"))
    with tarfile.open(path, "r:gz") as tin:
        members = [(ti, tin.extractfile(ti).read() if ti.isreg() else None) for ti in tin]
    dup = str(tmp_path / "dup2.tar.gz")
    with tarfile.open(dup, "w:gz") as tout:
        for ti, data in [*members[:2], members[1], members[2]]:
            tout.addfile(ti, io.BytesIO(data) if data is not None else None)
    with pytest.raises(backup.ArchiveRefused, match="appears twice"):
        backup.verify(dup)


def test_manifest_structure_rules():
    good = {"format": backup.FORMAT, "version": 1, "project": "hyhome",
            "roots": [{"name": "env", "kind": "file"}],
            "entries": [{"path": "files/env", "type": "file", "mode": 0o644, "uid": 0, "gid": 0, "size": 1,
                         "sha256": "a" * 64}]}
    assert backup.check_manifest(json.loads(json.dumps(good)))
    cases = [
        (lambda d: d.update(format="tar"), "not a hyhome-backup"),
        (lambda d: d.update(project="../x"), "no valid project"),
        (lambda d: d["roots"].append({"name": "env", "kind": "file"}), "twice"),
        (lambda d: d["roots"][0].update(kind="socket"), "kind"),
        (lambda d: d["entries"][0].update(type="dir"), "no top-level file"),
        (lambda d: d["entries"][0].update(sha256="xyz"), "invalid sha256"),
        (lambda d: d["entries"][0].update(mode=True), "invalid mode"),
        (lambda d: d["entries"][0].update(mode=0o2644), "setuid/setgid"),
        (lambda d: d["entries"].append({**d["entries"][0], "path": "files/other"}), "no declared root"),
        (lambda d: d["entries"].append({**d["entries"][0], "path": "manifest.json"}), "lists itself"),
    ]
    for edit, match in cases:
        doc = json.loads(json.dumps(good))
        edit(doc)
        with pytest.raises(HyHomeError, match=match):
            backup.check_manifest(doc)


# --------------------------------------------------------------------------------------------
# backup_plan


def test_prepare_pg_load_drops_only_the_superuser_create_and_drop():
    sql = (b"--\n-- PostgreSQL database cluster dump\n--\n"
           b"DROP DATABASE IF EXISTS app;\nDROP ROLE IF EXISTS app;\nDROP ROLE IF EXISTS postgres;\n"
           b"CREATE ROLE app;\nALTER ROLE app WITH LOGIN PASSWORD 'SCRAM-SHA-256$x';\n"
           b"CREATE ROLE postgres;\nALTER ROLE postgres WITH SUPERUSER;\n")
    out = backup_plan.prepare_pg_load(sql, "postgres")
    assert b"DROP ROLE IF EXISTS postgres;" not in out and b"\nCREATE ROLE postgres;" not in out
    for kept in (b"DROP ROLE IF EXISTS app;", b"CREATE ROLE app;", b"ALTER ROLE postgres WITH SUPERUSER;",
                 b"DROP DATABASE IF EXISTS app;"):
        assert kept in out
    with pytest.raises(HyHomeError, match="not a pg_dumpall"):
        backup_plan.prepare_pg_load(b"DROP TABLE x;", "postgres")
    with pytest.raises(HyHomeError, match="plain role name"):
        backup_plan.prepare_pg_load(sql, "x; DROP")


def test_dump_spec_is_checked_against_the_project():
    services = {"postgres": object()}
    d = backup_plan.Dump.from_spec({"service": "postgres"}, services)
    assert d.member == "dumps/postgres.sql" and d.dump_args()[:3] == ["exec", "-T", "postgres"]
    for spec, match in [({"service": "db"}, "not a service of this project"),
                        ({"service": "../x"}, "not a valid service name"),
                        ({"service": "postgres", "method": "mysqldump"}, "not supported"),
                        ({"service": "postgres", "user": "postgres -c x"}, "plain role name"),
                        ("postgres", "must be a mapping")]:
        with pytest.raises(HyHomeError, match=match):
            backup_plan.Dump.from_spec(spec, services)


def test_extra_files_stay_inside_the_project(tmp_path):
    (tmp_path / "app").mkdir()
    roots = backup_plan.extra_roots(str(tmp_path), ["app/release.env"])
    assert [(r.name, r.path, r.kind, r.optional) for r in roots] == [
        ("file-app_release_env", str(tmp_path / "app" / "release.env"), "file", True)]
    os.symlink("/etc", tmp_path / "link")
    for bad, match in [("/etc/passwd", "relative"), ("../x", "without '..'"), ("link/passwd", "symlink"),
                       ("", "relative")]:
        with pytest.raises(HyHomeError, match=match):
            backup_plan.extra_roots(str(tmp_path), [bad])
    with pytest.raises(HyHomeError, match="same name"):
        backup_plan.extra_roots(str(tmp_path), ["a.env", "a-env"])


def fake_project(tmp_path):
    def svc(name, mounts, depends=None, healthcheck=None):
        return Service(name=name, image=f"x/{name}", build=None, user="1000", mounts=mounts,
                       depends_on=depends or {}, healthcheck=healthcheck)

    root = str(tmp_path)
    pg = svc("postgres", [Mount("bind", "/var/lib/postgresql/data", False, f"{root}/data/postgres")])
    prom = svc("prometheus", [Mount("bind", "/prometheus", False, f"{root}/data/prometheus"),
                              Mount("bind", "/etc/prometheus/prometheus.yml", True, f"{root}/prometheus.yml")])
    reader = svc("grafana", [Mount("bind", "/view", True, f"{root}/data/prometheus")])
    api = svc("api", [], depends={"postgres": {"condition": "service_healthy"},
                                  "init": {"condition": "service_completed_successfully"}})
    init = svc("init", [], depends={"postgres": {}}, healthcheck={"disable": True})
    services = {s.name: s for s in (pg, prom, reader, api, init)}
    return Project(name="hyhome", working_dir=root, files=[f"{root}/compose.yaml"], services=services)


def test_data_roots_leave_out_dumped_databases_and_config(tmp_path):
    project = fake_project(tmp_path)
    roots, writers = backup_plan.data_roots(project, ["postgres"])
    assert [(r.name, r.path) for r in roots] == [("data-prometheus-prometheus", f"{tmp_path}/data/prometheus")]
    assert writers == {"data-prometheus-prometheus": ["prometheus"]}
    all_roots, _ = backup_plan.data_roots(project)
    assert {r.service for r in all_roots} == {"postgres", "prometheus"}
    assert backup_plan.consumers(project, "postgres") == ["api"]


def test_compose_errors_are_one_line_and_never_echo_the_input(tmp_path):
    project = fake_project(tmp_path)
    calls = []

    def run(argv, **kw):
        calls.append((argv, kw))
        return subprocess.CompletedProcess(argv, 1, b"", b"line one\nERROR: relation exists\n")

    compose = backup_plan.Compose(project, run=run)
    with pytest.raises(HyHomeError) as exc:
        compose.run(["exec", "-T", "postgres", "psql"], timeout=5, input=SECRET)
    assert "exit 1" in exc.value.msg and "relation exists" in exc.value.msg and SECRET.decode() not in exc.value.msg
    assert calls[0][0][-4:] == ["exec", "-T", "postgres", "psql"] and "-p" in calls[0][0]
    assert calls[0][1]["input"] == SECRET and calls[0][1]["timeout"] == 5


# --------------------------------------------------------------------------------------------
# The module (main() in this process, Ansible's own argument parsing and JSON result)


def run_module(args: dict, check: bool = False) -> dict:
    import contextlib
    import importlib

    from ansible.module_utils.testing import patch_module_args

    mod = importlib.import_module("ansible_collections.hyhome.bootstrap.plugins.modules.backup_archive")
    out = io.StringIO()
    with patch_module_args({**args, "_ansible_check_mode": check}), contextlib.redirect_stdout(out), \
            pytest.raises(SystemExit) as exited:
        mod.main()
    result = json.loads(out.getvalue())
    assert (exited.value.code != 0) == bool(result.get("failed")), result
    assert "Traceback" not in json.dumps(result)
    return result


@pytest.fixture
def compose_project(tmp_path):
    """A one-service project (never started): a secret, .env, a writable data bind."""
    d = tmp_path / "proj"
    write(str(d / "compose.yaml"), (
        b"services:\n  app:\n    image: hyhome/busybox:local\n    user: '1000:1000'\n"
        b"    secrets: [token]\n    volumes: ['./data/app:/var/lib/app']\n"
        b"secrets:\n  token:\n    file: ./secrets/token\n"), 0o644)
    write(str(d / "secrets" / "token"), SECRET, 0o400)
    write(str(d / ".env"), b"X=1\n", 0o644)
    write(str(d / "data" / "app" / "state.db"), b"rows", 0o640)
    write(str(d / "release.env"), b"APP_IMAGE=x@sha256:00\n", 0o644)
    return d


@pytest.mark.docker
def test_module_create_check_restore_and_refusals(tmp_path, compose_project):
    d = compose_project
    base = {"project_dir": str(d), "ca_dir": str(tmp_path / "ca"), "backup_dir": str(tmp_path / "backups"),
            "extra_files": ["release.env"]}
    planned = run_module(base, check=True)
    assert planned["changed"] and not (tmp_path / "backups").exists()          # check mode writes nothing
    assert planned["roots"] == ["secrets", "env", "ca", "file-release_env", "data-app-var_lib_app"]
    made = run_module(base)
    archive = made["archive"]
    assert made["changed"] and os.path.dirname(archive) == str(tmp_path / "backups")
    assert stat.S_IMODE(os.stat(archive).st_mode) == 0o600 and made["stopped"] == []
    assert any("ca" in s and "missing" in s for s in made["not_saved"])
    assert "skipped" not in made and made["warnings"]       # a truthy "skipped" would mark the task skipped
    assert SECRET.decode() not in json.dumps(made)

    checked = run_module({"project_dir": str(d), "operation": "verify", "archive": archive})
    assert not checked["changed"] and checked["sha256"] == made["sha256"]

    # A bare host: the same project files, nothing else.
    import shutil

    before = tree(d)
    for p in ("secrets", "data", ".env", "release.env"):
        shutil.rmtree(d / p) if (d / p).is_dir() else os.unlink(d / p)
    restored = run_module({**base, "operation": "restore", "archive": archive})
    assert restored["changed"]
    assert {r["root"] for r in restored["restored"]} == {"secrets", "env", "file-release_env", "data-app-var_lib_app"}
    assert tree(d) == before
    loaded = run_module({**base, "operation": "load_dumps", "archive": archive})
    assert loaded["dumps"] == [] and not loaded["changed"]

    missing = run_module({**base, "operation": "restore", "archive": str(tmp_path / "nope.tar.gz")})
    assert missing["failed"] and missing["msg"].endswith("does not exist; nothing was restored")
    data = pathlib.Path(archive).read_bytes()
    pathlib.Path(archive).write_bytes(data[:-100])
    damaged = run_module({**base, "operation": "restore", "archive": archive})
    assert damaged["failed"] and "damaged or truncated" in damaged["msg"] and tree(d) == before
    no_dump = run_module({**base, "dumps": [{"service": "db"}]})
    assert no_dump["failed"] and "'db' is not a service of this project" in no_dump["msg"]
    no_archive = run_module({**base, "operation": "verify"})
    assert no_archive["failed"] and no_archive["msg"].startswith("archive is required")
