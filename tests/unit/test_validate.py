"""Validate (AC-2): exact findings on fixture projects with planted defects, rules on hand-built models."""

from __future__ import annotations

import json
import os

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
    EnvRef,
    Location,
    Mount,
    Project,
    Secret,
    SecretRef,
    Service,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_validate import (
    RULES,
    explain_config_error,
    lint_files,
    main,
    render_table,
    run,
    validate,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

FIXTURES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "fixtures", "validate"))


def fixture(name: str) -> str:
    return os.path.join(FIXTURES, name)


def summary_of(findings):
    """(severity or 'accepted', rule, service, file relative to the fixtures dir, line) per finding."""
    return [("accepted" if f.accepted else f.severity, f.rule, f.service,
             os.path.relpath(f.file, FIXTURES) if f.file else None, f.line) for f in findings]


# ---------------------------------------------------------------- fixture projects (real compose config)

@pytest.mark.docker
def test_clean_fixture_has_no_findings():
    project, findings, report = run(fixture("clean"))
    assert project.source == "config"
    assert findings == []
    assert report["ok"] and report["summary"] == {"error": 0, "warning": 0, "info": 0, "accepted": 0}
    assert report["files"] == ["compose.yaml", "alerting/compose.yaml"]


@pytest.mark.docker
def test_defects_fixture_exact_findings():
    _, findings, report = run(fixture("defects"))
    c, m = "defects/compose.yaml", "defects/monitoring/compose.yaml"
    assert summary_of(findings) == [
        ("error", "bind-missing-file", "api", c, 6),
        ("error", "secret-undeclared", "api", c, 6),
        ("error", "secret-undeclared", "api", c, 6),
        ("error", "security-writable-bind", "api", c, 6),
        ("error", "interpolation-trap", "api", c, 13),
        ("error", "interpolation-trap", "api", c, 15),
        ("error", "security-cap-drop-all", "tooling", c, 23),
        ("error", "security-docker-socket", "tooling", c, 23),
        ("error", "security-healthcheck", "tooling", c, 23),
        ("error", "security-host-namespace", "tooling", c, 23),
        ("error", "security-host-namespace", "tooling", c, 23),
        ("error", "security-host-namespace", "tooling", c, 23),
        ("error", "security-memory-limit", "tooling", c, 23),
        ("error", "security-no-new-privileges", "tooling", c, 23),
        ("error", "security-non-root", "tooling", c, 23),
        ("error", "security-privileged", "tooling", c, 23),
        ("error", "security-writable-bind", "tooling", c, 23),
        ("accepted", "security-docker-socket", "proxy", c, 32),
        ("error", "security-memory-limit", "proxy", c, 32),
        ("accepted", "security-non-root", "proxy", c, 32),
        ("error", "secret-duplicate", None, c, 57),
        ("error", "secret-alias", "alertmanager", m, 13),
        ("error", "secret-alias", "alertmanager", m, 15),
        ("warning", "x-hyhome", "proxy", c, 32),
        ("warning", "secret-unused", None, c, 51),
        ("warning", "secret-unused", None, c, 53),
        ("warning", "secret-unused", None, c, 55),
        ("warning", "secret-unused", None, c, 57),
        ("info", "x-hyhome", "proxy", c, 32),
        ("info", "x-hyhome", "proxy", c, 32),
    ]
    messages = [f.message for f in findings]
    assert "reads /run/secrets/api_token but does not declare secret api_token" in messages
    assert "reads /run/secrets/db_password but does not declare secret db_password" in messages
    assert any(m.startswith("$HOSTNAME in command is replaced by compose") for m in messages)
    assert any(m.startswith("${API_PORT} in healthcheck is replaced by compose") for m in messages)
    assert "secret alertmanager_smtp_password is a second name for the shared secret smtp_password " \
           "(file smtp.txt)" in messages
    assert "secret am_slack is a second name for the shared secret slack_webhook (file slack_webhook.txt)" in messages
    assert {f.message for f in findings if f.rule == "secret-unused"} == {
        f"registry secret {n} is used by no service"
        for n in ("slack_webhook", "api_token", "legacy_token", "smtp_password_copy")}
    assert {f.message for f in findings if f.rule == "x-hyhome"} == {
        "exception for security-memory-limit has no written reason, so it is not applied",
        "exception for security-bogus, which is not a validate rule (ignored here)",
        "exception for security-privileged matches no finding",
    }
    bind = next(f for f in findings if f.rule == "bind-missing-file")
    assert bind.hint == "copy api.yml.example to api.yml and edit it"
    trap = next(f for f in findings if f.rule == "interpolation-trap")
    assert trap.hint == "write $$HOSTNAME if the container should expand it, or set HOSTNAME in .env"
    accepted = {f.rule: f.accepted for f in findings if f.accepted}
    assert accepted == {"security-docker-socket": "reads container labels for routing; the socket is mounted read-only",
                        "security-non-root": "binds port 80 inside the container"}
    # the compose warnings for HOSTNAME/API_PORT are the traps already reported: not repeated
    assert not [f for f in findings if f.rule == "compose-warning"]
    assert report["summary"] == {"error": 21, "warning": 5, "info": 2, "accepted": 2} and not report["ok"]


@pytest.mark.docker
def test_defects_report_is_deterministic():
    first = run(fixture("defects"))[2]
    second = run(fixture("defects"))[2]
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


@pytest.mark.docker
def test_undefined_secret_config_error_and_raw_checks():
    project, findings, _ = run(fixture("unregistered"))
    assert project.source == "raw"
    assert summary_of(findings) == [
        ("error", "compose-config", None, "unregistered/compose.yaml", None),
        ("error", "secret-unregistered", "app", "unregistered/compose.yaml", 3),
    ]
    assert findings[0].message == (
        'docker compose config failed: service "app" refers to undefined secret ghost: invalid compose project'
        " -- service app declares secret ghost but no compose file registers it. Add `ghost: {file: "
        "./secrets/ghost}` under the top-level secrets: of the root compose file, or fix the name.")


@pytest.mark.docker
def test_root_and_include_conflict_is_explained():
    _, findings, _ = run(fixture("conflict"))
    assert summary_of(findings) == [("error", "compose-config", None, "conflict/compose.yaml", None)]
    assert findings[0].message.startswith(
        "docker compose config failed: secrets.smtp_password conflicts with imported resource -- secrets "
        "'smtp_password' is defined both in the root file and in a file it includes")


@pytest.mark.docker
def test_yaml_syntax_error_has_file_and_line():
    _, findings, _ = run(fixture("badyaml"))
    assert summary_of(findings) == [
        ("error", "yaml-syntax", None, "badyaml/broken-worker.yml", 4),
        ("error", "compose-config", None, "badyaml/compose.yaml", None),
    ]
    assert findings[0].message == ("YAML syntax error: did not find expected ',' or ']' "
                                   "(while parsing a flow sequence opened on line 4)")


@pytest.mark.docker
def test_missing_env_file_is_explained():
    _, findings, _ = run(fixture("missingenv"))
    assert summary_of(findings) == [("error", "compose-config", None, "missingenv/compose.yaml", None)]
    assert "a service's env_file: names " in findings[0].message


@pytest.mark.docker
def test_yamllint_findings():
    _, findings, _ = run(fixture("lint"))
    assert summary_of(findings) == [
        ("error", "yaml-lint", None, "lint/broken-lint.yml", 5),
        ("error", "compose-config", None, "lint/compose.yaml", None),
        ("warning", "yaml-lint", None, "lint/broken-lint.yml", 3),
        ("warning", "yaml-lint", None, "lint/broken-lint.yml", 12),
    ]
    assert [f.message for f in findings if f.rule == "yaml-lint"] == [
        'duplication of key "user" in mapping (key-duplicates)',
        "trailing spaces (trailing-spaces)",
        "too many blank lines (2 > 0) (empty-lines)",
    ]
    # without yamllint only the compose error remains
    _, findings, _ = run(fixture("lint"), yamllint=False)
    assert [f.rule for f in findings] == ["compose-config"]


# ---------------------------------------------------------------- bad input: one clear message each

def test_missing_directory():
    with pytest.raises(HyHomeError, match=r"^project directory .*/nope does not exist$"):
        run(fixture("nope"))


def test_not_a_compose_project():
    with pytest.raises(HyHomeError, match=r"is not a compose project: none of compose\.yaml"):
        run(FIXTURES)


def test_docker_binary_missing():
    with pytest.raises(HyHomeError, match=r"^docker binary 'no-docker-here' not found in PATH"):
        run(fixture("clean"), docker="no-docker-here")


def test_cli_bad_input_prints_one_line_and_exits_2(capsys):
    assert main([fixture("nope")]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.strip().splitlines() == [f"validate: project directory {fixture('nope')} does not exist"]


# ---------------------------------------------------------------- command line

@pytest.mark.docker
def test_cli_exit_codes_and_json(tmp_path, capsys):
    report_path = tmp_path / "report.json"
    assert main([fixture("defects"), "--json", str(report_path)]) == 1
    table = capsys.readouterr().out
    assert "secret-alias" in table and table.rstrip().endswith("-- FAILED")
    report = json.loads(report_path.read_text())
    assert report["summary"]["error"] == 21
    assert report["findings"][0]["file"] == "compose.yaml"
    assert oct(report_path.stat().st_mode & 0o777) == "0o644"
    assert main([fixture("clean")]) == 0
    assert capsys.readouterr().out.strip().endswith("-- OK")


# ---------------------------------------------------------------- rules on hand-built models

def svc(name="s", **kw) -> Service:
    base = {
        "image": "img", "build": None, "user": "1000", "security_opt": ["no-new-privileges:true"],
        "cap_drop": ["ALL"], "healthcheck": {"test": ["CMD", "true"]}, "mem_limit": 1024,
        "location": Location("/p/compose.yaml", 3),
    }
    base.update(kw)
    return Service(name=name, **base)


def project(*services: Service, **kw) -> Project:
    return Project("p", "/p", ["/p/compose.yaml"], services={s.name: s for s in services}, **kw)


def rules(findings):
    return [(f.severity, f.rule, f.service) for f in findings]


def test_compliant_service_has_no_findings():
    assert validate(project(svc())) == []


@pytest.mark.parametrize(("opts", "ok"), [
    (["no-new-privileges:true"], True), (["no-new-privileges=true"], True), (["no-new-privileges"], True),
    (["no-new-privileges:false"], False), ([], False), (["seccomp=unconfined"], False),
])
def test_no_new_privileges_forms(opts, ok):
    found = rules(validate(project(svc(security_opt=opts))))
    assert found == ([] if ok else [("error", "security-no-new-privileges", "s")])


@pytest.mark.parametrize(("user", "expected"), [
    ("1000:1000", []), ("app", []), ("root", [("error", "security-non-root", "s")]),
    ("0:0", [("error", "security-non-root", "s")]), ("root:app", [("error", "security-non-root", "s")]),
    (None, [("warning", "security-non-root", "s")]),
])
def test_root_user_forms(user, expected):
    assert rules(validate(project(svc(user=user)))) == expected


def test_cap_drop_is_case_insensitive():
    assert validate(project(svc(cap_drop=["all"]))) == []


def test_one_shot_sidecar_needs_no_healthcheck_but_others_do():
    init = svc("init", healthcheck=None)
    app = svc("app", depends_on={"init": {"condition": "service_completed_successfully"}})
    lonely = svc("lonely", healthcheck={"disable": True})
    assert rules(validate(project(init, app, lonely))) == [("error", "security-healthcheck", "lonely")]


def test_writable_bind_declared_and_volume_binds():
    mounts = [
        Mount("bind", "/data", False, "/srv/data"),
        Mount("bind", "/cfg", True, "/srv/cfg"),
        Mount("volume", "/bound", False, "/srv/bound", "bound", False),
        Mount("volume", "/named", False, None, "named", False),
    ]
    found = validate(project(svc(mounts=mounts, extensions={"x-hyhome": {"writable": ["/data/"]}})))
    assert [(f.rule, f.message) for f in found] == [
        ("security-writable-bind", "bind mount /bound is writable but not declared writable")]


def test_writable_declaration_must_name_a_bind_mount():
    found = validate(project(svc(extensions={"x-hyhome": {"writable": ["/nowhere"]}})))
    assert [(f.severity, f.rule, f.message) for f in found] == [
        ("warning", "x-hyhome", "x-hyhome.writable lists /nowhere, which is not a bind mount of this service")]


def test_exception_key_may_omit_the_security_prefix():
    exceptions = {"memory-limit": "JVM sizes itself", "metrics": "x"}
    s = svc(mem_limit=None, extensions={"x-hyhome": {"exceptions": exceptions}})
    found = validate(project(s))
    assert [(f.severity, f.rule, f.accepted) for f in found] == [
        ("error", "security-memory-limit", "JVM sizes itself"),
        ("info", "x-hyhome", None),
    ]


def test_bad_x_hyhome_shapes():
    assert [f.message for f in validate(project(svc(extensions={"x-hyhome": ["x"]})))] == [
        "x-hyhome is not a mapping"]
    assert [f.message for f in validate(project(svc(extensions={"x-hyhome": {"exceptions": ["x"]}})))] == [
        "x-hyhome.exceptions is not a mapping of rule id to reason"]
    assert [f.message for f in validate(project(svc(extensions={"x-hyhome": {"writable": "/x"}})))] == [
        "x-hyhome.writable is not a list of container paths"]


def test_exception_accepts_without_silencing():
    s = svc(privileged=True, extensions={"x-hyhome": {"exceptions": {"security-privileged": "needs /dev/kvm"}}})
    found = validate(project(s))
    assert [(f.rule, f.accepted) for f in found] == [("security-privileged", "needs /dev/kvm")]
    report_table = render_table({
        "project": "p", "summary": {"error": 0, "warning": 0, "info": 0, "accepted": 1}, "ok": True,
        "findings": [f.as_dict("/p") for f in found]})
    assert "accepted  security-privileged" in report_table and "accepted: needs /dev/kvm" in report_table


def test_secret_read_through_custom_target_is_declared():
    s = svc(secrets=[SecretRef("db_password", "/run/secrets/pg")], secret_paths_read={"/run/secrets/pg"})
    p = project(s, secrets={"db_password": Secret("db_password", "/p/secrets/db")})
    assert validate(p) == []


def test_secret_undeclared_hint_mentions_registry_when_missing():
    p = project(svc(secret_paths_read={"/run/secrets/x"}), secrets={})
    (f,) = validate(p)
    assert f.hint == "add `secrets: [x]` to service s and `x: {file: ./secrets/x}` to the root secrets: registry"


def test_alias_by_suffix_and_by_file_name_only_when_shared_exists():
    registry = {
        "smtp_password": Secret("smtp_password", "/p/secrets/smtp_password"),
        "alertmanager_smtp_password": Secret("alertmanager_smtp_password", "/p/secrets/am/smtp"),
        "am_hook": Secret("am_hook", "/p/secrets/am/slack_webhook.txt"),  # no slack_webhook registered
        "grafana-smtp_password": Secret("grafana-smtp_password", "/p/secrets/grafana_smtp"),
    }
    refs = [SecretRef(n, f"/run/secrets/{n}") for n in registry]
    found = validate(project(svc("am", secrets=refs), secrets=registry))
    assert sorted((f.rule, f.message.split(" is ")[0]) for f in found) == [
        ("secret-alias", "secret alertmanager_smtp_password"),
        ("secret-alias", "secret grafana-smtp_password"),
    ]


def test_interpolation_trap_rules():
    loc = Location("/p/compose.yaml", 7)
    refs = [
        EnvRef("HOME", False, False, loc, "services.s.command[2]", "s", "$HOME"),
        EnvRef("PORT", True, False, loc, "services.s.healthcheck.test[1]", "s", "${PORT:-80}"),
        EnvRef("USER_FROM_ENV", False, False, loc, "services.s.entrypoint", "s", "${USER_FROM_ENV}"),
        EnvRef("NEED", False, True, loc, "services.s.command[2]", "s", "${NEED:?x}"),
    ]
    p = project(svc(raw_interpolations=refs), env_file_vars=["USER_FROM_ENV"])
    assert [(f.rule, f.line, f.message.split(" is ")[0]) for f in validate(p)] == [
        ("interpolation-trap", 7, "$HOME in command")]


def test_bind_missing_file_heuristics(tmp_path):
    (tmp_path / "app.conf.example").write_text("x")
    (tmp_path / "made-by-docker.yml").mkdir()
    (tmp_path / "made-by-docker.yml.example").write_text("x")
    mounts = [
        Mount("bind", "/etc/app.conf", True, str(tmp_path / "app.conf")),          # missing, example exists
        Mount("bind", "/etc/x.json", True, str(tmp_path / "x.json")),               # missing, looks like a file
        Mount("bind", "/data", True, str(tmp_path / "data")),                       # missing dir: data_dirs' job
        Mount("bind", "/etc/conf.d", True, str(tmp_path / "conf.d")),               # .d is a directory
        Mount("bind", "/etc/m.yml", True, str(tmp_path / "made-by-docker.yml")),   # dir Docker made for a file
    ]
    found = validate(project(svc(mounts=mounts)))
    assert [(f.rule, f.hint) for f in found] == [
        ("bind-missing-file", "copy app.conf.example to app.conf and edit it"),
        ("bind-missing-file", "remove the empty directory and copy made-by-docker.yml.example in its place"),
        ("bind-missing-file", "create the file before `docker compose up`"),
    ]  # same service and line: ordered by message (host path)


def test_docker_socket_detected_by_source_or_target():
    mounts = [Mount("bind", "/sock", True, "/run/docker.sock")]
    assert rules(validate(project(svc(mounts=mounts)))) == [("error", "security-docker-socket", "s")]


def test_findings_order_is_stable_and_sorted():
    a = svc("a", privileged=True, mem_limit=None, location=Location("/p/compose.yaml", 10))
    b = svc("b", cap_drop=[], location=Location("/p/compose.yaml", 2))
    found = validate(project(a, b))
    assert rules(found) == [
        ("error", "security-cap-drop-all", "b"),
        ("error", "security-memory-limit", "a"),
        ("error", "security-privileged", "a"),
    ]
    assert found == validate(project(b, a))


@pytest.mark.parametrize(("stderr", "start"), [
    ("services.db conflicts with imported resource", "services 'db' is defined both in the root file"),
    ("env file /x/.env not found: stat /x/.env: no such file or directory", "a service's env_file: names /x/.env"),
    ("error while interpolating services.a.image: required variable IMG is missing a value: set IMG",
     "the compose files require variable IMG (${IMG:?...})"),
    ('service "a" refers to undefined secret nope: invalid compose project', "service a declares secret nope"),
    ('service "a" refers to undefined volume nov: invalid compose project', "service a uses volume nov"),
    ('service "a" depends on undefined service "b": invalid compose project', "service a depends on b"),
    ("validating /x/compose.yaml: services.a Additional property foo is not allowed", "'foo' is not a compose key"),
    ("yaml: line 1: did not find expected key", "a compose file is not valid YAML"),
    ("open /x/nothere/compose.yaml: no such file or directory", "/x/nothere/compose.yaml does not exist"),
])
def test_config_error_explanations(stderr, start):
    assert explain_config_error(stderr).startswith(start)


def test_unknown_config_error_has_no_explanation():
    assert explain_config_error("something new went wrong") is None


def test_every_rule_is_documented():
    assert all(sev in ("error", "warning", "info") and text for sev, text in RULES.values())


def test_lint_uses_project_yamllint_config(tmp_path):
    (tmp_path / "compose.yaml").write_text("services:\n  a:\n    image: x   \n")
    assert [f.message for f in lint_files([str(tmp_path / "compose.yaml")], str(tmp_path))] == [
        "trailing spaces (trailing-spaces)"]
    (tmp_path / ".yamllint").write_text(
        "extends: default\nrules: {trailing-spaces: disable, document-start: disable}\n")
    assert lint_files([str(tmp_path / "compose.yaml")], str(tmp_path)) == []
    (tmp_path / ".yamllint").write_text("rules: [broken\n")
    with pytest.raises(HyHomeError, match="invalid yamllint configuration"):
        lint_files([str(tmp_path / "compose.yaml")], str(tmp_path))


@pytest.mark.docker
def test_entry_script_exit_codes(tmp_path):
    import subprocess

    script = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "validate-docker-compose.sh")
    clean = subprocess.run([script, fixture("clean")], capture_output=True, text=True, check=False)
    assert clean.returncode == 0 and clean.stdout.strip().endswith("-- OK")
    report = tmp_path / "r.json"
    defects = subprocess.run([script, fixture("defects"), "--json", str(report)], capture_output=True, text=True,
                             check=False)
    assert defects.returncode == 1 and json.loads(report.read_text())["summary"]["error"] == 21
    missing = subprocess.run([script, fixture("nope")], capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == f"validate: project directory {fixture('nope')} does not exist"
