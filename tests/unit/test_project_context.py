"""One option set (project_options + doc fragment) and one project context per run (project_context)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import textwrap

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.hyhome.bootstrap.plugins.doc_fragments.project import ModuleDocFragment
from ansible_collections.hyhome.bootstrap.plugins.module_utils import project_context as pc
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import load_project, load_raw
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_options import (
    OPTION_NAMES,
    cache_mode,
    context_result,
    load,
    load_checked,
    project_argspec,
    project_kwargs,
)

MODULES = os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "modules")


# --------------------------------------------------------------------------------------------
# The option set
# --------------------------------------------------------------------------------------------

def test_argspec_names_defaults_and_aliases():
    spec = project_argspec()
    assert tuple(spec) == OPTION_NAMES
    assert spec["project_dir"] == {"type": "path", "required": True}
    assert spec["files"] == {"type": "list", "elements": "path", "default": [], "aliases": ["compose_files"]}
    assert spec["env_file"] == {"type": "path"}
    assert spec["profiles"] == {"type": "list", "elements": "str", "default": []}
    assert spec["docker_cli"] == {"type": "str", "default": "docker", "aliases": ["docker"]}
    assert project_argspec(project_dir_required=False)["project_dir"]["required"] is False


def test_argspec_is_a_fresh_copy_each_call():
    a = project_argspec()
    a["profiles"]["default"].append("x")
    a["files"]["aliases"].append("y")
    assert project_argspec()["profiles"]["default"] == []
    assert project_argspec()["files"]["aliases"] == ["compose_files"]


def test_doc_fragment_documents_exactly_the_argspec():
    doc = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    spec = project_argspec()
    assert set(doc) == set(spec)
    for name, option in spec.items():
        documented = doc[name]
        assert documented["type"] == option["type"], name
        assert documented.get("default") == option.get("default"), name
        assert documented.get("elements") == option.get("elements"), name
        assert documented.get("aliases") == option.get("aliases"), name
        assert bool(documented.get("required")) == bool(option.get("required")), name


@pytest.mark.parametrize("params", [
    {"project_dir": "/srv/p", "compose_files": ["a.yml"], "docker": "/usr/bin/docker"},
    {"project_dir": "/srv/p", "files": ["a.yml"], "docker_cli": "/usr/bin/docker"},
])
def test_old_option_names_still_work(params):
    result = ArgumentSpecValidator(project_argspec()).validate(params)
    assert not result.error_messages, result.error_messages
    assert result.validated_parameters["files"] == ["a.yml"]
    assert result.validated_parameters["docker_cli"] == "/usr/bin/docker"
    assert result.validated_parameters["profiles"] == []


def test_profiles_default_is_the_same_everywhere():
    # No module re-declares a project option with its own default: they all merge project_argspec().
    for name in sorted(os.listdir(MODULES)):
        if not name.endswith(".py") or name == "__init__.py":
            continue
        with open(os.path.join(MODULES, name), encoding="utf-8") as fh:
            text = fh.read()
        if "project_argspec(" not in text:
            continue
        for option in ("profiles", "files", "docker_cli", "compose_files", "env_file"):
            assert f'"{option}": {{"type"' not in text, (name, option)
            assert not re.search(rf"(?<![\w]){option}=dict\(", text), (name, option)   # not extra_files=dict(
        assert "hyhome.bootstrap.project" in text, name


def test_project_kwargs_maps_module_params():
    kw = project_kwargs({"project_dir": "/p", "files": [], "env_file": None, "profiles": ["a"], "docker_cli": "d"})
    assert kw == {"files": None, "env_file": None, "profiles": ["a"], "docker": "d"}
    kw = project_kwargs({"project_dir": "/p"})   # a caller that knows only the old subset
    assert kw == {"files": None, "env_file": None, "profiles": [], "docker": "docker"}
    assert cache_mode(True) == "read" and cache_mode(False) == "write"
    assert context_result(object()) == {"cache": "off", "key": None}


# --------------------------------------------------------------------------------------------
# The context key (pure: raw walk only)
# --------------------------------------------------------------------------------------------

ROOT = """\
name: ctx
include:
  - db/compose.yaml
services:
  web:
    image: busybox:${WEB_TAG:-1}
    extends:
      file: common/base.yaml
      service: base
    env_file: web.env
    environment:
      GREETING: ${GREETING}
  debug:
    image: busybox
    profiles: [debug]
"""


def make_project(tmp_path):
    d = tmp_path / "proj"
    (d / "db").mkdir(parents=True)
    (d / "common").mkdir()
    (d / "compose.yaml").write_text(ROOT)
    (d / "db" / "compose.yaml").write_text(
        "services:\n  db:\n    image: busybox\n    command: [sleep, '${DB_SLEEP:-1}']\n")
    (d / "common" / "base.yaml").write_text("services:\n  base:\n    mem_limit: 64m\n")
    (d / "web.env").write_text("A=1\n")
    (d / ".env").write_text("GREETING=hello\n")
    return d


def key_of(d, argv=("docker", "compose", "config"), environ=None, **kw):
    return pc.context_key(load_raw(str(d), **kw), list(argv), dict(environ or {}))


def test_key_is_stable_and_ignores_unrelated_environment(tmp_path):
    d = make_project(tmp_path)
    k = key_of(d, environ={"PATH": "/bin"})
    assert len(k) == 64 and k == key_of(d, environ={"PATH": "/usr/bin", "UNRELATED": "x"})


@pytest.mark.parametrize("change", [
    lambda d: (d / "compose.yaml").write_text(ROOT + "  extra:\n    image: busybox\n"),
    lambda d: (d / "db" / "compose.yaml").write_text("services:\n  db:\n    image: busybox:2\n"),
    lambda d: (d / "common" / "base.yaml").write_text("services:\n  base:\n    mem_limit: 32m\n"),
    lambda d: (d / ".env").write_text("GREETING=bye\n"),
    lambda d: (d / "web.env").write_text("A=2\n"),
    lambda d: (d / "db" / ".env").write_text("DB_SLEEP=5\n"),   # an included project's own .env
    lambda d: (d / "compose.override.yaml").write_text("services:\n  web:\n    mem_limit: 1g\n"),
], ids=["root", "include", "extends-base", "dotenv", "service-env-file", "include-dotenv", "override-file"])
def test_key_changes_with_every_input_file(tmp_path, change):
    d = make_project(tmp_path)
    before = key_of(d)
    change(d)
    assert key_of(d) != before


def test_key_changes_with_argv_files_env_file_and_referenced_variables(tmp_path):
    d = make_project(tmp_path)
    base = key_of(d)
    assert key_of(d, argv=("docker", "compose", "--profile", "debug", "config")) != base
    (d / "other.env").write_text("GREETING=x\n")
    assert key_of(d, env_file=str(d / "other.env")) != base
    (d / "alt.yaml").write_text("services:\n  x:\n    image: busybox\n")
    assert key_of(d, files=[str(d / "alt.yaml")]) != base
    # Referenced variables win over .env (day0's check mode hands values through the environment).
    assert key_of(d, environ={"GREETING": "from-env"}) != base
    assert key_of(d, environ={"WEB_TAG": "2"}) != base          # referenced with a default
    assert key_of(d, environ={"DB_SLEEP": "2"}) != base         # referenced in an included file
    assert key_of(d, environ={"COMPOSE_PROJECT_NAME": "other"}) != base
    assert key_of(d, environ={"GREETING": "a"}) != key_of(d, environ={"GREETING": "b"})


def test_key_reveals_no_value(tmp_path):
    d = make_project(tmp_path)
    k = key_of(d, environ={"GREETING": "s3cr3t-value"})
    assert "s3cr3t" not in k and all(c in "0123456789abcdef" for c in k)


# --------------------------------------------------------------------------------------------
# The cache file: atomic, private, never trusted blindly
# --------------------------------------------------------------------------------------------

CONFIG = json.dumps({"name": "ctx", "services": {"web": {"image": "busybox"}}})


def test_write_then_read_private_modes(tmp_path):
    assert pc.write(str(tmp_path), "k1", 0, CONFIG, 'level=warning msg="x"\n')
    assert stat.S_IMODE(os.stat(tmp_path / ".hyhome").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(pc.cache_path(str(tmp_path))).st_mode) == 0o600
    assert pc.read(str(tmp_path), "k1") == {"returncode": 0, "stdout": CONFIG, "stderr": 'level=warning msg="x"\n'}
    assert pc.read(str(tmp_path), "other-key") is None


def test_loose_state_dir_is_tightened_on_write(tmp_path):
    (tmp_path / ".hyhome").mkdir(mode=0o755)
    os.chmod(tmp_path / ".hyhome", 0o755)  # noqa: S103 - the loose mode under test
    assert pc.write(str(tmp_path), "k", 0, CONFIG, "")
    assert stat.S_IMODE(os.stat(tmp_path / ".hyhome").st_mode) == 0o700


@pytest.mark.parametrize("content", [
    b"not json", b"[]", b'{"version": 1}',
    json.dumps({"version": 99, "key": "k", "returncode": 0, "stdout": CONFIG, "stderr": ""}).encode(),
    json.dumps({"version": 1, "key": "k", "returncode": True, "stdout": CONFIG, "stderr": ""}).encode(),
    json.dumps({"version": 1, "key": "k", "returncode": 0, "stdout": "{truncated", "stderr": ""}).encode(),
    json.dumps({"version": 1, "key": "k", "returncode": 0, "stdout": "[1, 2]", "stderr": ""}).encode(),
    json.dumps({"version": 1, "key": "k", "returncode": 0, "stdout": CONFIG, "stderr": None}).encode(),
    b"\xff\xfe",
], ids=["garbage", "list", "partial", "version", "bool-rc", "bad-stdout", "stdout-not-mapping", "stderr-type",
        "binary"])
def test_corrupt_or_foreign_structure_is_ignored(tmp_path, content):
    (tmp_path / ".hyhome").mkdir(mode=0o700)
    path = pc.cache_path(str(tmp_path))
    with open(path, "wb") as fh:
        fh.write(content)
    os.chmod(path, 0o600)
    assert pc.read(str(tmp_path), "k") is None


def test_symlinked_cache_file_is_refused_and_not_followed(tmp_path):
    (tmp_path / ".hyhome").mkdir(mode=0o700)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"version": 1, "key": "k", "returncode": 0, "stdout": CONFIG, "stderr": ""}))
    os.chmod(outside, 0o600)
    os.symlink(outside, pc.cache_path(str(tmp_path)))
    assert pc.read(str(tmp_path), "k") is None
    before = outside.read_text()
    assert pc.write(str(tmp_path), "k2", 0, CONFIG, "")
    assert outside.read_text() == before                       # the link was replaced, not written through
    assert not os.path.islink(pc.cache_path(str(tmp_path)))
    assert pc.read(str(tmp_path), "k2") is not None


def test_symlinked_state_dir_is_neither_read_nor_written(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    project = tmp_path / "p"
    project.mkdir()
    os.symlink(elsewhere, project / ".hyhome")
    assert not pc.write(str(project), "k", 0, CONFIG, "")
    assert list(elsewhere.iterdir()) == []
    (elsewhere / pc.CACHE_FILE).write_text(json.dumps({"version": 1, "key": "k", "returncode": 0,
                                                        "stdout": CONFIG, "stderr": ""}))
    os.chmod(elsewhere / pc.CACHE_FILE, 0o600)
    assert pc.read(str(project), "k") is None


def test_group_or_world_accessible_cache_is_ignored(tmp_path):
    assert pc.write(str(tmp_path), "k", 0, CONFIG, "")
    os.chmod(pc.cache_path(str(tmp_path)), 0o644)
    assert pc.read(str(tmp_path), "k") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_cache_owned_by_another_user_is_ignored(tmp_path):
    assert pc.write(str(tmp_path), "k", 0, CONFIG, "")
    os.chown(pc.cache_path(str(tmp_path)), 4242, 4242)
    assert pc.read(str(tmp_path), "k") is None
    os.chown(pc.cache_path(str(tmp_path)), 0, 0)
    os.chown(tmp_path / ".hyhome", 4242, 4242)
    assert pc.read(str(tmp_path), "k") is None and not pc.write(str(tmp_path), "k", 0, CONFIG, "")


def test_oversized_cache_is_ignored(tmp_path, monkeypatch):
    assert pc.write(str(tmp_path), "k", 0, CONFIG, "")
    monkeypatch.setattr(pc, "MAX_BYTES", 10)
    assert pc.read(str(tmp_path), "k") is None


def test_unknown_cache_mode_is_refused(tmp_path):
    with pytest.raises(HyHomeError, match="cache must be off, read or write"):
        load_project(str(make_project(tmp_path)), cache="yes")


# --------------------------------------------------------------------------------------------
# Through load_project with the real `docker compose config`: computations counted
# --------------------------------------------------------------------------------------------

@pytest.fixture
def counting_docker(tmp_path):
    """A docker CLI that logs each `compose config` call, then runs the real one."""
    real = shutil.which("docker")
    if real is None:
        pytest.fail("docker is required for @pytest.mark.docker tests")
    log = tmp_path / "calls.log"
    wrapper = tmp_path / "bin" / "docker"
    wrapper.parent.mkdir()
    wrapper.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case " $* " in *" config "*) echo "$*" >> {log} ;; esac
        exec {real} "$@"
        """))
    wrapper.chmod(0o755)

    def calls() -> int:
        return len(log.read_text().splitlines()) if log.exists() else 0

    return str(wrapper), calls


def params(d, docker, **kw):
    return {"project_dir": str(d), "files": [], "env_file": None, "profiles": [], "docker_cli": docker, **kw}


@pytest.mark.docker
def test_one_computation_for_every_step_of_a_run(tmp_path, counting_docker, monkeypatch):
    monkeypatch.delenv("GREETING", raising=False)
    docker, calls = counting_docker
    d = make_project(tmp_path)
    first = load(params(d, docker))
    assert first.context["cache"] == "miss" and calls() == 1
    for _ in range(6):   # the other steps of the run
        again = load(params(d, docker))
        assert context_result(again) == {"cache": "hit", "key": first.context["key"]}
    assert calls() == 1
    assert sorted(again.services) == sorted(first.services) == ["db", "web"]
    assert again.services["web"].environment == first.services["web"].environment
    assert again.services["web"].mem_limit == 64 * 1024**2      # from the extends base
    assert again.files == first.files and again.env_refs == first.env_refs
    assert context_result(again) == {"cache": "hit", "key": first.context["key"]}


@pytest.mark.docker
def test_changes_recompute_once_each(tmp_path, counting_docker, monkeypatch):
    monkeypatch.delenv("GREETING", raising=False)
    docker, calls = counting_docker
    d = make_project(tmp_path)
    load(params(d, docker))
    (d / ".env").write_text("GREETING=changed\n")                 # the env step rewrote .env mid-run
    p = load(params(d, docker))
    assert p.context["cache"] == "miss" and p.services["web"].environment["GREETING"] == "changed"
    assert load(params(d, docker)).context["cache"] == "hit" and calls() == 2
    monkeypatch.setenv("GREETING", "pending")                     # check mode's hand-over through the env
    p = load(params(d, docker))
    assert p.context["cache"] == "miss" and p.services["web"].environment["GREETING"] == "pending"
    assert sorted(load(params(d, docker, profiles=["debug"])).services) == ["db", "debug", "web"]
    (d / "db" / "compose.yaml").write_text("services:\n  db:\n    image: busybox:2\n")
    assert load(params(d, docker)).services["db"].image == "busybox:2"
    assert calls() == 5


@pytest.mark.docker
def test_check_mode_reads_but_never_writes(tmp_path, counting_docker):
    docker, calls = counting_docker
    d = make_project(tmp_path)
    assert load(params(d, docker), check_mode=True).context["cache"] == "miss"
    assert load(params(d, docker), check_mode=True).context["cache"] == "miss"
    assert not (d / ".hyhome").exists() and calls() == 2
    load(params(d, docker))
    assert load(params(d, docker), check_mode=True).context["cache"] == "hit" and calls() == 3


@pytest.mark.docker
def test_corrupt_cache_is_recomputed_and_replaced(tmp_path, counting_docker):
    docker, calls = counting_docker
    d = make_project(tmp_path)
    load(params(d, docker))
    with open(pc.cache_path(str(d)), "w") as fh:
        fh.write('{"version": 1, "key": ')
    p = load(params(d, docker))
    assert p.context["cache"] == "miss" and sorted(p.services) == ["db", "web"]
    assert load(params(d, docker)).context["cache"] == "hit" and calls() == 2


@pytest.mark.docker
def test_failed_config_is_cached_with_its_error(tmp_path, counting_docker):
    docker, calls = counting_docker
    d = make_project(tmp_path)
    (d / "compose.yaml").write_text(ROOT.replace("${GREETING}", "${REQUIRED:?set REQUIRED}"))
    first = load(params(d, docker))
    second = load(params(d, docker))
    assert first.config_error and "REQUIRED" in first.config_error and first.source == "raw"
    assert second.context["cache"] == "hit" and second.config_error == first.config_error and calls() == 1


@pytest.mark.docker
def test_load_checked_refuses_a_system_dir_and_a_rejected_project(tmp_path, counting_docker):
    """The first thing every acting module does: a system directory is refused before anything is
    read, a project Compose rejects gives its error line (not the warnings), a good one loads."""
    docker, calls = counting_docker
    for system in ("/", "/etc", "/usr/lib"):
        with pytest.raises(HyHomeError, match=f"refusing project_dir {system}"):
            load_checked(params(system, docker))
    assert calls() == 0
    d = make_project(tmp_path)
    assert sorted(load_checked(params(d, docker)).services) == ["db", "web"]
    (d / "compose.yaml").write_text(ROOT.replace("${GREETING}", "${REQUIRED:?set REQUIRED}"))
    with pytest.raises(HyHomeError, match=r"docker compose rejects the project in .*REQUIRED"):
        load_checked(params(d, docker))


@pytest.mark.docker
def test_load_checked_with_another_env_file_bypasses_the_context(tmp_path, counting_docker):
    """A backup's .env, read before it is in place: the context is neither read nor written."""
    docker, calls = counting_docker
    d = make_project(tmp_path)
    other = tmp_path / "archived.env"
    other.write_text("GREETING=from-the-archive\n")
    project = load_checked(params(d, docker), env_file=str(other))
    assert project.services["web"].environment["GREETING"] == "from-the-archive"
    assert context_result(project)["cache"] == "off" and not (d / ".hyhome").exists()
    load_checked(params(d, docker), env_file=str(other))
    assert calls() == 2


@pytest.mark.docker
def test_cache_off_always_computes(tmp_path, counting_docker):
    docker, calls = counting_docker
    d = make_project(tmp_path)
    assert context_result(load_project(str(d), docker=docker)) == {"cache": "off", "key": None}
    load_project(str(d), docker=docker)
    assert calls() == 2 and not (d / ".hyhome").exists()


@pytest.mark.docker
def test_memo_keeps_derived_output_with_the_context(tmp_path, counting_docker):
    docker, _ = counting_docker
    d = make_project(tmp_path)
    computed = []

    def compute():
        computed.append(1)
        return {"web": "abc"}

    def is_hashes(v):
        return isinstance(v, dict) and all(isinstance(x, str) for x in v.values())

    project = load(params(d, docker))
    assert pc.memo(project, "hash", compute, is_hashes) == {"web": "abc"}
    assert pc.memo(load(params(d, docker)), "hash", compute, is_hashes) == {"web": "abc"}
    assert len(computed) == 1
    assert pc.memo(load(params(d, docker), check_mode=True), "hash", compute) == {"web": "abc"}
    assert pc.memo(load(params(d, docker), check_mode=True), "other", compute) and len(computed) == 2
    with open(pc.cache_path(str(d))) as fh:
        doc = json.load(fh)
    assert "other" not in doc["extra"]                               # check mode wrote nothing
    # A stored value that does not validate is recomputed.
    doc["extra"]["hash"] = ["not", "a", "mapping"]
    with open(pc.cache_path(str(d)), "w") as fh:
        json.dump(doc, fh)
    assert pc.memo(load(params(d, docker)), "hash", compute, is_hashes) == {"web": "abc"} and len(computed) == 3
    (d / ".env").write_text("GREETING=new\n")                      # a new context forgets derived values
    assert pc.memo(load(params(d, docker)), "hash", compute, is_hashes) == {"web": "abc"} and len(computed) == 4
    assert pc.memo(load_project(str(d), docker=docker), "hash", compute) and len(computed) == 5   # cache off


def test_preflight_keeps_the_compose_version_with_the_context(tmp_path):
    from types import SimpleNamespace

    from ansible_collections.hyhome.bootstrap.plugins.module_utils import preflight

    log = tmp_path / "calls"
    cli = tmp_path / "docker"
    cli.write_text(f"#!/bin/sh\necho call >> {log}\necho 2.26.1\n")
    cli.chmod(0o755)
    assert pc.write(str(tmp_path), "k", 0, CONFIG, "")
    project = SimpleNamespace(working_dir=str(tmp_path), context={"full_key": "k", "mode": "write"})
    for _ in range(3):
        facts = preflight.HostFacts()
        preflight._compose_probe(facts, str(cli), project)
        assert facts.compose_version == "2.26.1" and not facts.compose_error
    assert log.read_text().count("call") == 1
    facts = preflight.HostFacts()                        # no project context: asks every time
    preflight._compose_probe(facts, str(cli))
    assert facts.compose_version == "2.26.1" and log.read_text().count("call") == 2


def test_state_dir_is_private_and_ignored_by_git(tmp_path):
    """<project>/.hyhome is created 0700 with a .gitignore, so the project's git status stays clean;
    a symlink in its place is refused."""
    import subprocess

    project = tmp_path / "p"
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    d = pc.ensure_state_dir(str(project))
    assert os.stat(d).st_mode & 0o777 == 0o700
    (project / ".hyhome" / "project-context.json").write_text("{}")
    status = subprocess.run(["git", "-C", str(project), "status", "--porcelain"], capture_output=True, text=True,
                            check=True).stdout
    assert status == ""
    other = tmp_path / "q"
    other.mkdir()
    (other / ".hyhome").symlink_to(tmp_path)
    with pytest.raises(HyHomeError, match="not a directory of this user"):
        pc.ensure_state_dir(str(other))


def test_state_dir_made_by_a_concurrent_step_between_check_and_mkdir(tmp_path, monkeypatch):
    """Two steps (threads of one module, or two modules) may both find .hyhome missing: the one whose
    mkdir loses the race goes on with the directory the other made (CI once saw FileExistsError here)."""
    project = tmp_path / "p"
    project.mkdir()
    real_mkdir = os.mkdir

    def racing_mkdir(path, mode=0o777):
        real_mkdir(path, 0o700)                          # the other step wins ...
        raise FileExistsError(17, "File exists", path)   # ... this one finds it made

    monkeypatch.setattr(pc.os, "mkdir", racing_mkdir)
    d = pc.ensure_state_dir(str(project))
    assert os.stat(d).st_mode & 0o777 == 0o700
    assert (project / ".hyhome" / ".gitignore").is_file()
