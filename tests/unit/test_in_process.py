"""The in_process action: same results as the normal module path, and only where it applies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "compose" / "full"

PLAYBOOK = """\
- hosts: target
  gather_facts: false
  tasks:
    - name: validate
      hyhome.bootstrap.compose_validate:
        project_dir: "{project}"
        yamllint: false
      register: validate
    - name: bad input
      hyhome.bootstrap.compose_validate:
        project_dir: "{project}/no-such-dir"
      register: bad
      ignore_errors: true
    - name: env check mode
      hyhome.bootstrap.env_file:
        project_dir: "{project}"
        values: {{DOMAIN: lab.example.org}}
        check_compose: false
      check_mode: true
      diff: true
      register: env
    - name: with the task environment
      hyhome.bootstrap.compose_validate:
        project_dir: "{project}"
        yamllint: false
      environment:
        DOMAIN: from-the-environment
      register: env_validate
    - name: results
      ansible.builtin.copy:
        content: "{{{{ {{'validate': validate, 'bad': bad, 'env': env, 'env_validate': env_validate}} | to_json }}}}"
        dest: "{out}"
        mode: "0600"
"""


def USING(module: str) -> str:
    """What ansible -vvv logs when it builds a module's AnsiballZ payload (the normal path)."""
    return f"plugins/modules/{module}.py"


def run_playbook(tmp_path: Path, project: Path, in_process: bool, interpreter: str = sys.executable) -> dict:
    out = tmp_path / f"result-{in_process}-{os.path.basename(interpreter)}.json"
    playbook = tmp_path / "pb.yml"
    playbook.write_text(PLAYBOOK.format(project=project, out=out))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"target": {
        "ansible_connection": "local", "ansible_python_interpreter": interpreter}}}}))
    env = {**os.environ, "HYHOME_IN_PROCESS": "1" if in_process else "0",
           "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), "-vvv",
                           str(playbook)], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return {"results": json.loads(out.read_text()), "log": proc.stdout}


def comparable(result: dict) -> dict:
    """A module result without what differs between two runs by nature."""
    drop = {"invocation", "_ansible_no_log", "warnings", "deprecations"}
    return {k: v for k, v in result.items() if k not in drop}


@pytest.mark.docker
@pytest.mark.slow
def test_same_results_in_process_and_through_ansiballz(tmp_path):
    if shutil.which("docker") is None:
        pytest.fail("docker is required for @pytest.mark.docker tests")
    project = tmp_path / "project"
    shutil.copytree(FIXTURE, project)
    (project / ".env").write_text("DOMAIN=example.org\n")
    fast = run_playbook(tmp_path, project, in_process=True)
    normal = run_playbook(tmp_path, project, in_process=False)
    # The normal path builds each module's AnsiballZ payload and runs it in a new interpreter.
    assert USING("compose_validate") in normal["log"] and USING("env_file") in normal["log"]
    assert USING("compose_validate") not in fast["log"] and USING("env_file") not in fast["log"]
    for name in ("validate", "bad", "env", "env_validate"):
        assert comparable(fast["results"][name]) == comparable(normal["results"][name]), name
    r = fast["results"]
    assert r["validate"]["project_context"]["cache"] in ("hit", "miss") and not r["validate"]["failed"]
    assert r["bad"]["failed"] and "does not exist" in r["bad"]["msg"]
    assert r["env"]["changed"] and "DOMAIN" in r["env"]["diff"]["after"] and not (project / ".env.new").exists()
    assert (project / ".env").read_text() == "DOMAIN=example.org\n"           # check mode wrote nothing
    # The task's environment reaches the module (compose interpolates it over .env).
    assert r["env_validate"]["project_context"]["key"] != r["validate"]["project_context"]["key"]


@pytest.mark.docker
@pytest.mark.slow
def test_other_interpreter_takes_the_normal_path(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(FIXTURE, project)
    (project / ".env").write_text("DOMAIN=example.org\n")
    # Same Python through another path name: not "this very interpreter", so AnsiballZ runs it.
    alias = tmp_path / "python-alias"
    alias.symlink_to(sys.executable)
    run = run_playbook(tmp_path, project, in_process=True, interpreter=str(alias))
    assert USING("compose_validate") in run["log"]
    assert run["results"]["bad"]["failed"]


def test_same_python_means_same_binary_from_the_same_directory(tmp_path):
    from ansible_collections.hyhome.bootstrap.plugins.action.in_process import same_python

    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python3").symlink_to(sys.executable)
    (venv_bin / "python").symlink_to("python3")
    elsewhere = tmp_path / "python3"
    elsewhere.symlink_to(sys.executable)
    other = tmp_path / "venv" / "bin" / "python2"
    other.write_text("#!/bin/sh\n")
    assert same_python(str(venv_bin / "python"), str(venv_bin / "python3"))
    assert same_python(str(venv_bin / "python3"), str(venv_bin / "python3"))
    assert not same_python(str(elsewhere), str(venv_bin / "python3"))       # another environment
    assert not same_python(str(other), str(venv_bin / "python3"))           # another binary


def test_collection_bytecode_goes_to_the_cache_not_the_project(tmp_path, monkeypatch):
    import importlib

    from ansible_collections.hyhome.bootstrap.plugins.plugin_utils import in_process

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)          # as in ansible's workers
    name = "ansible_collections.hyhome.bootstrap.plugins.module_utils.hostinfo"
    monkeypatch.delitem(sys.modules, name, raising=False)
    finder = in_process.BytecodeCachingFinder()
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    module = importlib.import_module(name)
    source = Path(module.__file__)
    assert isinstance(module.__spec__.loader, in_process.BytecodeCachingLoader)
    cached = list((tmp_path / "cache" / "hyhome-bootstrap" / "pycache").rglob("hostinfo.*.pyc"))
    assert len(cached) == 1 and str(source.parent).lstrip("/") in str(cached[0])
    assert sys.dont_write_bytecode is True and sys.pycache_prefix is None   # restored


def test_host_addresses_from_the_default_routes():
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import hostinfo

    class FakeSocket:
        routes = {"8.8.8.8": "192.0.2.7", "2404:6800:400a:800::1012": None}

        def __init__(self, family, kind):
            self.address = None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def connect(self, target):
            address = self.routes[target[0]]
            if address is None:
                raise OSError(101, "Network is unreachable")
            self.address = address

        def getsockname(self):
            return (self.address, 40000)

    assert hostinfo.default_addresses(FakeSocket) == ["192.0.2.7"]
    assert hostinfo.with_host_addresses(["localhost", "192.0.2.7"], FakeSocket) == ["localhost", "192.0.2.7"]
    FakeSocket.routes["2404:6800:400a:800::1012"] = "fd00::7%eth0"
    assert hostinfo.with_host_addresses(["localhost"], FakeSocket) == ["localhost", "192.0.2.7", "fd00::7"]
    FakeSocket.routes = {"8.8.8.8": "0.0.0.0", "2404:6800:400a:800::1012": None}  # noqa: S104 - an answer
    assert hostinfo.default_addresses(FakeSocket) == []
