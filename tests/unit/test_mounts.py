"""Tests for plugins/module_utils/mounts.py: host, config, data or other, and git-tracked paths."""

from __future__ import annotations

import os
import subprocess

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import mounts, procs
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import Mount, Project, Service


@pytest.fixture(autouse=True)
def _fresh_cache():
    mounts.clear_cache()
    yield
    mounts.clear_cache()


def git_clone_like(path):
    """What a fresh clone looks like: everything present committed."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
        subprocess.run(cmd, cwd=path, check=True, env=env)


def project_with(tmp_path, *mount_list, extensions=None):
    s = Service("s", "img", None, None, mounts=list(mount_list), extensions=extensions or {})
    return Project("p", str(tmp_path), [], services={"s": s}), s


def bind(path, target="/t", ro=False):
    return Mount("bind", target, ro, str(path))


def classify(tmp_path, mount, extensions=None):
    project, s = project_with(tmp_path, mount, extensions=extensions)
    return mounts.classify(project, s, mount)


@pytest.mark.parametrize("host", ["/", "/sys", "/var/run", "/var/lib/docker", "/etc/machine-id",
                                  "/var/run/docker.sock", "/var/lib/docker/containers", "/srv/media"])
def test_read_only_bind_outside_the_project_is_the_hosts(tmp_path, host):
    assert classify(tmp_path, bind(host, ro=True)) == "host"


def test_writable_bind_outside_the_project_is_not_a_host_path(tmp_path):
    # data_dirs decides about it (a writable system path stays refused there).
    assert classify(tmp_path, bind("/var/run/docker.sock")) == "config"   # an existing file
    assert classify(tmp_path, bind("/srv/nowhere/data")) == "data"


def test_other_mounts(tmp_path):
    assert classify(tmp_path, Mount("volume", "/v", False, None, volume="v")) == "other"
    assert classify(tmp_path, Mount("tmpfs", "/t", False, None)) == "other"
    assert classify(tmp_path, Mount("npipe", "/p", False, "/x")) == "other"
    # A local-driver volume with o=bind has a host path: classified like a bind.
    assert classify(tmp_path, Mount("volume", "/v", False, str(tmp_path / "vol"), volume="v")) == "data"


def test_read_only_and_file_binds_inside_are_config(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "app.cfg").write_text("x")
    (tmp_path / "rules").write_text("x")                  # an existing file, whatever its name
    (tmp_path / "prometheus.yml.example").write_text("x")
    assert classify(tmp_path, bind(tmp_path / "conf", ro=True)) == "config"
    assert classify(tmp_path, bind(tmp_path / "app.cfg")) == "config"
    assert classify(tmp_path, bind(tmp_path / "rules")) == "config"
    assert classify(tmp_path, bind(tmp_path / "missing.yml")) == "config"          # named like a file
    assert classify(tmp_path, bind(tmp_path / "prometheus.yml")) == "config"       # has an example
    assert classify(tmp_path, bind(tmp_path / "conf")) == "data"                   # untracked, writable
    assert classify(tmp_path, bind(tmp_path / "not-yet")) == "data"


def test_directories_with_tracked_files_are_config_in_a_fresh_clone(tmp_path):
    for d in ("grafana/dashboards", "grafana/provisioning/datasources", "data/pg", "data/empty"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "grafana/dashboards/home.json").write_text("{}")
    (tmp_path / "grafana/provisioning/datasources/ds.yml").write_text("x")
    (tmp_path / "data/pg/.gitkeep").write_text("")        # placeholders keep a data dir, not config
    (tmp_path / "data/empty/.gitignore").write_text("*\n!.gitignore\n")
    git_clone_like(tmp_path)
    assert classify(tmp_path, bind(tmp_path / "grafana/dashboards")) == "config"
    assert classify(tmp_path, bind(tmp_path / "grafana/provisioning")) == "config"   # tracked below it
    assert classify(tmp_path, bind(tmp_path / "data/pg")) == "data"
    assert classify(tmp_path, bind(tmp_path / "data/empty")) == "data"
    assert classify(tmp_path, bind(tmp_path / "data/new")) == "data"
    assert mounts.tracked_paths(tmp_path) == frozenset(
        str(tmp_path / p) for p in ("grafana/dashboards/home.json", "grafana/provisioning/datasources/ds.yml",
                                    "data/pg/.gitkeep", "data/empty/.gitignore"))


def test_project_in_a_subdirectory_of_the_repository(tmp_path):
    (tmp_path / "stack/conf.d").mkdir(parents=True)
    (tmp_path / "stack/conf.d/a.conf").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other/b.txt").write_text("x")
    git_clone_like(tmp_path)
    assert mounts.tracked_paths(tmp_path / "stack") == frozenset({str(tmp_path / "stack/conf.d/a.conf")})
    assert classify(tmp_path / "stack", bind(tmp_path / "stack/conf.d")) == "config"


def test_declarations_win(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state/seed.json").write_text("{}")
    git_clone_like(tmp_path)
    m = bind(tmp_path / "state", target="/var/lib/app/")
    assert classify(tmp_path, m) == "config"
    assert classify(tmp_path, m, {"x-hyhome": {"writable": ["/var/lib/app"]}}) == "data"
    w = bind(tmp_path / "cache", target="/cache")
    assert classify(tmp_path, w, {"x-hyhome": {"config": ["/cache/"]}}) == "config"
    # A read-only mount declared writable is still not written: config.
    r = bind(tmp_path / "state", target="/s", ro=True)
    assert classify(tmp_path, r, {"x-hyhome": {"writable": ["/s"]}}) == "config"
    # Declarations never turn a read-only host path into something to manage.
    h = bind("/sys", target="/host/sys", ro=True)
    assert classify(tmp_path, h, {"x-hyhome": {"config": ["/host/sys"]}}) == "host"


@pytest.mark.parametrize("ext", [
    {"x-hyhome": "writable"},
    {"x-hyhome": {"writable": "/cache"}},
    {"x-hyhome": {"writable": [None, 3, "", {"a": 1}]}},
    {"x-hyhome": None},
])
def test_bad_declarations_are_ignored(tmp_path, ext):
    assert classify(tmp_path, bind(tmp_path / "cache", target="/cache"), ext) == "data"


def test_bad_mount_input_is_other(tmp_path):
    project, s = project_with(tmp_path)
    assert mounts.classify(project, s, Mount("bind", "/t", False, None)) == "other"
    assert mounts.classify(project, s, Mount("bind", "/t", False, "")) == "other"
    assert mounts.classify(project, s, object()) == "other"


def test_relative_host_path_is_resolved_against_the_project(tmp_path):
    assert classify(tmp_path, Mount("volume", "/v", True, "./vols/x", volume="v")) == "config"
    assert classify(tmp_path, Mount("volume", "/v", True, "../outside", volume="v")) == "host"


def test_lexical_escape_is_outside(tmp_path):
    (tmp_path / "proj").mkdir()
    m = bind(str(tmp_path / "proj") + "/../elsewhere", ro=True)
    assert classify(tmp_path / "proj", m) == "host"


def test_no_repository_means_nothing_tracked(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))   # ignored: the module drops it
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/x.yml").write_text("x")
    monkeypatch.chdir(tmp_path)
    ceiling = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}
    inside = subprocess.run(["git", "rev-parse"], cwd=tmp_path, env=ceiling, capture_output=True, check=False)
    if inside.returncode == 0:
        pytest.skip("tmp_path is inside a git work tree on this machine")
    assert mounts.tracked_paths(tmp_path) == frozenset()
    assert classify(tmp_path, bind(tmp_path / "conf")) == "data"


def test_git_missing_or_slow_means_nothing_tracked(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/x.yml").write_text("x")
    git_clone_like(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert mounts.tracked_paths(tmp_path) == frozenset()
    mounts.clear_cache()

    def slow(argv, **kwargs):
        raise procs.CommandTimeout(argv, kwargs["timeout"])

    monkeypatch.setattr(mounts.procs, "run", slow)
    assert mounts.tracked_paths(tmp_path) == frozenset()


def test_one_git_call_per_project_directory(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/x.yml").write_text("x")
    git_clone_like(tmp_path)
    calls = []
    real = procs.run

    def counting(cmd, **kwargs):
        calls.append(cmd)
        return real(cmd, **kwargs)

    monkeypatch.setattr(mounts.procs, "run", counting)
    project, s = project_with(tmp_path)
    for _ in range(5):
        mounts.classify(project, s, bind(tmp_path / "a"))
        mounts.tracked_paths(str(tmp_path) + "/")
    assert len(calls) == 1 and calls[0][-2:] == ["ls-files", "-z"]


def test_hostile_repository_config_runs_nothing(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/x.yml").write_text("x")
    git_clone_like(tmp_path)
    marker = tmp_path / "pwned"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    subprocess.run(["git", "config", "core.fsmonitor", str(hook)], cwd=tmp_path, check=True)
    assert str(tmp_path / "conf/x.yml") in mounts.tracked_paths(tmp_path)
    assert not marker.exists()


def test_file_name_helpers(tmp_path):
    assert mounts.looks_like_file("/a/b/.env.local") and mounts.looks_like_file("x.YAML")
    assert not mounts.looks_like_file("/a/data")
    (tmp_path / "a.example.conf").write_text("x")
    (tmp_path / "b.yml.example").write_text("x")
    assert mounts.example_for(str(tmp_path / "a.conf")) == str(tmp_path / "a.example.conf")
    assert mounts.example_for(str(tmp_path / "b.yml")) == str(tmp_path / "b.yml.example")
    assert mounts.example_for(str(tmp_path / "c")) is None
