"""Tests for plugins/module_utils/data_dirs.py: derivation, owner resolution, refusals, drift walk."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import data_dirs as dd
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import Mount, Project, Service
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "data_dirs")
BUSYBOX = "hyhome/busybox:local"


def read(path):
    with open(path) as fh:
        return fh.read()


def owner_mode(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


class FakeImages:
    """Stands in for DockerImages: records lookups, serves canned Config.User and /etc/passwd."""

    def __init__(self, images=None):
        self.images = images or {}
        self.calls = []

    def config_user(self, image):
        self.calls.append(("config_user", image))
        if image not in self.images:
            raise dd.ImageMissing(image)
        return self.images[image].get("user")

    def accounts(self, image):
        self.calls.append(("accounts", image))
        if image not in self.images:
            raise dd.ImageMissing(image)
        img = self.images[image]
        return dd.parse_passwd(img.get("passwd", "")), dd.parse_group(img.get("group", ""))


BUSYBOX_FAKE = {BUSYBOX: {"user": None, "passwd": "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
                          "group": "root:x:0:\napp:x:1000:\nstaff:x:50:\n"}}


def fixture_project(tmp_path):
    """Copy the fixture stack to tmp and build the Project `docker compose config` gives for it.

    Built by hand (as compose_model.project_from_config would): bind sources are absolute, the
    local-driver volume keeps its relative device (Compose 2.26 does not resolve it).
    """
    root = tmp_path / "stack"
    shutil.copytree(os.path.join(FIXTURES, "stack"), root)
    r = str(root)

    def bind(src, target, ro=False):
        return Mount("bind", target, ro, os.path.join(r, src))

    services = {
        "db": Service("db", "postgres:16", None, None, mounts=[
            bind("data/pg", "/var/lib/postgresql/data"),
            bind("conf/pg.conf", "/etc/postgresql/pg.conf", ro=True)]),
        "grafana": Service("grafana", "docker.io/grafana/grafana:11.0.0", None, None, mounts=[
            Mount("bind", "/var/lib/grafana", False, os.path.join(r, "data/grafana"), create_host_path=False)]),
        "app": Service("app", BUSYBOX, None, "app", mounts=[
            bind("data/shared", "/shared"), bind("gateway", "/etc/gateway", ro=True)]),
        "worker": Service("worker", BUSYBOX, None, "2000:2000", mounts=[
            bind("data/shared", "/shared"),
            Mount("volume", "/usr/share/search/data", False, None, volume="search")]),
        "cache": Service("cache", "redis:7-alpine", None, None, mounts=[
            Mount("volume", "/data", False, None, volume="cache-vol")]),
    }
    volumes = {"search": {"name": "ddfixture_search", "driver": "local",
                          "driver_opts": {"type": "none", "o": "bind", "device": "./volumes/search"}},
               "cache-vol": {"name": "ddfixture_cache-vol"}}
    return Project("ddfixture", r, [os.path.join(r, "docker-compose.yml")], services=services, volumes=volumes), r


# ---------------------------------------------------------------------------------------------
# Derivation


def test_derive_every_mount_syntax(tmp_path):
    project, r = fixture_project(tmp_path)
    paths, warnings = dd.derive_paths(project)
    got = {os.path.relpath(p.path, r): (p.kind, [(u.service, u.read_only, u.via) for u in p.uses]) for p in paths}
    assert got == {
        "conf/pg.conf": ("file", [("db", True, "bind")]),
        "data/grafana": ("dir", [("grafana", False, "bind")]),
        "data/pg": ("dir", [("db", False, "bind")]),
        "data/shared": ("dir", [("app", False, "bind"), ("worker", False, "bind")]),
        "gateway": ("dir", [("app", True, "bind")]),
        "volumes/search": ("dir", [("worker", False, "volume:search")]),
    }
    # The plain named volume is not a host path; the relative volume device is resolved and reported.
    assert len(warnings) == 1 and "./volumes/search" in warnings[0] and "relative" in warnings[0]


def test_derive_uses_host_path_the_loader_set_for_a_bind_volume(tmp_path):
    device = str(tmp_path / "vol")
    project = Project("p", str(tmp_path), [], services={
        "s": Service("s", "img", None, None, mounts=[Mount("volume", "/v", True, device, volume="v"),
                                                     Mount("tmpfs", "/t", False, None)])},
        volumes={"v": {"driver": "local", "driver_opts": {"type": "none", "o": "bind", "device": device}}})
    paths, warnings = dd.derive_paths(project)
    assert [(p.path, p.uses[0].via, p.uses[0].read_only) for p in paths] == [(device, "volume:v", True)]
    assert warnings == []


@pytest.mark.docker
def test_derivation_through_the_compose_loader_matches(tmp_path):
    """The fixture read by compose_model.load_project (``docker compose config``) derives the same paths."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import load_project

    hand, r = fixture_project(tmp_path)
    loaded = load_project(r)
    assert loaded.config_error is None

    def derived(project):
        return [(p.path, p.kind, [(u.service, u.target, u.read_only, u.via) for u in p.uses])
                for p in dd.derive_paths(project)[0]]

    assert derived(loaded) == derived(hand)
    assert os.path.join(r, "volumes/search") in [p.path for p in dd.derive_paths(loaded)[0]]


@pytest.mark.parametrize("spec", [
    {"driver": "local", "driver_opts": {"type": "nfs", "o": "addr=1.2.3.4", "device": ":/x"}},
    {"driver": "rexray", "driver_opts": {"o": "bind", "device": "/x"}},
    {"external": True},
    {},
])
def test_volumes_that_are_not_local_binds_are_ignored(tmp_path, spec):
    project = Project("p", str(tmp_path), [], services={
        "s": Service("s", "img", None, None, mounts=[Mount("volume", "/v", False, None, volume="v")])},
        volumes={"v": spec})
    assert dd.derive_paths(project) == ([], [])


def test_rbind_with_extra_options_counts_as_bind(tmp_path):
    project = Project("p", str(tmp_path), [], services={
        "s": Service("s", "img", None, None, mounts=[Mount("volume", "/v", False, None, volume="v")])},
        volumes={"v": {"driver_opts": {"type": "none", "o": "rbind,ro", "device": str(tmp_path / "d")}}})
    assert [p.path for p in dd.derive_paths(project)[0]] == [str(tmp_path / "d")]


def test_file_kind_detection(tmp_path):
    (tmp_path / "real.cfg").write_text("x")
    (tmp_path / "docker-made.yml").mkdir()          # empty dir Docker left in place of a file
    (tmp_path / "dir.yml").mkdir()
    (tmp_path / "dir.yml" / "a").write_text("x")    # a real directory with a file-like name
    (tmp_path / "plain").mkdir()
    mounts = [Mount("bind", f"/m{i}", True, str(tmp_path / n))
              for i, n in enumerate(["real.cfg", "docker-made.yml", "dir.yml", "plain", "missing.conf", "missing"])]
    project = Project("p", str(tmp_path), [], services={"s": Service("s", "img", None, None, mounts=mounts)})
    kinds = {os.path.basename(p.path): p.kind for p in dd.derive_paths(project)[0]}
    assert kinds == {"real.cfg": "file", "docker-made.yml": "file", "dir.yml": "dir", "plain": "dir",
                     "missing.conf": "file", "missing": "dir"}


# ---------------------------------------------------------------------------------------------
# Option values


def test_bad_mode_and_option_values_are_errors():
    with pytest.raises(HyHomeError, match="not an octal mode"):
        dd.parse_mode("rwx")
    with pytest.raises(HyHomeError, match="out of range"):
        dd.parse_mode("17777")
    with pytest.raises(HyHomeError, match="missing_image"):
        dd.plan(Project("p", "/tmp/x", []), {"missing_image": "maybe"})


# ---------------------------------------------------------------------------------------------
# Plan and apply on the fixture project


def test_plan_and_apply_fixture_then_rerun_changes_nothing(tmp_path):
    project, r = fixture_project(tmp_path)
    os.chmod(os.path.join(r, "gateway"), 0o700)     # the read-only mount is unreadable for app (1000)
    p = dd.plan(project, {}, FakeImages(BUSYBOX_FAKE))
    res = dd.apply(p)
    assert res["changed"]
    assert owner_mode(os.path.join(r, "data/pg")) == (999, 999, 0o750)
    assert owner_mode(os.path.join(r, "data/grafana")) == (472, 0, 0o750)
    assert owner_mode(os.path.join(r, "volumes/search")) == (2000, 2000, 0o750)
    # Shared by app (1000:1000) and worker (2000:2000): owner app, group app's, setgid, reported.
    assert owner_mode(os.path.join(r, "data/shared")) == (1000, 1000, 0o2770)
    assert res["shared"][0]["users"] == {"app": "1000:1000", "worker": "2000:2000"}
    assert "group_add: ['1000'] to worker" in res["shared"][0]["hint"]
    # A worker that already has the group added needs no hint.
    project.services["worker"].group_add = ["1000"]
    assert "hint" not in dd.apply(dd.plan(project, {}, FakeImages(BUSYBOX_FAKE)))["shared"][0]
    # Read-only directory: owner kept (root), group becomes app's, group can read.
    assert owner_mode(os.path.join(r, "gateway")) == (0, 1000, 0o750)
    # Config file copied from the example, readable by postgres.
    conf = os.path.join(r, "conf/pg.conf")
    assert read(conf) == "listen_addresses = *\n"
    assert owner_mode(conf) == (0, 999, 0o640)
    assert res["copied"] == [{"path": conf, "from": conf + ".example", "services": ["db"]}]
    assert dd.apply(dd.plan(project, {}, FakeImages(BUSYBOX_FAKE)))["changed"] is False


def test_example_never_overwrites_an_existing_file(tmp_path):
    project, r = fixture_project(tmp_path)
    conf = os.path.join(r, "conf/pg.conf")
    with open(conf, "w") as fh:
        fh.write("mine\n")
    os.chmod(conf, 0o644)
    res = dd.apply(dd.plan(project, {}, FakeImages(BUSYBOX_FAKE)))
    assert read(conf) == "mine\n" and res["copied"] == []
    assert owner_mode(conf) == (0, 0, 0o644)            # already readable by everyone: untouched
    os.chmod(conf, 0o600)                               # now postgres cannot read it: group gets read
    res = dd.apply(dd.plan(project, {}, FakeImages(BUSYBOX_FAKE)), check=True)
    assert f"{conf}: 0:0 0600" in res["diff"]["before"] and f"{conf}: 0:999 0640" in res["diff"]["after"]
    dd.apply(dd.plan(project, {}, FakeImages(BUSYBOX_FAKE)))
    assert owner_mode(conf) == (0, 999, 0o640) and read(conf) == "mine\n"


def test_example_replaces_the_empty_directory_docker_left(tmp_path):
    project, r = fixture_project(tmp_path)
    conf = os.path.join(r, "conf/pg.conf")
    os.mkdir(conf)
    res = dd.apply(dd.plan(project, {}, FakeImages(BUSYBOX_FAKE)))
    assert os.path.isfile(conf) and res["copied"][0]["path"] == conf


def test_missing_config_without_example_is_reported_not_created(tmp_path):
    project, r = fixture_project(tmp_path)
    os.unlink(os.path.join(r, "conf/pg.conf.example"))
    res = dd.apply(dd.plan(project, {}, FakeImages(BUSYBOX_FAKE)))
    assert [m["path"] for m in res["missing_files"]] == [os.path.join(r, "conf/pg.conf")]
    assert not os.path.lexists(os.path.join(r, "conf/pg.conf"))


def test_check_mode_changes_nothing_and_reports(tmp_path):
    project, r = fixture_project(tmp_path)
    before = sorted(os.path.relpath(os.path.join(d, n), r) for d, ds, fs in os.walk(r) for n in ds + fs)
    res = dd.apply(dd.plan(project, {}, FakeImages(BUSYBOX_FAKE)), check=True, recurse=True)
    after = sorted(os.path.relpath(os.path.join(d, n), r) for d, ds, fs in os.walk(r) for n in ds + fs)
    assert before == after
    assert res["changed"]
    states = {os.path.relpath(d["path"], r): d["state"] for d in res["paths"]}
    assert states["data/pg"] == "created" and states["conf/pg.conf"] == "copied"
    created = next(d for d in res["paths"] if d["path"].endswith("data/pg"))["created"]
    assert created == [os.path.join(r, "data"), os.path.join(r, "data/pg")]
    assert "absent" in res["diff"]["before"] and "999:999 0750" in res["diff"]["after"]
    assert f"{r}/conf/pg.conf: 0:999 0640 (copied from pg.conf.example)" in res["diff"]["after"]


def test_path_override_beats_service_override(tmp_path):
    project, r = fixture_project(tmp_path)
    opts = {"overrides": {"db": {"owner": 70, "group": 70}, "data/pg": {"owner": 71, "mode": "0700"}}}
    dd.apply(dd.plan(project, opts, FakeImages(BUSYBOX_FAKE)))
    assert owner_mode(os.path.join(r, "data/pg")) == (71, 71, 0o700)
    assert owner_mode(os.path.join(r, "conf/pg.conf"))[1] == 70


def test_existing_directory_is_clamped_to_the_mode_not_loosened(tmp_path):
    root = tmp_path / "proj"
    tight, loose = str(root / "tight"), str(root / "loose")
    os.makedirs(tight, mode=0o700)
    os.makedirs(loose)
    os.chmod(loose, 0o777)  # noqa: S103 - drift to fix
    project = Project("p", str(root), [], services={"s": Service("s", "img", None, "999", mounts=[
        Mount("bind", "/a", False, tight), Mount("bind", "/b", False, loose)])})
    dd.apply(dd.plan(project, {}, FakeImages({})))
    assert owner_mode(tight) == (999, 999, 0o700) and owner_mode(loose) == (999, 999, 0o750)
    dd.apply(dd.plan(project, {"overrides": {"./tight": {"owner": 999, "mode": "0750"}}}, FakeImages({})))
    assert owner_mode(tight) == (999, 999, 0o750)                     # a path override mode is exact


def test_shared_group_option(tmp_path):
    project, r = fixture_project(tmp_path)
    res = dd.apply(dd.plan(project, {"shared_group": 3000}, FakeImages(BUSYBOX_FAKE)))
    assert owner_mode(os.path.join(r, "data/shared")) == (1000, 3000, 0o2770)
    assert "group_add: ['3000'] to worker so" in res["shared"][0]["hint"]   # app owns it: no group needed


def test_secrets_tree_and_project_root_are_skipped(tmp_path):
    d = str(tmp_path)
    project = Project("p", d, [], services={"s": Service("s", "img", None, "1000", mounts=[
        Mount("bind", "/certs", True, os.path.join(d, "secrets/certs")), Mount("bind", "/app", True, d)])})
    p = dd.plan(project, {}, FakeImages({}))
    assert p.items == [] and sorted(s["reason"].split()[0] for s in p.skipped) == ["excluded", "is"]


# ---------------------------------------------------------------------------------------------
# Refusals: nothing changed, every refused path named


def one_mount_project(root, host_path, extra=None):
    mounts = [Mount("bind", "/x", False, host_path)] + [Mount("bind", "/ok", False, p) for p in (extra or [])]
    return Project("p", root, [], services={"s": Service("s", "img", None, "1000", mounts=mounts)})


@pytest.mark.parametrize("path,message", [
    ("/", "system directory"),
    ("/etc", "system directory"),
    ("/etc/myapp", "system tree /etc"),
    ("/usr/local/data", "system tree /usr"),
    ("/var/lib/docker/volumes/x", "system tree /var/lib/docker"),
    ("/var/run/docker.sock", "system tree (/var)?/run/docker.sock"),
    ("/proc/1", "system tree /proc"),
])
def test_refuses_system_paths_and_changes_nothing(tmp_path, path, message):
    ok = str(tmp_path / "ok")
    project = one_mount_project(str(tmp_path), path, [ok])
    with pytest.raises(HyHomeError, match=message) as exc:
        dd.plan(project, {"allowed_roots": [str(tmp_path), "/"]}, FakeImages({}))
    assert "nothing changed" in exc.value.msg and not os.path.exists(ok)


def test_refuses_a_system_directory_as_allowed_root(tmp_path):
    with pytest.raises(HyHomeError, match="allowed root"):
        dd.plan(one_mount_project(str(tmp_path), "/srv/x"), {"allowed_roots": ["/srv"]}, FakeImages({}))


def test_refuses_paths_outside_the_allowed_root(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    escaped = os.path.normpath(str(root / ".." / "elsewhere"))   # ../ already resolved by compose
    with pytest.raises(HyHomeError, match="outside the allowed roots"):
        dd.plan(one_mount_project(str(root), escaped), {}, FakeImages({}))
    assert not os.path.exists(escaped)
    # Allowed once its parent is an allowed root.
    p = dd.plan(one_mount_project(str(root), escaped), {"allowed_roots": [str(root), str(tmp_path)]}, FakeImages({}))
    assert [i.path for i in p.items] == [escaped]


def test_refuses_a_symlinked_component_pointing_outside(tmp_path):
    root, outside = tmp_path / "proj", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "data")
    with pytest.raises(HyHomeError, match="symlink makes it resolve to"):
        dd.plan(one_mount_project(str(root), str(root / "data" / "pg")), {}, FakeImages({}))
    assert os.listdir(outside) == []


def test_symlinked_component_inside_the_root_is_followed_to_its_target(tmp_path):
    root = tmp_path / "proj"
    (root / "real").mkdir(parents=True)
    os.symlink("real", root / "data")
    dd.apply(dd.plan(one_mount_project(str(root), str(root / "data" / "pg")), {}, FakeImages({})))
    assert owner_mode(root / "real" / "pg") == (1000, 1000, 0o750)
    assert os.path.islink(root / "data")


HOST_MOUNTS = [("/", "/rootfs"), ("/sys", "/sys"), ("/var/run", "/var/run"), ("/var/lib/docker", "/var/lib/docker"),
               ("/etc/machine-id", "/etc/machine-id"), ("/var/lib/docker/containers", "/var/lib/docker/containers"),
               ("/var/run/docker.sock", "/var/run/docker.sock")]


def test_read_only_host_mounts_are_reported_not_refused_not_touched(tmp_path):
    """cAdvisor, node-exporter, promtail: read-only binds of host paths belong to the host."""
    d = str(tmp_path)
    before = {h: os.lstat(h) for h, _ in HOST_MOUNTS if os.path.lexists(h)}
    project = Project("p", d, [], services={
        "cadvisor": Service("cadvisor", "gcr.io/cadvisor/cadvisor:v0.49.1", None, None,
                            mounts=[Mount("bind", t, True, h) for h, t in HOST_MOUNTS]),
        "node-exporter": Service("node-exporter", "prom/node-exporter:v1.8.1", None, None, mounts=[
            Mount("bind", "/host/sys", True, "/sys"), Mount("bind", "/data", False, os.path.join(d, "data/ne"))])})
    p = dd.plan(project, {}, FakeImages({}))
    assert [i.path for i in p.items] == [os.path.join(d, "data/ne")]
    got = {h["path"]: (h["services"], h["reason"]) for h in p.host_paths}
    assert got["/sys"] == (["cadvisor", "node-exporter"], "host path, not managed")
    assert sorted(got) == sorted(h for h, _ in HOST_MOUNTS)
    assert next(h for h in p.host_paths if h["path"] == "/sys")["targets"] == ["/host/sys", "/sys"]
    res = dd.apply(p)
    assert res["host_paths"] == p.host_paths and res["changed"]
    assert all(os.path.normpath(e["path"]).startswith(d) for e in res["paths"])
    for h, st in before.items():
        now = os.lstat(h)
        assert (now.st_uid, now.st_gid, now.st_mode) == (st.st_uid, st.st_gid, st.st_mode)
    assert not dd.apply(dd.plan(project, {}, FakeImages({})))["changed"]


def test_writable_system_path_stays_refused_even_when_another_service_reads_it(tmp_path):
    project = Project("p", str(tmp_path), [], services={
        "ro": Service("ro", "img", None, "1000", mounts=[Mount("bind", "/s", True, "/var/lib/docker")]),
        "rw": Service("rw", "img", None, "1000", mounts=[Mount("bind", "/s", False, "/var/lib/docker")])})
    with pytest.raises(HyHomeError, match=r"refusing bind-mount path /var/lib/docker.*mounted read-only") as exc:
        dd.plan(project, {}, FakeImages({}))
    assert "services: ro, rw" in exc.value.msg


def test_exclude_applies_before_the_system_path_refusal(tmp_path):
    project = one_mount_project(str(tmp_path), "/var/lib/docker/volumes/x", [str(tmp_path / "ok")])
    p = dd.plan(project, {"exclude": ["/var/lib/docker"]}, FakeImages({}))
    assert p.skipped == [{"path": "/var/lib/docker/volumes/x", "services": ["s"],
                          "reason": "excluded by the exclude option"}]
    assert [i.path for i in p.items] == [str(tmp_path / "ok")]
    # A relative exclude is relative to the project directory, not to where the module runs.
    p = dd.plan(one_mount_project(str(tmp_path), str(tmp_path / "backups/x")), {"exclude": ["backups"]},
                FakeImages({}))
    assert p.items == [] and p.skipped[0]["path"] == str(tmp_path / "backups/x")


def test_read_only_outside_the_project_but_inside_an_allowed_root_is_managed(tmp_path):
    root, shared = tmp_path / "proj", tmp_path / "shared-conf"
    root.mkdir()
    shared.mkdir()
    project = Project("p", str(root), [], services={
        "s": Service("s", "img", None, "1000", mounts=[Mount("bind", "/c", True, str(shared))])})
    p = dd.plan(project, {"allowed_roots": [str(root), str(tmp_path)]}, FakeImages({}))
    assert [i.path for i in p.items] == [str(shared)] and p.host_paths == []


def test_all_refusals_are_listed_together(tmp_path):
    project = one_mount_project(str(tmp_path), "/etc/a", ["/var/lib/docker/b"])
    with pytest.raises(HyHomeError) as exc:
        dd.plan(project, {}, FakeImages({}))
    assert "/etc/a" in exc.value.msg and "/var/lib/docker/b" in exc.value.msg


# ---------------------------------------------------------------------------------------------
# Drift walk


def make_tree(root, dirs=5, files=20):
    os.makedirs(root, exist_ok=True)
    for d in range(dirs):
        sub = os.path.join(root, f"d{d}", "inner")
        os.makedirs(sub)
        for f in range(files):
            with open(os.path.join(sub if f % 2 else os.path.dirname(sub), f"f{f}"), "w") as fh:
                fh.write("x")
    return root


def writable_rule(uid=1000, gid=1000, mode=0o750):
    ident = dd.Identity(uid, gid, "test")
    return dd._rule("dir", True, False, ident, None, {**dd.DEFAULT_OPTIONS}, None) if mode == 0o750 else \
        dd._rule("dir", True, False, ident, mode, {**dd.DEFAULT_OPTIONS}, None)


def test_walk_fixes_only_what_differs_and_counts(tmp_path):
    root = make_tree(str(tmp_path / "t"))
    rule = writable_rule()
    for dirpath, _dirnames, filenames in os.walk(root):          # start from a correct tree
        for n in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
            os.chown(n, 1000, 1000)
            os.chmod(n, 0o750 if os.path.isdir(n) else 0o640)
    total = 1 + 5 * 2 + 5 * 20
    assert dd.walk_fix(root, rule).checked == total
    assert dd.walk_fix(root, rule).fixed == 0
    os.chown(os.path.join(root, "d1/f0"), 0, 0)
    os.chown(os.path.join(root, "d3/inner/f1"), 1000, 5)
    os.chmod(os.path.join(root, "d4/inner"), 0o777)  # noqa: S103 - drift to fix
    os.chmod(os.path.join(root, "d2/f2"), 0o666)  # noqa: S103 - drift to fix
    st_before = os.stat(os.path.join(root, "d2/f2")).st_mtime_ns
    check = dd.walk_fix(root, rule, check=True)
    assert (check.checked, check.fixed, check.owner_fixed, check.mode_fixed) == (total, 4, 2, 2)
    assert owner_mode(os.path.join(root, "d1/f0"))[:2] == (0, 0)          # check mode changed nothing
    fix = dd.walk_fix(root, rule)
    assert (fix.checked, fix.fixed) == (total, 4)
    assert owner_mode(os.path.join(root, "d1/f0")) == (1000, 1000, 0o640)
    assert owner_mode(os.path.join(root, "d4/inner")) == (1000, 1000, 0o775)    # world-write stripped
    assert owner_mode(os.path.join(root, "d2/f2")) == (1000, 1000, 0o664)
    assert os.stat(os.path.join(root, "d2/f2")).st_mtime_ns == st_before
    assert dd.walk_fix(root, rule).fixed == 0
    assert {s["path"] for s in fix.samples} == {os.path.join(root, p) for p in
                                                 ("d1/f0", "d3/inner/f1", "d4/inner", "d2/f2")}


def test_walk_without_recurse_touches_only_the_directory(tmp_path):
    root = make_tree(str(tmp_path / "t"), dirs=1, files=2)
    stats = dd.walk_fix(root, writable_rule(), recurse=False)
    assert (stats.checked, stats.fixed) == (1, 1)
    assert owner_mode(root) == (1000, 1000, 0o750)
    assert owner_mode(os.path.join(root, "d0/f0"))[0] == 0


def test_writable_subtree_rule_only_strips_world_write_and_adds_owner_access(tmp_path):
    root = str(tmp_path / "t")
    os.mkdir(root)
    for name, mode in (("public", 0o644), ("private", 0o600), ("script", 0o755), ("ro", 0o400), ("world", 0o666)):
        p = os.path.join(root, name)
        open(p, "w").close()
        os.chmod(p, mode)
    os.mkdir(os.path.join(root, "sub"), 0o700)
    dd.walk_fix(root, writable_rule())
    modes = {n: owner_mode(os.path.join(root, n))[2] for n in os.listdir(root)}
    assert modes == {"public": 0o644, "private": 0o600, "script": 0o755, "ro": 0o600, "world": 0o664, "sub": 0o700}
    assert owner_mode(root) == (1000, 1000, 0o750)


def test_shared_rule_gives_the_group_write_and_setgid(tmp_path):
    root = make_tree(str(tmp_path / "t"), dirs=1, files=2)
    rule = dd._rule("dir", True, True, dd.Identity(1000, 3000, "t"), None, dict(dd.DEFAULT_OPTIONS), None)
    dd.walk_fix(root, rule)
    assert owner_mode(root) == (1000, 3000, 0o2770)
    assert owner_mode(os.path.join(root, "d0/inner")) == (1000, 3000, 0o2775)  # g+rwx, setgid; o kept
    assert owner_mode(os.path.join(root, "d0/f0")) == (1000, 3000, 0o664)


def test_symlinks_are_never_followed(tmp_path):
    root = make_tree(str(tmp_path / "t"), dirs=1, files=2)
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "secret").write_text("s")
    os.chmod(outside / "secret", 0o600)
    os.symlink(outside / "secret", os.path.join(root, "link-to-file"))
    os.symlink(outside, os.path.join(root, "link-to-dir"))
    os.symlink("/nonexistent", os.path.join(root, "dangling"))
    stats = dd.walk_fix(root, writable_rule())
    assert owner_mode(outside / "secret") == (0, 0, 0o600)
    assert owner_mode(outside / "deep")[:2] == (0, 0) and owner_mode(outside)[:2] == (0, 0)
    for link in ("link-to-file", "link-to-dir", "dangling"):                 # the links themselves: lchown
        assert os.lstat(os.path.join(root, link)).st_uid == 1000
    assert stats.raced == 0
    with pytest.raises(HyHomeError, match="is a symlink"):
        dd.walk_fix(os.path.join(root, "link-to-dir"), writable_rule())
    assert owner_mode(outside)[:2] == (0, 0)


def test_walk_does_not_cross_into_another_filesystem(tmp_path):
    root = make_tree(str(tmp_path / "t"), dirs=1, files=2)
    mnt = os.path.join(root, "mnt")
    os.mkdir(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt], check=True)
    try:
        open(os.path.join(mnt, "other-fs"), "w").close()
        stats = dd.walk_fix(root, writable_rule())
        assert stats.skipped_mounts == 1
        assert owner_mode(os.path.join(mnt, "other-fs"))[0] == 0
        assert owner_mode(mnt)[0] == 0
    finally:
        subprocess.run(["umount", mnt], check=True)


def test_nested_managed_directories_are_pruned_so_reruns_are_stable(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    data, pg = str(root / "data"), str(root / "data" / "pg")
    project = Project("p", str(root), [], services={
        "a": Service("a", "img", None, "1000", mounts=[Mount("bind", "/d", False, data)]),
        "b": Service("b", "img", None, "999", mounts=[Mount("bind", "/p", False, pg)])})
    dd.apply(dd.plan(project, {}, FakeImages({})), recurse=True)
    open(os.path.join(pg, "PG_VERSION"), "w").close()
    os.chown(os.path.join(pg, "PG_VERSION"), 999, 999)
    os.chmod(os.path.join(pg, "PG_VERSION"), 0o600)
    res = dd.apply(dd.plan(project, {}, FakeImages({})), recurse=True)
    assert res["changed"] is False and res["totals"]["fixed"] == 0
    assert owner_mode(os.path.join(pg, "PG_VERSION"))[:2] == (999, 999)


def test_setuid_bit_survives_an_owner_fix(tmp_path):
    root = str(tmp_path / "t")
    os.mkdir(root)
    p = os.path.join(root, "tool")
    open(p, "w").close()
    os.chmod(p, 0o4750)  # noqa: S103 - the bit must survive
    rule = dd.Rule(1000, 1000, 0o750, 0o750, file_allowed=0o7777)
    dd.walk_fix(root, rule)
    assert owner_mode(p) == (1000, 1000, 0o4750)


def test_device_nodes_are_left_alone(tmp_path):
    root = str(tmp_path / "t")
    os.mkdir(root)
    os.mknod(os.path.join(root, "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mkfifo(os.path.join(root, "fifo"))
    stats = dd.walk_fix(root, writable_rule())
    assert stats.skipped_devices == 1
    assert os.lstat(os.path.join(root, "null")).st_uid == 0
    assert os.lstat(os.path.join(root, "fifo")).st_uid == 1000


def test_apply_recurse_reports_subtree_counts_in_check_mode(tmp_path):
    root = tmp_path / "proj"
    data = make_tree(str(root / "data"), dirs=2, files=3)
    project = Project("p", str(root), [], services={
        "a": Service("a", "img", None, "1000", mounts=[Mount("bind", "/d", False, data)])})
    res = dd.apply(dd.plan(project, {}, FakeImages({})), check=True, recurse=True)
    entry = res["paths"][0]
    assert (entry["state"], entry["checked"], entry["fixed"]) == ("fixed", 11, 11)
    assert "(11 of 11 entries fixed)" in res["diff"]["after"]
    assert owner_mode(data)[0] == 0
    res = dd.apply(dd.plan(project, {}, FakeImages({})), recurse=True)
    assert res["totals"] == {"checked": 11, "fixed": 11}
    assert dd.apply(dd.plan(project, {}, FakeImages({})), recurse=True)["totals"] == {"checked": 11, "fixed": 0}


# ---------------------------------------------------------------------------------------------
# The module through ansible-playbook: check + diff, real run, no-change run, failure message

MODULE_PLAY = """
- name: data_dirs module
  hosts: all
  gather_facts: false
  tasks:
    - name: Data dirs
      hyhome.bootstrap.data_dirs:
        project_dir: "{{ project }}"
        recurse: "{{ recurse | default(false) | bool }}"
        allowed_roots: "{{ roots | default(omit) }}"
      register: out
"""


def run_module(tmp_path, project, *extra):
    import json
    import sys

    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    play = tmp_path / "play.yml"
    play.write_text(MODULE_PLAY)
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "ANSIBLE_CONFIG": os.path.join(repo, "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_LOCALHOST_WARNING": "false",
           "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    cmd = [os.path.join(bindir, "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"project={project}", *extra, str(play)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    return data["plays"][0]["tasks"][0]["hosts"]["localhost"]


@pytest.mark.docker
@pytest.mark.slow
def test_module_check_diff_then_real_then_no_change(tmp_path):
    _, r = fixture_project(tmp_path)
    res = run_module(tmp_path, r, "--check", "--diff")
    assert res["changed"] and not res.get("failed"), res
    assert not os.path.exists(os.path.join(r, "data")) and not os.path.exists(os.path.join(r, "conf/pg.conf"))
    assert f"{r}/data/pg: absent" in res["diff"]["before"] and f"{r}/data/pg: 999:999 0750" in res["diff"]["after"]
    assert any("written by services with different users" in w for w in res.get("warnings", []))

    res = run_module(tmp_path, r)
    assert res["changed"] and owner_mode(os.path.join(r, "data/pg")) == (999, 999, 0o750)
    assert owner_mode(os.path.join(r, "data/shared"))[:2] == (1000, 1000)     # `user: app` via the image
    assert [c["path"] for c in res["copied"]] == [os.path.join(r, "conf/pg.conf")]

    res = run_module(tmp_path, r, "-e", "recurse=true")
    assert not res["changed"] and res["totals"]["fixed"] == 0

    open(os.path.join(r, "data/pg/PG_VERSION"), "w").close()                    # root-owned: drift
    res = run_module(tmp_path, r, "-e", "recurse=true", "--check", "--diff")
    assert res["changed"] and res["totals"]["fixed"] == 1
    assert "(1 of 2 entries fixed)" in res["diff"]["after"]
    assert owner_mode(os.path.join(r, "data/pg/PG_VERSION"))[0] == 0            # check mode: untouched


@pytest.mark.docker
@pytest.mark.slow
def test_module_refusal_is_a_clean_failure(tmp_path):
    r = str(tmp_path / "proj")
    os.mkdir(r)
    with open(os.path.join(r, "compose.yaml"), "w") as fh:
        fh.write("services:\n  ok:\n    image: hyhome/busybox:local\n    volumes: ['./data:/d']\n"
                 "  bad:\n    image: hyhome/busybox:local\n    volumes: ['/var/lib/docker/volumes:/v']\n")
    res = run_module(tmp_path, r)
    assert res["failed"] and "refusing bind-mount path /var/lib/docker/volumes" in res["msg"]
    assert "Traceback" not in res.get("module_stderr", "") and not os.path.exists(os.path.join(r, "data"))


# ---------------------------------------------------------------------------------------------
# Hard links and bad ids (issue 13)


def one_service_project(root, user="1000:1000", mounts=None):
    mounts = mounts or [Mount("bind", "/d", False, os.path.join(root, "data"))]
    return Project("p", str(root), [], services={"s": Service("s", BUSYBOX, None, user, mounts=mounts)})


def test_walk_skips_hard_linked_files_and_lists_them(tmp_path):
    """`ln /etc/shadow data/x` must not hand the host file to the container's uid."""
    outside = tmp_path / "outside-secret"
    outside.write_text("s")
    os.chmod(outside, 0o600)
    root = make_tree(str(tmp_path / "t"), dirs=1, files=2)
    os.link(outside, os.path.join(root, "d0/inner/linked"))
    os.link(outside, os.path.join(root, "linked-too"))
    check = dd.walk_fix(root, writable_rule(), check=True)
    assert check.skipped_hardlinks == 2
    stats = dd.walk_fix(root, writable_rule())
    assert owner_mode(outside) == (0, 0, 0o600)
    assert stats.skipped_hardlinks == 2
    assert sorted(stats.hardlinks) == [os.path.join(root, "d0/inner/linked"), os.path.join(root, "linked-too")]
    assert owner_mode(os.path.join(root, "d0/f0"))[:2] == (1000, 1000)       # the rest is fixed
    assert all(s["path"] not in stats.hardlinks for s in stats.samples)


def test_hard_linked_special_files_are_skipped_too(tmp_path):
    root = str(tmp_path / "t")
    os.mkdir(root)
    os.symlink("/etc/hostname", os.path.join(root, "ln"))
    os.link(os.path.join(root, "ln"), tmp_path / "other-name", follow_symlinks=False)   # a second name of the link
    stats = dd.walk_fix(root, writable_rule())
    assert stats.skipped_hardlinks == 1 and os.lstat(tmp_path / "other-name").st_uid == 0


def test_apply_reports_hard_links_and_changes_nothing_outside(tmp_path):
    project = one_service_project(tmp_path)
    os.mkdir(tmp_path / "data")
    (tmp_path / "host.conf").write_text("x")
    os.link(tmp_path / "host.conf", tmp_path / "data/alias")
    res = dd.apply(dd.plan(project, {}, FakeImages()), recurse=True)
    entry = res["paths"][0]
    assert entry["skipped_hardlinks"] == 1 and entry["hardlinks"] == [str(tmp_path / "data/alias")]
    assert owner_mode(tmp_path / "host.conf")[:2] == (0, 0)
    assert owner_mode(tmp_path / "data")[:2] == (1000, 1000)


def test_hard_linked_bind_mounted_file_is_refused_before_anything_changes(tmp_path):
    (tmp_path / "host-file").write_text("x")
    os.chmod(tmp_path / "host-file", 0o600)
    os.link(tmp_path / "host-file", tmp_path / "app.conf")
    project = one_service_project(tmp_path, mounts=[
        Mount("bind", "/d", False, str(tmp_path / "data")),
        Mount("bind", "/etc/app.conf", False, str(tmp_path / "app.conf"))])
    with pytest.raises(HyHomeError) as exc:
        dd.plan(project, {}, FakeImages())
    msg = exc.value.msg
    assert msg.startswith("nothing changed; refused: refusing bind-mounted file ") and "2 hard links" in msg
    assert "\n" not in msg and "(:ro)" not in msg
    assert not os.path.exists(tmp_path / "data")
    assert owner_mode(tmp_path / "host-file") == (0, 0, 0o600)


def test_hard_linked_bind_mounted_file_needing_no_change_is_accepted(tmp_path):
    (tmp_path / "host-file").write_text("x")
    os.chown(tmp_path / "host-file", 1000, 1000)
    os.chmod(tmp_path / "host-file", 0o600)
    os.link(tmp_path / "host-file", tmp_path / "app.conf")
    project = one_service_project(tmp_path, mounts=[Mount("bind", "/etc/app.conf", False, str(tmp_path / "app.conf"))])
    res = dd.apply(dd.plan(project, {}, FakeImages()))
    assert not res["changed"] and res["paths"][0]["state"] == "ok"
    # A path override with its current owner and mode is the documented way to accept one.
    os.chown(tmp_path / "host-file", 0, 0)
    ov = {"overrides": {"./app.conf": {"owner": 0, "group": 0, "mode": "0600"}}}
    assert not dd.apply(dd.plan(project, ov, FakeImages()))["changed"]


def test_symlinked_bind_mounted_file_is_fixed_through_its_target_inside_only(tmp_path):
    """Existing behaviour kept: a symlinked file inside the root resolves to its target; one leading
    outside is refused."""
    (tmp_path / "real.conf").write_text("x")
    os.chmod(tmp_path / "real.conf", 0o600)
    os.symlink("real.conf", tmp_path / "app.conf")
    project = one_service_project(tmp_path, mounts=[Mount("bind", "/etc/app.conf", False, str(tmp_path / "app.conf"))])
    dd.apply(dd.plan(project, {}, FakeImages()))
    assert owner_mode(tmp_path / "real.conf")[:2] == (1000, 1000)
    os.unlink(tmp_path / "app.conf")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.conf"
    outside.write_text("x")
    os.symlink(outside, tmp_path / "app.conf")
    try:
        with pytest.raises(HyHomeError, match="a symlink makes it resolve to"):
            dd.plan(project, {}, FakeImages())
        assert owner_mode(outside)[:2] == (0, 0)
    finally:
        outside.unlink()


@pytest.mark.parametrize(("user", "options", "match"), [
    ("-5", {}, "user '-5': uid '-5' must not be negative"),
    ("1000:-5", {}, "gid '-5' must not be negative"),
    ("99999999999", {}, "is too large"),
    ("4294967295", {}, "is too large"),                           # (uid_t)-1 means "keep" to chown
    (None, {"overrides": {"s": {"owner": -1}}}, "override for service s: owner -1 must not be negative"),
    (None, {"overrides": {"s": {"owner": "-1"}}}, "owner '-1' must not be negative"),
    (None, {"overrides": {"s": {"owner": 2**40}}}, "is too large"),
    (None, {"overrides": {"s": "1000:-1"}}, "gid '-1' must not be negative"),
    (None, {"overrides": {"./data": {"owner": -3}}}, "override for path .*data: owner -3 must not be negative"),
    (None, {"overrides": {"./data": {"group": "-3"}}}, "override for path .*data: group '-3' must not be negative"),
    (None, {"overrides": {"./data": "1:2"}}, "override for path ./data: '1:2' must be a mapping"),
    (None, {"image_users": {"hyhome/busybox": "-7"}}, r"image_users\[hyhome/busybox\]: uid '-7' must not be"),
    (None, {"image_users": {"hyhome/busybox": str(2**33)}}, "is too large"),
])
def test_bad_ids_fail_before_anything_is_created(tmp_path, user, options, match):
    project = one_service_project(tmp_path, user=user)
    with pytest.raises(HyHomeError, match=match) as exc:
        dd.apply(dd.plan(project, options, FakeImages()))
    assert "\n" not in exc.value.msg
    assert os.listdir(tmp_path) == []


def test_bad_shared_group_fails_before_anything_is_created(tmp_path):
    mounts = [Mount("bind", "/d", False, os.path.join(tmp_path, "data"))]
    project = Project("p", str(tmp_path), [], services={
        "a": Service("a", BUSYBOX, None, "1000:1000", mounts=mounts),
        "b": Service("b", BUSYBOX, None, "2000:2000", mounts=mounts)})
    for bad in (-4, "-4", 2**40):
        with pytest.raises(HyHomeError, match=r"shared_group: group .* (must not be negative|is too large)"):
            dd.plan(project, {"shared_group": bad}, FakeImages())
    assert os.listdir(tmp_path) == []


def test_ids_in_image_account_files_out_of_range_are_ignored():
    assert dd.parse_passwd("a:x:-1:0::/:/bin/sh\nb:x:4294967296:1::/:/bin/sh\nc:x:5:5::/:/bin/sh\n") == {"c": (5, 5)}
    assert dd.parse_group("g:x:-1:\nh:x:99999999999:\nk:x:7:\n") == {"k": 7}


@pytest.mark.docker
@pytest.mark.slow
def test_module_bad_uid_and_hard_links(tmp_path):
    r = tmp_path / "proj"
    r.mkdir()
    (r / "compose.yaml").write_text("services:\n  s:\n    image: hyhome/busybox:local\n    user: '-5'\n"
                                    "    volumes: ['./data:/d']\n")
    res = run_module(tmp_path, str(r))
    assert res["failed"] and res["msg"] == ("nothing changed: service s: user '-5': uid '-5' must not be negative")
    assert "Traceback" not in res.get("module_stderr", "") and not (r / "data").exists()

    (r / "compose.yaml").write_text("services:\n  s:\n    image: hyhome/busybox:local\n    user: '1000'\n"
                                    "    volumes: ['./data:/d']\n")
    (r / "data").mkdir()
    (tmp_path / "host.conf").write_text("x")
    os.link(tmp_path / "host.conf", r / "data/alias")
    res = run_module(tmp_path, str(r), "-e", "recurse=true")
    assert not res.get("failed"), res
    assert any("1 hard-linked file(s) left unchanged" in w and str(r / "data/alias") in w
               for w in res.get("warnings", []))
    assert owner_mode(tmp_path / "host.conf")[:2] == (0, 0)
