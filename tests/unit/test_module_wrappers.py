"""The module wrappers only Molecule covered at module level: main() of compose_validate, compose_preflight,
compose_project, data_dirs, env_file, stack_verify and tls_owner.

Each main() runs in this process with Ansible's own test hook (ansible.module_utils.testing.patch_module_args),
so argument parsing, check mode, diff mode and the JSON result are the real ones: what exit_json/fail_json
print is parsed back. What the cores compute is tested elsewhere; here: the adapter's contract.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import stat
import uuid
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args

pytestmark = pytest.mark.docker   # the project modules run `docker compose config`
IMAGE = "hyhome/busybox:local"


def run(module: str, args: dict, check: bool = False, diff: bool = False) -> dict:
    """main() of plugins/modules/<module>.py with these arguments; its JSON result."""
    mod = importlib.import_module(f"ansible_collections.hyhome.bootstrap.plugins.modules.{module}")
    out = io.StringIO()
    with patch_module_args({**args, "_ansible_check_mode": check, "_ansible_diff": diff}), \
            contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        mod.main()
    result = json.loads(out.getvalue())
    assert (exited.value.code != 0) == bool(result.get("failed")), result
    if result.get("failed"):
        msg = result["msg"]
        assert msg.strip() and "Traceback" not in json.dumps(result), result
    result["warnings"] = [w["event"]["msg"] if isinstance(w, dict) and "event" in w else w
                          for w in result.get("warnings", [])]
    return result


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): (stat.S_IMODE(p.lstat().st_mode), p.lstat().st_uid,
                                       p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(path.rglob("*")) if ".hyhome" not in p.parts}


def project(tmp_path: Path, services: dict, extra: dict | None = None, files: dict | None = None) -> Path:
    d = tmp_path / "proj"
    d.mkdir(exist_ok=True)
    (d / "compose.yaml").write_text(yaml.safe_dump({"services": services, **(extra or {})}, sort_keys=False))
    for name, content in (files or {}).items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(content)
    return d


# ------------------------------------------------------------------------------------------
# compose_validate


def test_compose_validate_reports_without_failing_and_changes_nothing(tmp_path):
    d = project(tmp_path, {"app": {"image": IMAGE, "environment": {"MODE": "${MODE}"}}})
    before = tree(d)
    res = run("compose_validate", {"project_dir": str(d), "yamllint": False}, check=True)
    assert res["changed"] is False and isinstance(res["ok"], bool)
    assert set(res["summary"]) >= {"error", "warning"} and "SEVERITY" in res["table"]
    assert any("MODE" in json.dumps(f) for f in res["findings"]), res["findings"]
    assert res["project_context"]["cache"] in ("off", "miss", "hit")
    assert tree(d) == before


def test_compose_validate_fails_cleanly_on_a_missing_project(tmp_path):
    res = run("compose_validate", {"project_dir": str(tmp_path / "nowhere")})
    assert res["failed"] and "does not exist" in res["msg"] and "\n" not in res["msg"]


def test_compose_validate_rejects_unknown_options(tmp_path):
    res = run("compose_validate", {"project_dir": str(tmp_path), "no_such_option": 1})
    assert res["failed"] and "no_such_option" in res["msg"]


# ------------------------------------------------------------------------------------------
# compose_preflight

PREFLIGHT_QUIET = {"check_ports": False, "min_disk_free_gb": 0, "min_memory_available_mb": 0, "vm_max_map_count": 0}


def test_compose_preflight_blocks_on_a_missing_secret_file_until_the_step_is_deferred(tmp_path):
    d = project(tmp_path, {"app": {"image": IMAGE, "secrets": ["db"]}}, {"secrets": {"db": {"file": "./secrets/db"}}})
    before = tree(d)
    res = run("compose_preflight", {"project_dir": str(d), **PREFLIGHT_QUIET})
    assert res["changed"] is False and res["blocks_boot"] is True
    assert res["summary"]["blocking"] >= 1 and isinstance(res["table_lines"], list)
    res = run("compose_preflight", {"project_dir": str(d), "deferred_steps": ["secrets"], **PREFLIGHT_QUIET},
              check=True)
    assert res["blocks_boot"] is False and res["summary"]["deferred"] >= 1
    assert tree(d) == before


def test_compose_preflight_argument_errors(tmp_path):
    res = run("compose_preflight", {"project_dir": str(tmp_path), "deferred_steps": ["laundry"]})
    assert res["failed"] and "deferred_steps" in res["msg"]
    res = run("compose_preflight", {"project_dir": str(tmp_path / "nowhere"), **PREFLIGHT_QUIET})
    assert res["failed"] and "nowhere" in res["msg"]


# ------------------------------------------------------------------------------------------
# compose_project (check mode only: nothing may start on the shared engine)


def test_compose_project_check_mode_plans_without_creating_anything(tmp_path):
    name = f"hyhome-wrap-{uuid.uuid4().hex[:8]}"
    d = project(tmp_path, {"app": {"image": IMAGE, "command": ["sleep", "60"]}})
    before = tree(d)
    res = run("compose_project", {"project_dir": str(d), "project_name": name, "pull": "never",
                                  "recreate": ["app"]}, check=True, diff=True)
    assert res["changed"] is True and res["project"] == name
    assert res["plan"]["app"]["action"] == "create"
    assert "recreate_ignored" in res
    assert tree(d) == before
    res = run("compose_project", {"project_dir": str(d), "project_name": name, "state": "absent"}, check=True)
    assert res["changed"] is False


def test_compose_project_refuses_bad_arguments(tmp_path):
    d = project(tmp_path, {"app": {"image": IMAGE}})
    res = run("compose_project", {"project_dir": str(d), "wait_timeout": 0}, check=True)
    assert res["failed"] and "wait_timeout" in res["msg"]
    res = run("compose_project", {"project_dir": "/etc"}, check=True)
    assert res["failed"] and "system directory" in res["msg"]
    res = run("compose_project", {"project_dir": str(d), "pull": "sometimes"}, check=True)
    assert res["failed"] and "pull" in res["msg"]


# ------------------------------------------------------------------------------------------
# data_dirs


def test_data_dirs_check_mode_then_apply_then_idempotent(tmp_path):
    d = project(tmp_path, {"app": {"image": IMAGE, "user": "4242:4243", "volumes": ["./data/app:/data"]}})
    args = {"project_dir": str(d), "missing_image": "warn"}
    res = run("data_dirs", args, check=True, diff=True)
    assert res["changed"] is True and not (d / "data").exists()
    assert "diff" in res
    res = run("data_dirs", args)
    assert res["changed"] is True
    st = (d / "data" / "app").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4242, 4243, 0o750)
    again = run("data_dirs", args, diff=True)
    assert again["changed"] is False and "diff" not in again


def test_data_dirs_failures_name_the_path_and_create_nothing(tmp_path):
    d = project(tmp_path, {"app": {"image": IMAGE, "volumes": ["/etc:/host-etc", "./data/app:/data"]}})
    res = run("data_dirs", {"project_dir": str(d)})
    assert res["failed"] and "/etc" in res["msg"] and "nothing changed" in res["msg"]
    assert not (d / "data").exists()
    res = run("data_dirs", {"project_dir": str(d), "mode": "rwx"})
    assert res["failed"] and "mode" in res["msg"]
    res = run("data_dirs", {"project_dir": str(d), "missing_image": "panic"})
    assert res["failed"] and "missing_image" in res["msg"]


# ------------------------------------------------------------------------------------------
# env_file


def test_env_file_check_mode_writes_nothing_then_writes_then_keeps(tmp_path):
    d = project(tmp_path, {"app": {"image": IMAGE, "environment": {"DOMAIN": "${DOMAIN}"}}},
                files={".env.example": "DOMAIN=example.test\n"})
    args = {"project_dir": str(d), "values": {"DOMAIN": "lab.example.org"}}
    res = run("env_file", args, check=True, diff=True)
    assert res["changed"] is True and not (d / ".env").exists()
    assert res["pending"] == {"DOMAIN": "lab.example.org"}
    assert "lab.example.org" in res["diff"]["after"]
    res = run("env_file", args)
    assert res["changed"] is True and "DOMAIN=lab.example.org" in (d / ".env").read_text()
    assert stat.S_IMODE((d / ".env").stat().st_mode) == 0o640
    again = run("env_file", args, check=True)
    assert again["changed"] is False and again["pending"] == {}


def test_env_file_refuses_secret_values_without_echoing_them(tmp_path):
    d = project(tmp_path, {"app": {"image": IMAGE}})
    value = "sk_" + "live_" + uuid.uuid4().hex
    res = run("env_file", {"project_dir": str(d), "values": {"BILLING": value}, "check_compose": False})
    assert res["failed"] and "BILLING" in res["msg"]
    assert value not in json.dumps(res)
    assert not (d / ".env").exists()
    res = run("env_file", {"project_dir": str(d), "values": {"A": "1"}, "mode": "rw-r-----",
                           "check_compose": False})
    assert res["failed"] and "mode" in res["msg"]


# ------------------------------------------------------------------------------------------
# stack_verify


def test_stack_verify_on_a_project_that_is_not_running(tmp_path):
    d = project(tmp_path, {"app": {"image": IMAGE}})
    name = f"hyhome-wrap-{uuid.uuid4().hex[:8]}"
    res = run("stack_verify", {"project_dir": str(d), "project_name": name, "settle_timeout": 0}, check=True)
    assert res["changed"] is False and res["findings"] == []
    res = run("stack_verify", {"project_dir": str(d), "project_name": name, "settle_timeout": 0})
    assert res["failed"] and "no containers" in res["msg"] and name in res["msg"]


def test_stack_verify_argument_errors(tmp_path):
    res = run("stack_verify", {"project_dir": str(tmp_path), "checks": ["vibes"]})
    assert res["failed"] and "checks" in res["msg"]
    res = run("stack_verify", {"project_dir": str(tmp_path), "fail_on": "sometimes"})
    assert res["failed"] and "fail_on" in res["msg"]


# ------------------------------------------------------------------------------------------
# tls_owner


def test_tls_owner_derives_the_reader_of_the_key(tmp_path):
    d = project(tmp_path, {"gateway": {"image": IMAGE, "user": "101:101",
                                       "volumes": ["./secrets/certs:/etc/certs:ro"]}})
    before = tree(d)
    res = run("tls_owner", {"project_dir": str(d)}, check=True)
    assert res["changed"] is False
    assert (res["owner"], res["group"], res["key_mode"], res["shared"]) == (101, 101, "0400", False)
    assert [r["service"] for r in res["key_readers"]] == ["gateway"]
    assert tree(d) == before


def test_tls_owner_shares_the_key_through_a_group_for_several_readers(tmp_path):
    d = project(tmp_path, {
        "gateway": {"image": IMAGE, "user": "101:500", "volumes": ["./secrets/certs:/etc/certs:ro"]},
        "api": {"image": IMAGE, "user": "102:500", "volumes": ["./secrets/certs/key.pem:/key.pem:ro"]}})
    res = run("tls_owner", {"project_dir": str(d)})
    assert res["shared"] is True and res["key_mode"] == "0440" and res["group"] == 500
    assert sorted(r["service"] for r in res["key_readers"]) == ["api", "gateway"]


def test_tls_owner_failure_says_how_to_skip_the_derivation(tmp_path):
    res = run("tls_owner", {"project_dir": str(tmp_path / "nowhere")})
    assert res["failed"] and "tls_key_owner" in res["msg"]
    assert os.path.basename(str(tmp_path / "nowhere")) in res["msg"]
