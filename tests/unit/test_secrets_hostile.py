"""Regressions of the hostile probe (issue 13) on the secrets job: names that would become controller
paths, a symlinked secrets tree, hard links, other people's temp-like files, unbounded lengths, and a
failure part-way. Every refusal is one line, names what to fix and writes nothing."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible_collections.hyhome.bootstrap.plugins.module_utils import fileops
from ansible_collections.hyhome.bootstrap.plugins.module_utils import secrets as core
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
    RESOURCE_NAME_MAX,
    Location,
    Mount,
    Project,
    SecretRef,
    Service,
    check_resource_name,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import Secret as ComposeSecret
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.modules import secret_files
from ansible_collections.hyhome.bootstrap.plugins.test.resource_name import TestModule as NameTests
from test_secrets import FakeModule as SecretFilesModule  # same directory: the module's defaults
from test_secrets import snapshot  # same directory: the "nothing written" proof

REPO = Path(__file__).resolve().parents[2]


def specs_for(secrets_dir: Path, **registry):
    return core.build_specs(None, registry, str(secrets_dir))


def refused(fn, *args, **kw) -> str:
    """The one-line message of the HyHomeError ``fn`` raises."""
    with pytest.raises(HyHomeError) as err:
        fn(*args, **kw)
    assert "\n" not in err.value.msg and "Traceback" not in err.value.msg
    return err.value.msg


class FakeModule(SecretFilesModule):
    """The module's defaults, without reading a compose project unless a test asks for it."""

    def __init__(self, check_mode=False, **params):
        super().__init__(check_mode, **{"derive_from_compose": False, **params})


# --------------------------------------------------------------------------------------------
# 1. one name rule, shared by compose names, registry names and the role's controller store
# --------------------------------------------------------------------------------------------

BAD_NAMES = ["..", ".", "../../x", "a/b", "x..y", "/etc/passwd", "", ".hidden", "-flag", "a b", "a\nb", "ä",
             "x" * (RESOURCE_NAME_MAX + 1), 7, None]
GOOD_NAMES = ["db_password", "app.env.key", "A1-x_y", "x" * RESOURCE_NAME_MAX, "x."]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_the_name_rule_refuses_anything_but_one_plain_file_name(name):
    msg = refused(check_resource_name, "secret", name, "hyhome-secrets.yml")
    assert msg.startswith("secret name ") and "(hyhome-secrets.yml) is not allowed" in msg and len(msg) < 400
    assert NameTests().tests()["resource_name"](name) is False


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_the_name_rule_accepts_plain_names(name):
    assert check_resource_name("secret", name) == name
    assert NameTests().tests()["resource_name"](name) is True


def test_registry_file_name_escaping_the_store_is_refused_naming_entry_and_file(tmp_path):
    reg = tmp_path / "hyhome-secrets.yml"
    reg.write_text("secrets:\n  ../../x: {kind: provided, file: x}\n")
    before = snapshot(tmp_path)
    msg = refused(secret_files.run, FakeModule(secrets_dir=str(tmp_path / "secrets"), registry_file=str(reg)))
    assert msg.startswith("secret name '../../x' (registry_file ") and str(reg) in msg
    assert snapshot(tmp_path) == before


def test_registry_option_name_is_refused_naming_the_option(tmp_path):
    msg = refused(secret_files.run, FakeModule(secrets_dir=str(tmp_path / "secrets"),
                                               registry={"..": {"file": "x"}}))
    assert msg.startswith("secret name '..' (registry option) is not allowed")
    assert not (tmp_path / "secrets").exists()


def test_compose_secret_named_dotdot_is_refused_naming_its_file_and_line(tmp_path):
    project = Project(name="p", working_dir=str(tmp_path), files=[str(tmp_path / "compose.yaml")])
    project.services = {"app": Service(name="app", image="x", build=None, user="1000",
                                       secrets=[SecretRef("..", "/run/secrets/..")])}
    project.secrets = {"..": ComposeSecret("..", str(tmp_path / "secrets" / "x"),
                                           location=Location(str(tmp_path / "compose.yaml"), 7))}
    msg = refused(core.build_specs, project, {}, str(tmp_path / "secrets"))
    assert msg.startswith(f"secret name '..' (compose secrets: in {tmp_path / 'compose.yaml'}:7) is not allowed")


@pytest.mark.docker
def test_module_refuses_a_compose_secret_named_dotdot_before_writing(tmp_path):
    (tmp_path / "compose.yaml").write_text(
        "services:\n  app:\n    image: hyhome/busybox:local\n    secrets: ['..']\n"
        "secrets:\n  '..':\n    file: ./secrets/x\n")
    msg = refused(secret_files.run, FakeModule(project_dir=str(tmp_path), derive_from_compose=True))
    assert msg.startswith("secret name '..' (compose secrets: in ") and "compose.yaml" in msg, msg
    assert not (tmp_path / "secrets").exists()


def test_store_paths_carry_only_checked_names(tmp_path):
    result = secret_files.run(FakeModule(secrets_dir=str(tmp_path / "secrets"),
                                         registry={"a.b": {"file": "sub/a"}, "c": {"file": "c"}}))
    assert sorted(result["store_paths"]) == ["a.b", "c"]
    assert all(NameTests().tests()["resource_name"](n) for n in result["store_paths"])


def test_role_refuses_a_forged_store_name_before_copying_anything(tmp_path):
    """The role checks the names a (compromised) host returns before they become controller paths."""
    store = tmp_path / "store"
    store.mkdir()
    (tmp_path / "value").write_text("v")
    forged = {"ok_name": str(tmp_path / "value"), "../escaped": str(tmp_path / "value")}
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{
        "name": "store", "hosts": "all", "gather_facts": False,
        "tasks": [{"name": "Copy to the store", "ansible.builtin.include_role": {
            "name": "hyhome.bootstrap.secrets", "tasks_from": "controller-store.yml"},
            "vars": {"secrets_controller_dir": str(store), "secrets_result": {"store_paths": forged}}}]}]))
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "false", "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run([os.path.join(bindir, "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(tmp_path / "play.yml")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert 'refusing to store secret "../escaped"' in out
    assert not (tmp_path / "escaped").exists() and os.listdir(store) == []


# --------------------------------------------------------------------------------------------
# 2. a symlinked secrets tree
# --------------------------------------------------------------------------------------------

def _project_with_outside(tmp_path):
    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (outside / "keep").write_text("the attacker's target")
    return project, outside


def test_secrets_dir_that_is_a_symlink_out_of_the_project_is_refused(tmp_path):
    project, outside = _project_with_outside(tmp_path)
    (project / "secrets").symlink_to(outside)
    before = snapshot(tmp_path)
    msg = refused(secret_files.run, FakeModule(project_dir=str(project), registry={"s": {"file": "s"}}))
    assert msg.startswith(f"refusing secrets directory {project / 'secrets'}: a symlink makes it resolve to "
                          f"{outside}, outside the project {project}")
    assert snapshot(tmp_path) == before


def test_secrets_dir_under_a_symlinked_parent_out_of_the_project_is_refused(tmp_path):
    project, outside = _project_with_outside(tmp_path)
    (project / "private").symlink_to(outside)
    before = snapshot(tmp_path)
    msg = refused(secret_files.run, FakeModule(project_dir=str(project), secrets_dir=str(project / "private/secrets"),
                                               registry={"s": {"file": "s"}}))
    assert "a symlink makes it resolve to" in msg and "set secrets_dir to" in msg
    assert snapshot(tmp_path) == before and not (outside / "secrets").exists()


def test_symlinks_that_stay_in_the_project_and_an_inventory_chosen_tree_are_fine(tmp_path):
    project, outside = _project_with_outside(tmp_path)
    (project / "private").mkdir()
    (project / "secrets").symlink_to(project / "private")
    secret_files.run(FakeModule(project_dir=str(project), registry={"s": {"file": "s"}}))
    assert (project / "private" / "s").is_file()
    # A secrets_dir the inventory sets outside the project is the operator's choice.
    secret_files.run(FakeModule(project_dir=str(project), secrets_dir=str(outside / "tree"),
                                registry={"s": {"file": "s"}}))
    assert (outside / "tree" / "s").is_file()


def test_history_folder_symlinked_out_of_the_tree_is_refused(tmp_path):
    d, outside = tmp_path / "secrets", tmp_path / "outside"
    d.mkdir()
    outside.mkdir()
    (d / ".history").symlink_to(outside)
    before = snapshot(tmp_path)
    msg = refused(core.plan, specs_for(d, s={"file": "s"}), str(d))
    assert "history folder of secret s" in msg and "outside" in msg
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------
# 3. hard links
# --------------------------------------------------------------------------------------------

def test_hard_linked_secret_file_is_refused_and_the_other_name_keeps_owner_and_mode(tmp_path):
    d, outside = tmp_path / "secrets", tmp_path / "outside"
    d.mkdir()
    outside.write_text("a host file with a second name in the secrets tree")
    outside.chmod(0o644)
    os.link(outside, d / "s")
    before = snapshot(tmp_path)
    msg = refused(core.plan, specs_for(d, s={"file": "s", "owner": 4242}), str(d))
    assert msg.startswith(f"secret s: {d / 's'} has 2 hard links") and "replace it with a copy" in msg
    assert snapshot(tmp_path) == before and stat.S_IMODE(outside.stat().st_mode) == 0o644


def test_hard_linked_public_key_is_refused(tmp_path):
    d = tmp_path / "secrets"
    specs = specs_for(d, k={"kind": "ed25519", "file": "k"})
    core.apply(core.plan(specs, str(d)))
    (d / "k.pub").unlink()
    os.link(d / "k", d / "k.pub")
    assert "hard links" in refused(core.plan, specs, str(d))


def test_a_hard_link_swapped_in_after_planning_never_gets_the_owner_and_mode(tmp_path):
    d, outside = tmp_path / "secrets", tmp_path / "outside"
    specs = specs_for(d, s={"file": "s"})
    core.apply(core.plan(specs, str(d)))
    (d / "s").chmod(0o440)                       # owner/mode drift: the plan will chmod the file
    p = core.plan(specs, str(d))
    assert p.items[0].permissions and p.items[0].value is None
    outside.write_text("not a secret")
    outside.chmod(0o644)
    (d / "s").unlink()
    os.link(outside, d / "s")                    # swapped between plan and apply
    msg = refused(core.apply, p)
    assert "hard links" in msg
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644


# --------------------------------------------------------------------------------------------
# 4. temp files: only ours, unmistakably named, are removed, and the removal is reported
# --------------------------------------------------------------------------------------------

def test_atomic_write_names_its_temp_files_unmistakably():
    name = fileops.temp_name("db_password")
    assert name.startswith(".db_password.tmp.hyhome-") and len(name) == len(".db_password.tmp.hyhome-") + 12
    assert fileops.temp_name("db_password") != name


def test_temp_like_files_of_others_are_kept_and_change_nothing(tmp_path):
    d = tmp_path / "secrets"
    specs = specs_for(d, s={"file": "s"})
    core.apply(core.plan(specs, str(d)))
    theirs = [".s.tmp", ".s.tmp999.0", ".s.tmp-backup", ".s.tmp.hyhome-nothex00000", ".s.tmp.hyhome-0123456789abc",
              ".t.tmp.hyhome-0123456789ab"]
    for n in theirs:
        (d / n).write_text("someone else's")
    (d / ".history" / "s" / ".x.tmp1").write_text("someone else's")
    p = core.plan(specs, str(d))
    assert not p.changed and p.stale_temps == [] and p.diff()["after"] == ""
    core.apply(p)
    assert all((d / n).exists() for n in theirs) and (d / ".history" / "s" / ".x.tmp1").exists()


def test_our_leftover_temps_are_removed_in_the_tree_and_history_and_listed_in_the_diff(tmp_path):
    d = tmp_path / "secrets"
    specs = specs_for(d, k={"kind": "ed25519", "file": "sub/k"})
    core.apply(core.plan(specs, str(d)))
    left = [d / "sub" / fileops.temp_name("k"), d / "sub" / fileops.temp_name("k.pub"),
            d / ".history" / "sub" / "k" / fileops.temp_name("20260101T000000.000000Z-1-current")]
    for t in left:
        t.write_bytes(b"partial")
    check = core.plan(specs, str(d))
    assert check.changed and check.stale_temps == sorted(map(str, left))
    assert all(f"{t}: removed" in check.diff()["after"] for t in left)
    assert all(t.exists() for t in left)          # planning (check mode) removes nothing
    core.apply(check)
    assert not any(t.exists() for t in left) and not core.plan(specs, str(d)).changed


# --------------------------------------------------------------------------------------------
# 5. bounded lengths and sizes, typed registry values
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "message"), [
    ({"length": 100000000}, "length 100000000 is above the limit of 4096 characters for kind password"),
    ({"length": "4097"}, "length 4097 is above the limit of 4096 characters"),
    ({"kind": "hex", "length": 5000}, "above the limit of 4096 characters for kind hex"),
    ({"kind": "base64", "length": 10**9}, "above the limit of 4096 random bytes for kind base64"),
    ({"kind": "token", "length": 4097}, "above the limit of 4096 random bytes"),
    ({"kind": "rsa", "size": 16384}, "RSA size 16384 is above the limit of 8192 bits"),
    ({"length": "9" * 500}, "length must be an integer, got '999"),
    ({"length": [1, 2]}, "length must be an integer or a string, got list"),
    ({"length": 1.5}, "length must be an integer or a string, got float"),
    ({"length": True}, "length must be an integer or a string, got bool"),
    ({"consumers": "db"}, "consumers must be a list of strings, got str"),
    ({"consumers": [["db"]]}, "consumers must be a list of strings, got list"),
    ({"hint": {"a": 1}}, "hint must be a string, got dict"),
    ({"persistent": "maybe"}, "persistent must be true or false, got 'maybe'"),
    ({"charset": {"x": 1}}, "charset must be a string or a list of strings, got dict"),
])
def test_out_of_bounds_and_mistyped_registry_values_are_refused_at_once(tmp_path, entry, message):
    msg = refused(core.build_specs, None, {"s": {"file": "s", **entry}}, str(tmp_path / "secrets"))
    assert message in msg, msg
    assert not (tmp_path / "secrets").exists()


def test_the_upper_limits_themselves_are_accepted(tmp_path):
    d = tmp_path / "secrets"
    specs = specs_for(d, p={"length": 4096, "file": "p"}, h={"kind": "hex", "length": "4096", "file": "h"},
                      t={"kind": "token", "length": 4096, "file": "t"})
    core.apply(core.plan(specs, str(d)))
    assert len((d / "p").read_bytes()) == 4096 and len((d / "h").read_bytes()) == 4096


def test_htpasswd_rounds_are_bounded(tmp_path):
    reg = {"pw": {"file": "pw"}, "ht": {"kind": "htpasswd", "source": "pw", "rounds": 31, "file": "ht"}}
    assert "bcrypt rounds 31 is above the limit of 16" in refused(core.build_specs, None, reg, str(tmp_path))
    reg["ht"] = {**reg["ht"], "scheme": "sha512_crypt", "rounds": 999_999_999}
    assert "above the limit of 1000000" in refused(core.build_specs, None, reg, str(tmp_path))


def test_boolean_words_from_templated_inventory_are_read_as_booleans(tmp_path):
    (spec,) = specs_for(tmp_path / "secrets", s={"file": "s", "persistent": "false"})
    assert spec.persistent is False


def test_an_aliased_nested_registry_value_is_refused_without_expanding_it(tmp_path):
    """A small YAML whose aliases nest 9 levels deep would expand to billions of items: the one
    bounded loader refuses it while reading, naming the file."""
    lines = ['a0: &a0 ["x"]'] + [f"a{i}: &a{i} [{', '.join(['*a' + str(i - 1)] * 9)}]" for i in range(1, 10)]
    lines += ["secrets:", "  s: {file: s, consumers: *a9}"]
    reg = tmp_path / "hyhome-secrets.yml"
    reg.write_text("\n".join(lines) + "\n")
    assert reg.stat().st_size < 1024
    msg = refused(secret_files.run, FakeModule(secrets_dir=str(tmp_path / "secrets"), registry_file=str(reg)))
    assert msg.startswith(f"{reg}: YAML aliases expand to more than ")
    assert msg.endswith("(alias bomb?)")
    assert not (tmp_path / "secrets").exists()


@pytest.mark.parametrize(("text", "message"), [
    ("secrets: [unclosed\n", "registry_file is not valid YAML (line 1)"),
    ("s: {file: s}\n\tbad: tab\n", "registry_file is not valid YAML (line 2)"),
    (b"s: {file: \xff\xfe}\n", "is not UTF-8 text"),
    ("- a\n- b\n", "must be a mapping of secret names"),
])
def test_bad_registry_files_give_one_line_without_quoting_the_file(tmp_path, text, message):
    reg = tmp_path / "hyhome-secrets.yml"
    reg.write_bytes(text if isinstance(text, bytes) else text.encode())
    msg = refused(secret_files.run, FakeModule(secrets_dir=str(tmp_path / "secrets"), registry_file=str(reg)))
    assert message in msg and "unclosed" not in msg and "tab" not in msg
    assert not (tmp_path / "secrets").exists()


def test_a_registry_option_entry_that_is_not_a_mapping_is_an_error_not_a_traceback(tmp_path):
    msg = refused(secret_files.run, FakeModule(secrets_dir=str(tmp_path / "secrets"), registry={"s": "password"}))
    assert msg == "secrets registry entry 's' (registry option) must be a mapping, got str"


# --------------------------------------------------------------------------------------------
# 6. a failure part-way
# --------------------------------------------------------------------------------------------

def _fail_on_nth_write(monkeypatch, n: int):
    real = core.atomic_write
    calls = {"n": 0}

    def flaky(path, *args, **kw):
        calls["n"] += 1
        if calls["n"] == n:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(path, *args, **kw)

    monkeypatch.setattr(core, "atomic_write", flaky)


def test_a_failure_part_way_reports_changed_and_what_was_written(tmp_path, monkeypatch):
    d = tmp_path / "secrets"
    reg = {"a": {"file": "a", "persistent": False}, "b": {"file": "b", "persistent": False}}
    _fail_on_nth_write(monkeypatch, 2)
    with pytest.raises(HyHomeError) as err:
        secret_files.run(FakeModule(secrets_dir=str(d), registry=reg))
    e = err.value
    assert "\n" not in e.msg and "No space left on device" in e.msg and "already written" in e.msg
    assert e.details["changed"] is True
    assert str(d / "a") in e.details["written"] and str(d / "b") not in e.details["written"]
    assert (d / "a").exists() and not (d / "b").exists()
    assert not any(v in e.msg + repr(e.details) for v in [(d / "a").read_text()])


def test_a_failure_before_any_write_says_nothing_was_written(tmp_path, monkeypatch):
    d = tmp_path / "secrets"
    d.mkdir(mode=0o700)
    _fail_on_nth_write(monkeypatch, 1)
    with pytest.raises(HyHomeError) as err:
        secret_files.run(FakeModule(secrets_dir=str(d), registry={"a": {"file": "a", "persistent": False}}))
    assert err.value.msg.endswith("nothing was written") and "changed" not in err.value.details


def _consumer_mounting(project_dir: Path, host: Path) -> Project:
    project = Project(name="p", working_dir=str(project_dir), files=[str(project_dir / "compose.yaml")])
    project.services = {"app": Service(
        name="app", image="hyhome/busybox:local", build=None, user="1000:1000",
        mounts=[Mount(type="bind", target="/srv", read_only=False, host_path=str(host))],
        secrets=[SecretRef(n, f"/run/secrets/{n}") for n in ("a", "b")])}
    project.secrets = {n: ComposeSecret(n, str(project_dir / "secrets" / n)) for n in ("a", "b")}
    return project


@pytest.mark.parametrize("mounted", ["secrets", "."])
def test_files_a_failed_run_wrote_are_not_the_consumers_data(tmp_path, monkeypatch, mounted):
    """A consumer that mounts the secrets tree (or a directory above it): after a run that wrote `a`
    and failed on `b`, the re-run generates `b` instead of claiming the consumer holds data."""
    d = tmp_path / "secrets"
    project = _consumer_mounting(tmp_path, (tmp_path / mounted).resolve())
    specs = core.build_specs(project, {}, str(d))
    _fail_on_nth_write(monkeypatch, 3)          # history of a, a, then the history of b fails
    p = core.plan(specs, str(d), project)
    with pytest.raises(OSError):
        core.apply(p)
    assert (d / "a").exists() and not (d / "b").exists() and p.written
    monkeypatch.undo()
    again = core.plan(specs, str(d), project)
    assert {i.spec.name: i.action for i in again.items} == {"a": "ok", "b": "generated"}


def test_real_data_next_to_the_secrets_tree_still_blocks_a_lost_secret(tmp_path):
    d = tmp_path / "secrets"
    project = _consumer_mounting(tmp_path, tmp_path)
    (tmp_path / "database").mkdir()
    (tmp_path / "database" / "PG_VERSION").write_text("15")
    specs = core.build_specs(project, {}, str(d))
    msg = refused(core.plan, specs, str(d), project)
    assert msg.startswith("refusing to generate a different value for a persistent secret") and f"app:{tmp_path}" in msg


@pytest.mark.parametrize(("kw", "message"), [
    ({"default_owner": -5}, "owner -5 must not be negative"),
    ({"default_group": 2**40}, "group 1099511627776 is too large"),
    ({"shared_group": "99999999999"}, "group '99999999999' is too large"),
])
def test_negative_or_oversized_ids_are_refused_before_anything_is_written(tmp_path, kw, message):
    """fileops.resolve_owner checks the numbers (data_dirs' fix); the secrets plan asks it first."""
    d = tmp_path / "secrets"
    assert message in refused(core.plan, specs_for(d, s={"file": "s"}), str(d), **kw)
    assert "owner -1 must not be negative" in refused(core.plan, specs_for(d, s={"file": "s", "owner": -1}), str(d))
    assert not d.exists()


# --------------------------------------------------------------------------------------------
# 7. every registry entry is schema-checked, used or not; a full disk names the file
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "message"), [
    ({"kind": "bogus"}, "secret db: unknown kind 'bogus'"),
    ({"kind": "password", "length": 4}, "secret db: length 4 is below the floor"),
    ({"kind": "rsa", "size": 1_000_000}, "secret db: RSA size 1000000 is above the limit"),
    ({"kind": "htpasswd"}, "secret db: kind htpasswd needs 'source'"),
    ({"kind": "password", "optional": True}, "secret db: optional applies to kind provided only"),
    ({"mode": "0666"}, "secret db: mode 0666 lets every user"),
])
def test_an_unused_registry_entry_is_schema_checked_not_just_listed(tmp_path, entry, message):
    """No compose secret and no ``file``: the entry manages nothing, yet a bad one is refused."""
    d = tmp_path / "secrets"
    assert message in refused(specs_for, d, db=entry)
    assert message in refused(secret_files.run, FakeModule(secrets_dir=str(d), registry={"db": entry}))
    assert not d.exists()


def test_a_valid_unused_registry_entry_is_still_only_listed(tmp_path):
    d = tmp_path / "secrets"
    result = secret_files.run(FakeModule(secrets_dir=str(d), registry={"other_stack_key": {"kind": "hex"}}))
    assert result["unused_registry"] == ["other_stack_key"] and result["secrets"] == []


def test_an_excluded_compose_secret_s_registry_entry_is_schema_checked(tmp_path):
    project = Project(name="p", working_dir=str(tmp_path), files=[str(tmp_path / "compose.yaml")])
    project.secrets = {"tls_key": ComposeSecret("tls_key", str(tmp_path / "secrets" / "certs" / "key.pem"))}
    msg = refused(core.build_specs, project, {"tls_key": {"kind": "bogus"}}, str(tmp_path / "secrets"),
                  exclude=["certs/*"])
    assert "unknown kind 'bogus'" in msg


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, monkeypatch):
    """ENOSPC from write/fsync carries no file name; atomic_write adds the target, never the temp name."""
    d = tmp_path / "secrets"

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileops.os, "fsync", full)
    d.mkdir(mode=0o700)
    msg = refused(secret_files.run, FakeModule(secrets_dir=str(d), registry={"a": {"file": "a", "persistent": False}}))
    assert msg.startswith(f"secrets: {d / 'a'}: No space left on device;"), msg
    assert fileops.TEMP_MARK not in msg and fileops.own_temps(str(d)) == []


def test_os_error_text_names_the_file_or_the_given_path():
    assert fileops.os_error_text(OSError(errno.ENOSPC, "No space left on device", "/x/a")) == \
        "/x/a: No space left on device"
    assert fileops.os_error_text(OSError(errno.ENOSPC, "No space left on device"), "/x/b") == \
        "/x/b: No space left on device"
    assert fileops.os_error_text(OSError(errno.EIO, "Input/output error")) == "Input/output error"
