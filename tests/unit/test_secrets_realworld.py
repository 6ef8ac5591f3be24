"""The secrets step on real-world projects: kinds inferred from names (provided credentials,
readable usernames), data directories vs committed configuration when a persistent secret is lost,
hostile secret names, and the module's report of pending provided secrets and readers."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import mounts
from ansible_collections.hyhome.bootstrap.plugins.module_utils import secrets as core
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
    Mount,
    Project,
    SecretRef,
    Service,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import Secret as ComposeSecret
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from test_secrets import (
    FakeModule,  # same directory: the module's defaults
    snapshot,  # same directory: the "nothing written" proof
)

USERNAME = re.compile(r"hyhome_[a-z]{6}[0-9]{2}")


def compose_project(tmp_path: Path, secrets: list[str], services: dict | None = None) -> Project:
    """A project declaring ``secrets`` (files under secrets/), each read by every service."""
    project = Project(name="p", working_dir=str(tmp_path), files=[str(tmp_path / "compose.yaml")])
    services = services or {"app": {"image": "example/app:1", "user": "1000:1000"}}
    project.services = {
        name: Service(name=name, image=s.get("image"), build=None, user=s.get("user"), mounts=s.get("mounts", []),
                      secrets=[SecretRef(n, f"/run/secrets/{n}") for n in secrets])
        for name, s in services.items()}
    project.secrets = {n: ComposeSecret(n, str(tmp_path / "secrets" / n)) for n in secrets}
    return project


def plan_and_apply(specs, secrets_dir, project=None, **kw):
    p = core.plan(specs, str(secrets_dir), project, **kw)
    core.apply(p)
    return p


# --------------------------------------------------------------------------------------------
# kinds from names
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "kind"), [
    ("slack_webhook", "provided"),
    ("discord_webhook", "provided"),
    ("alertmanager_slack_webhook_url", "provided"),
    ("teams-webhook", "provided"),
    ("smtp_password", "provided"),
    ("smtp_user", "provided"),            # the relay's account, not a generated name
    ("smtp_username", "provided"),
    ("alertmanager_smtp_password", "provided"),
    ("grafana_oauth_client_secret", "provided"),
    ("oidc_client_secret", "provided"),
    ("oauth2_proxy_client_id", "provided"),
    ("github_client_secret", "provided"),
    ("google_oauth_client_id", "provided"),
    ("cloudflare_api_token", "provided"),
    ("aws_secret_access_key", "provided"),
    ("openai_api_key", "provided"),
    ("sendgrid_apikey", "provided"),
    ("postgres_user", "username"),
    ("minio_root_user", "username"),
    ("grafana_admin_username", "username"),
    ("keycloak_admin_login", "username"),
    ("POSTGRES_USER", "username"),
    # internal secrets: nothing inferred, the default kind applies
    ("postgres_password", None),
    ("redis_password", None),
    ("valkey_password", None),
    ("jwt_secret", None),
    ("app_secret_key", None),
    ("session_secret", None),
    ("minio_root_password", None),
    ("keycloak_admin_password", None),
    ("api_token", None),
    ("api_key", None),                    # the app's own key: nothing names an outside service
    ("client_secret", None),              # no OAuth/OIDC or outside service in the name
    ("user_sessions_key", None),
])
def test_kind_inferred_from_the_name(name, kind):
    got = core.infer_kind(name)
    assert (got[0] if got else None) == kind


def test_inference_table_is_data_and_every_rule_is_documented():
    assert all(kind in core.KINDS and why for _, kind, why in core.NAME_KIND_RULES)
    readme = (Path(__file__).resolve().parents[2] / "roles/secrets/README.md").read_text()
    assert "Kinds from names" in readme and "`username`" in readme


def test_registry_kind_wins_over_the_name(tmp_path):
    project = compose_project(tmp_path, ["slack_webhook", "postgres_user", "grafana_oauth_client_secret"])
    reg = {"slack_webhook": {"kind": "password"}, "postgres_user": {"kind": "hex"},
           "grafana_oauth_client_secret": {"owner": 1000}}     # no kind: still inferred
    specs = {s.name: s for s in core.build_specs(project, reg, str(tmp_path / "secrets"))}
    assert (specs["slack_webhook"].kind, specs["slack_webhook"].inferred) == ("password", None)
    assert specs["postgres_user"].kind == "hex"
    assert specs["grafana_oauth_client_secret"].kind == "provided"
    assert specs["grafana_oauth_client_secret"].inferred


def test_default_kind_applies_when_the_name_says_nothing(tmp_path):
    project = compose_project(tmp_path, ["postgres_password", "slack_webhook"])
    specs = {s.name: s for s in core.build_specs(project, {}, str(tmp_path / "secrets"), default_kind="hex")}
    assert specs["postgres_password"].kind == "hex" and specs["slack_webhook"].kind == "provided"


def test_inferred_provided_gets_a_placeholder_and_a_warning_naming_file_and_readers_every_run(tmp_path):
    d = tmp_path / "secrets"
    project = compose_project(tmp_path, ["slack_webhook", "smtp_password", "postgres_password"], {
        "alertmanager": {"image": "prom/alertmanager:v0.27.0"}, "app": {"image": "example/app:1", "user": "1000"}})
    specs = core.build_specs(project, {}, str(d))
    for run_no in (1, 2, 3):
        p = plan_and_apply(specs, d, project)
        by = {i.spec.name: i for i in p.items}
        assert by["slack_webhook"].action == ("placeholder-written" if run_no == 1 else "ok")
        assert core.is_placeholder((d / "slack_webhook").read_bytes())
        pending = {x["name"]: x for x in p.provided_pending()}
        assert set(pending) == {"slack_webhook", "smtp_password"}
        assert pending["slack_webhook"]["path"] == str(d / "slack_webhook")
        assert pending["slack_webhook"]["consumers"] == ["alertmanager", "app"]
        assert pending["slack_webhook"]["inferred"] and "webhook URL" in pending["slack_webhook"]["hint"]
        warnings = [w for w in p.warnings if "placeholder" in w]
        assert len(warnings) == 2
        hook = next(w for w in warnings if w.startswith("slack_webhook"))
        assert str(d / "slack_webhook") in hook and "alertmanager, app fail" in hook and "A person" in hook
        assert "inferred from the name" in hook
        # The internal password is generated as usual.
        assert by["postgres_password"].action == ("generated" if run_no == 1 else "ok")
    assert not core.plan(specs, str(d), project).changed
    # A person supplies it: no warning, nothing pending, never overwritten.
    (d / "slack_webhook").chmod(0o600)
    (d / "slack_webhook").write_bytes(b"https://hooks.slack.com/services/T0/B0/x")
    p = plan_and_apply(specs, d, project)
    assert [x["name"] for x in p.provided_pending()] == ["smtp_password"]
    assert not any(w.startswith("slack_webhook") for w in p.warnings)
    assert (d / "slack_webhook").read_bytes() == b"https://hooks.slack.com/services/T0/B0/x"


def test_pending_provided_lists_what_a_person_must_supply_without_planning(tmp_path):
    d = tmp_path / "secrets"
    project = compose_project(tmp_path, ["slack_webhook", "smtp_password", "db_password"])
    specs = core.build_specs(project, {}, str(d))
    assert [s.name for s in core.pending_provided(specs)] == ["slack_webhook", "smtp_password"]
    assert [s.name for s in core.pending_provided(specs, seed={"smtp_password": "x"})] == ["slack_webhook"]
    plan_and_apply(specs, d, project)                   # placeholders: still pending
    assert [s.name for s in core.pending_provided(specs)] == ["slack_webhook", "smtp_password"]
    (d / "smtp_password").chmod(0o600)
    (d / "smtp_password").write_bytes(b"relay-app-password")
    assert [s.name for s in core.pending_provided(specs)] == ["slack_webhook"]


def test_inferred_provided_can_be_made_required_by_the_registry(tmp_path):
    project = compose_project(tmp_path, ["slack_webhook"])
    specs = core.build_specs(project, {"slack_webhook": {"optional": False}}, str(tmp_path / "secrets"))
    before = snapshot(tmp_path)
    with pytest.raises(HyHomeError, match=r"(?s)1 provided secret\(s\) missing.*slack_webhook"):
        core.plan(specs, str(tmp_path / "secrets"), project)
    assert snapshot(tmp_path) == before


def test_placeholder_of_a_secret_now_declared_generated_gets_a_real_value(tmp_path):
    """An earlier run inferred provided; the registry now says the stack generates it."""
    d = tmp_path / "secrets"
    project = compose_project(tmp_path, ["grafana_oauth_client_secret"])
    plan_and_apply(core.build_specs(project, {}, str(d)), d, project)
    assert core.is_placeholder((d / "grafana_oauth_client_secret").read_bytes())
    specs = core.build_specs(project, {"grafana_oauth_client_secret": {"kind": "password"}}, str(d))
    p = plan_and_apply(specs, d, project)
    value = (d / "grafana_oauth_client_secret").read_bytes()
    assert p.items[0].action == "generated" and not core.is_placeholder(value) and len(value) == 32
    assert "held a placeholder" in " ".join(p.items[0].notes)
    assert p.recreate_services() == ["app"] and not p.provided_pending()
    assert not core.plan(specs, str(d), project).changed


# --------------------------------------------------------------------------------------------
# username kind
# --------------------------------------------------------------------------------------------

def test_username_kind_is_readable_and_from_the_csprng(monkeypatch):
    import random

    values = {core.readable_username() for _ in range(200)}
    assert all(USERNAME.fullmatch(v) for v in values)
    assert len(values) > 150           # random, not a fixed name
    assert isinstance(core._rng, random.SystemRandom)
    calls = []

    class Fake:
        def choice(self, seq):
            calls.append(seq)
            return seq[0]

    monkeypatch.setattr(core, "_rng", Fake())
    assert core.readable_username() == "hyhome_bababa00" and calls


def test_inferred_username_is_generated_persistent_and_never_overwritten(tmp_path):
    d = tmp_path / "secrets"
    project = compose_project(tmp_path, ["postgres_user", "postgres_password"],
                              {"postgres": {"image": "postgres:16"}})
    specs = {s.name: s for s in core.build_specs(project, {}, str(d))}
    assert specs["postgres_user"].kind == "username" and specs["postgres_user"].persistent
    p = plan_and_apply(list(specs.values()), d, project)
    user = (d / "postgres_user").read_bytes()
    assert USERNAME.fullmatch(user.decode())
    assert len((d / "postgres_password").read_bytes()) == 32
    report = next(i.report() for i in p.items if i.spec.name == "postgres_user")
    assert report["kind_inferred"].startswith("an account name")
    # postgres (no user:) runs as 999 per the image table: it can read both files.
    st = os.stat(d / "postgres_user")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (999, 999, 0o400)
    # A person's own choice stays.
    (d / "postgres_user").chmod(0o600)
    (d / "postgres_user").write_bytes(b"app")
    plan_and_apply(list(specs.values()), d, project)
    assert (d / "postgres_user").read_bytes() == b"app"


def test_username_kind_from_the_registry_or_the_default_kind(tmp_path):
    s = core.build_specs(None, {"svc_account": {"kind": "username", "file": "a"}}, str(tmp_path / "secrets"))[0]
    assert s.kind == "username" and s.length is None and USERNAME.fullmatch(core.generate_value(s).decode())
    s = core.build_specs(None, {"x": {"file": "x"}}, str(tmp_path / "secrets"), default_kind="username")[0]
    assert s.kind == "username"
    with pytest.raises(HyHomeError, match="charset applies to kind password only, not username"):
        core.build_specs(None, {"x": {"kind": "username", "charset": "abc", "file": "x"}}, str(tmp_path / "s"))


# --------------------------------------------------------------------------------------------
# owners from the identity resolver
# --------------------------------------------------------------------------------------------

def test_a_reader_whose_user_is_known_owns_a_file_shared_with_an_unresolved_one(tmp_path):
    project = compose_project(tmp_path, ["valkey_password"], {
        "redis-exporter": {"image": "example.invalid/redis-exporter:1"},      # nothing knows its user
        "valkey": {"image": "valkey/valkey:8", "user": "999:999"}})
    p = plan_and_apply(core.build_specs(project, {}, str(tmp_path / "secrets")), tmp_path / "secrets", project)
    st = os.stat(tmp_path / "secrets/valkey_password")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (999, 999, 0o440)
    assert [(r.service, r.source) for r in p.items[0].readers] == [("valkey", "user"), ("redis-exporter", "unresolved")]
    assert any("redis-exporter" in w and "image_users" in w for w in p.warnings)


# --------------------------------------------------------------------------------------------
# data directories vs committed configuration
# --------------------------------------------------------------------------------------------

def _git_commit(path: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=path, check=True)
    mounts.clear_cache()


def _grafana_project(root: Path) -> Project:
    prov = root / "grafana" / "provisioning"
    (prov / "dashboards").mkdir(parents=True)
    (prov / "dashboards" / "home.json").write_text("{}")
    (root / "data" / "grafana").mkdir(parents=True)
    (root / "data" / "grafana" / ".gitkeep").write_text("")
    return compose_project(root, ["grafana_admin_password"], {"grafana": {
        "image": "grafana/grafana:11.2.0",
        "mounts": [Mount(type="bind", target="/etc/grafana/provisioning", read_only=False, host_path=str(prov)),
                   Mount(type="bind", target="/var/lib/grafana", read_only=False,
                         host_path=str(root / "data" / "grafana")),
                   Mount(type="bind", target="/rootfs", read_only=True, host_path="/")]}})


def test_fresh_clone_with_committed_config_mounted_writable_is_not_refused(tmp_path):
    root = tmp_path / "clone"
    root.mkdir()
    project = _grafana_project(root)
    _git_commit(root)
    specs = core.build_specs(project, {}, str(root / "secrets"))
    assert specs[0].persistent
    assert core.data_held_by_consumers(specs[0], project) == []
    p = plan_and_apply(specs, root / "secrets", project)
    assert p.items[0].action == "generated"
    st = os.stat(root / "secrets" / "grafana_admin_password")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (472, 0o400)


def test_lost_secret_is_refused_only_for_real_data(tmp_path):
    root = tmp_path / "clone"
    root.mkdir()
    project = _grafana_project(root)
    _git_commit(root)
    specs = core.build_specs(project, {}, str(root / "secrets"))
    (root / "data" / "grafana" / "grafana.db").write_bytes(b"sqlite")
    before = snapshot(root)
    with pytest.raises(HyHomeError) as err:
        core.plan(specs, str(root / "secrets"), project)
    assert f"grafana:{root / 'data' / 'grafana'}" in err.value.msg
    assert "provisioning" not in err.value.msg and "rootfs" not in err.value.msg
    assert snapshot(root) == before


def test_untracked_writable_dir_counts_as_data_and_declared_config_does_not(tmp_path):
    project = _grafana_project(tmp_path)     # no git: nothing is tracked
    spec = core.build_specs(project, {}, str(tmp_path / "secrets"))[0]
    assert core.data_held_by_consumers(spec, project) == [f"grafana:{tmp_path / 'grafana' / 'provisioning'}"]
    project.services["grafana"].extensions = {"x-hyhome": {"config": ["/etc/grafana/provisioning"]}}
    assert core.data_held_by_consumers(spec, project) == []


# --------------------------------------------------------------------------------------------
# hostile names
# --------------------------------------------------------------------------------------------

BAD_NAMES = ["../escape", "a/b", "..", "x..y", "/etc/passwd", "", ".hidden", "-flag", "a b", "a\nb", "ä", "x" * 201]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_hostile_registry_name_is_refused(tmp_path, name):
    before = snapshot(tmp_path)
    with pytest.raises(HyHomeError) as err:
        core.build_specs(None, {name: {"file": "f"}}, str(tmp_path / "secrets"))
    assert "is not allowed" in err.value.msg and "no '/'" in err.value.msg and "secrets registry" in err.value.msg
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["../../controller", "a/b", "..x"])
def test_hostile_compose_secret_name_is_refused(tmp_path, name):
    project = compose_project(tmp_path, [])
    project.secrets = {name: ComposeSecret(name, str(tmp_path / "secrets" / "f"))}
    with pytest.raises(HyHomeError, match=r"compose secrets:.*is not allowed"):
        core.build_specs(project, {}, str(tmp_path / "secrets"))


def test_non_string_names_and_sources_are_refused(tmp_path):
    with pytest.raises(HyHomeError, match="is not allowed"):
        core.build_specs(None, {123: {"file": "f"}}, str(tmp_path / "secrets"))
    reg = {"pw": {"file": "pw"}, "ht": {"kind": "htpasswd", "source": "../pw", "file": "ht"}}
    with pytest.raises(HyHomeError, match=r"source of ht.*is not allowed"):
        core.build_specs(None, reg, str(tmp_path / "secrets"))


@pytest.mark.parametrize("name", ["db_password", "app.env.key", "A1-x_y", "x" * 200])
def test_ordinary_names_pass(name):
    assert core.validate_name(name, "test") == name


# --------------------------------------------------------------------------------------------
# the module
# --------------------------------------------------------------------------------------------

COMPOSE = """
name: realworld-secrets
services:
  grafana:
    image: grafana/grafana:11.2.0
    secrets: [grafana_admin_user, grafana_admin_password, slack_webhook]
  worker:
    image: example.invalid/hyhome/worker:1
    secrets: [slack_webhook]
secrets:
  grafana_admin_user: {file: ./secrets/grafana_admin_user}
  grafana_admin_password: {file: ./secrets/grafana_admin_password}
  slack_webhook: {file: ./secrets/slack_webhook}
"""


@pytest.mark.docker
def test_module_shows_compose_error_line_not_its_warnings(tmp_path):
    from ansible_collections.hyhome.bootstrap.plugins.modules import secret_files

    (tmp_path / "compose.yaml").write_text(
        "services:\n  kafka:\n    image: apache/kafka:3.8.0\n    environment:\n      TZ: ${TZ}\n"
        "      CLUSTER_ID: ${KAFKA_CLUSTER_ID:?set KAFKA_CLUSTER_ID}\n    secrets: [kafka_password]\n"
        "secrets:\n  kafka_password: {file: ./secrets/kafka_password}\n")
    module = FakeModule(check_mode=True, project_dir=str(tmp_path))
    secret_files.run(module)
    (warning,) = [w for w in module.warnings if w.startswith("docker compose config failed")]
    assert warning.startswith("docker compose config failed, secrets were read from the raw compose files: error "
                              "while interpolating services.kafka.environment.CLUSTER_ID: required variable "
                              "KAFKA_CLUSTER_ID is missing a value")
    assert "level=warning" not in warning and "TZ" not in warning


@pytest.mark.docker
def test_module_reports_readers_pending_provided_and_unresolved_identities(tmp_path):
    from ansible_collections.hyhome.bootstrap.plugins.modules import secret_files

    (tmp_path / "compose.yaml").write_text(COMPOSE)
    check = secret_files.run(FakeModule(check_mode=True, project_dir=str(tmp_path)))
    assert check["changed"] and not (tmp_path / "secrets").exists()
    assert [x["name"] for x in check["provided_pending"]] == ["slack_webhook"]
    module = FakeModule(project_dir=str(tmp_path))
    result = secret_files.run(module)
    by = {s["name"]: s for s in result["secrets"]}
    assert by["grafana_admin_password"]["readers"] == [
        {"service": "grafana", "uid": 472, "gid": 0, "source": "image-table"}]
    assert (by["grafana_admin_password"]["owner"], by["grafana_admin_password"]["mode"]) == (472, "0400")
    assert by["grafana_admin_user"]["kind"] == "username"
    assert USERNAME.fullmatch((tmp_path / "secrets/grafana_admin_user").read_text())
    assert result["provided_pending"][0]["consumers"] == ["grafana", "worker"]
    # worker's image is unknown: the run says so, with the fix.
    assert any("worker" in w and "image_users" in w for w in module.warnings)
    assert any(w.startswith("slack_webhook holds a placeholder") for w in module.warnings)
    # The same image_users table data_dirs reads resolves it; the two readers share the file through a group.
    again = FakeModule(project_dir=str(tmp_path), image_users={"hyhome/worker": "1500:1500"})
    result = secret_files.run(again)
    hook = next(s for s in result["secrets"] if s["name"] == "slack_webhook")
    assert {r["service"]: r["uid"] for r in hook["readers"]} == {"grafana": 472, "worker": 1500}
    assert (hook["owner"], hook["group"], hook["mode"]) == (472, 0, "0440")
    assert "worker must run with group_add: ['0']" in " ".join(hook["notes"])
    assert not any("image_users" in w for w in again.warnings)
    assert any(w.startswith("slack_webhook holds a placeholder") for w in again.warnings)
    final = FakeModule(project_dir=str(tmp_path), image_users={"hyhome/worker": "1500:1500"})
    assert not secret_files.run(final)["changed"]
