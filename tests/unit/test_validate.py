"""Validate (AC-2): exact findings on fixture projects with planted defects, rules on hand-built models."""

from __future__ import annotations

import json
import os

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import compose_model, compose_validate, mounts
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
    EnvRef,
    Location,
    Mount,
    Project,
    Secret,
    SecretRef,
    Service,
    load_raw,
    project_from_raw,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_validate import (
    MAX_SCRIPT_BYTES,
    RULES,
    explain_config_error,
    lint_files,
    literal_credential,
    main,
    offline_identities,
    render_table,
    run,
    validate,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.identity import (
    IdentityResolver,
    LocalImages,
)

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
        ("accepted", "security-docker-socket", "proxy", c, 33),
        ("error", "security-memory-limit", "proxy", c, 33),
        ("accepted", "security-non-root", "proxy", c, 33),
        ("error", "secret-duplicate", None, c, 58),
        ("error", "secret-alias", "alertmanager", m, 13),
        ("error", "secret-alias", "alertmanager", m, 15),
        ("warning", "security-writable-bind", "tooling", c, 23),
        ("warning", "x-hyhome", "proxy", c, 33),
        ("warning", "secret-unused", None, c, 52),
        ("warning", "secret-unused", None, c, 54),
        ("warning", "secret-unused", None, c, 56),
        ("warning", "secret-unused", None, c, 58),
        ("info", "x-hyhome", "proxy", c, 33),
        ("info", "x-hyhome", "proxy", c, 33),
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
    # only the writable *configuration* bind is a finding (a warning); the writable data bind ./data/api is fine
    (writable,) = [f for f in findings if f.rule == "security-writable-bind"]
    assert writable.message.startswith("bind mount /etc/api.example.yml is configuration (a file) mounted writable")
    assert report["summary"] == {"error": 19, "warning": 6, "info": 2, "accepted": 2} and not report["ok"]


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
        ("error", "compose-config", None, "unregistered/compose.yaml", 3),
        ("error", "secret-unregistered", "app", "unregistered/compose.yaml", 3),
    ]
    assert findings[0].message == (
        'docker compose config failed: service "app" refers to undefined secret ghost: invalid compose project'
        " -- service app declares secret ghost but no compose file registers it. Add `ghost: {file: "
        "./secrets/ghost}` under the top-level secrets: of the root compose file, or fix the name.")


@pytest.mark.docker
def test_root_and_include_conflict_is_explained():
    _, findings, _ = run(fixture("conflict"))
    assert summary_of(findings) == [
        ("error", "compose-config", None, "conflict/compose.yaml", 15),
        ("error", "resource-redeclared", None, "conflict/db/compose.yaml", 12),
    ]
    assert findings[0].message.startswith(
        "docker compose config failed: secrets.smtp_password conflicts with imported resource -- secrets "
        "'smtp_password' is defined both in the root file and in a file it includes")
    assert findings[1].message.startswith("secret smtp_password is declared in compose.yaml:15 and again here")


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
    assert report["summary"]["error"] == 19
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


def fake_docker(tmp_path, users: dict) -> str:
    """A docker CLI whose engine holds ``users`` (image -> Config.User) and logs its calls; any
    command but ``image inspect`` (``create``, ``run``, ``cp``) fails the test."""
    script = tmp_path / "docker"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"USERS = {users!r}\n"
        f"open({str(tmp_path / 'calls')!r}, 'a').write(' '.join(sys.argv[1:3]) + '\\n')\n"
        "assert sys.argv[1:3] == ['image', 'inspect'], sys.argv\n"
        "missing = False\n"
        "for ref in sys.argv[5:]:\n"
        "    if ref in USERS:\n"
        "        print(json.dumps([ref]) + '\\t[]\\t' + json.dumps(USERS[ref]))\n"
        "    else:\n"
        "        missing = True\n"
        "        print('Error: No such image: ' + ref, file=sys.stderr)\n"
        "sys.exit(1 if missing else 0)\n", encoding="utf-8")
    script.chmod(0o755)
    return str(script)


def non_root(image, user=None, identities=None):
    found = validate(project(svc(image=image, user=user)), identities=identities)
    return [(f.severity, f.message, f.hint) for f in found if f.rule == "security-non-root"]


@pytest.mark.parametrize("image", [
    "grafana/grafana:11.2.0", "grafana/loki:3.1.1", "docker.io/library/postgres:16", "quay.io/prometheus/prometheus:v2",
    "opensearchproject/opensearch:2.16.0", "zalando/spilo-16:3.3-p1",
])
def test_no_user_but_the_image_is_known_to_run_non_root(image):
    """The built-in table of the identity resolver knows these images' users: no finding."""
    assert non_root(image) == []


def test_no_user_and_the_image_is_known_to_run_as_root():
    ((severity, message, hint),) = non_root("traefik:v3.1")
    assert severity == "warning"
    assert message == ("no user: declared and image traefik:v3.1 runs as root (the built-in image table: "
                       "traefik -> 0:0)")
    assert "declare an exception with the reason" in hint


def test_no_user_and_an_unknown_image_says_so_with_the_fix():
    ((severity, message, hint),) = non_root("example/unknown:1")
    assert severity == "warning"
    assert message.startswith("no user: declared, and which user its image runs as could not be determined (image "
                              "example/unknown:1 is not on this engine and not in the built-in table)")
    assert "user:" in hint and "hyhome_image_users" in hint and "--image-user" in hint
    # hyhome_image_users answers it, like it does for secrets and data_dirs
    assert non_root("example/unknown:1", identities=offline_identities({"example/unknown": "1500:1500"})) == []
    assert len(non_root("example/unknown:1", identities=offline_identities({"example/unknown": "0"}))) == 1


def test_no_user_and_no_image():
    ((_, message, _),) = non_root(None)
    assert "could not be determined (it has no image and no user:)" in message


def test_present_image_config_user_answers_without_a_container(tmp_path):
    users = {"example/app:1": "1000:1000", "example/named:1": "app", "example/bare:1": "",
             "example/rootful:1": "root", "traefik:v3.1": "65532"}
    docker = fake_docker(tmp_path, users)

    def check(image):
        return non_root(image, identities=IdentityResolver(images=LocalImages([image], docker_cli=docker)))

    assert check("example/app:1") == []
    assert check("traefik:v3.1") == []                 # Config.User beats the table's root
    ((severity, message, _),) = check("example/bare:1")
    assert severity == "warning" and message.endswith("runs as root (its Config.User: image example/bare:1 sets no "
                                                      "USER: it runs as root)")
    assert check("example/rootful:1")[0][1].startswith("no user: declared and image example/rootful:1 runs as root")
    # A user name needs the image's /etc/passwd (a container): validate does not look, it says it does not know.
    ((_, message, _),) = check("example/named:1")
    assert "could not be determined" in message and "runs as user 'app'" in message
    assert (tmp_path / "calls").read_text().splitlines() == ["image inspect"] * 5   # one per resolver, no create


def test_declared_user_is_the_answer_whatever_the_image():
    assert non_root("grafana/grafana:11.2.0", user="root")[0][0] == "error"
    assert non_root("traefik:v3.1", user="1000:1000") == []
    assert non_root("example/unknown:1", user="app") == []   # a name: non-root, not looked up


def test_bad_image_users_entry_is_a_finding_not_a_crash():
    ((_, message, _),) = non_root("example/unknown:1", identities=offline_identities({"example/unknown": "app"}))
    assert "could not be determined" in message and "must be numeric" in message


def test_exception_accepts_a_known_root_image():
    s = svc("proxy", image="traefik:v3.1", user=None,
            extensions={"x-hyhome": {"exceptions": {"non-root": "binds port 80"}}})
    (f,) = validate(project(s))
    assert (f.rule, f.accepted) == ("security-non-root", "binds port 80")


@pytest.mark.docker
def test_run_reads_present_images_with_one_inspect_and_the_raw_files_once(tmp_path, monkeypatch):
    """hyhome/busybox:local is on the engine and sets no USER: root, known from its Config.User;
    the table answers for grafana; the project's files are read once."""
    (tmp_path / "compose.yaml").write_text(
        "services:\n"
        "  box:\n    image: hyhome/busybox:local\n"
        "  graf:\n    image: grafana/grafana:11.2.0\n", encoding="utf-8")
    raw_reads = []
    real_load_raw = compose_model.load_raw

    def counting_load_raw(*args, **kwargs):
        raw_reads.append(args)
        return real_load_raw(*args, **kwargs)

    monkeypatch.setattr(compose_model, "load_raw", counting_load_raw)
    monkeypatch.setattr(compose_validate, "load_raw", counting_load_raw)
    inspects = []
    real_load = LocalImages._load

    def counting_load(self):
        inspects.append(list(self.refs))
        return real_load(self)

    monkeypatch.setattr(LocalImages, "_load", counting_load)
    _, findings, _ = run(str(tmp_path), yamllint=False)
    assert len(raw_reads) == 1
    assert inspects == [["grafana/grafana:11.2.0", "hyhome/busybox:local"]]
    ((service, message),) = [(f.service, f.message) for f in findings if f.rule == "security-non-root"]
    assert service == "box" and "its Config.User" in message
    # without the engine lookup the busybox image is unknown
    _, findings, _ = run(str(tmp_path), yamllint=False, inspect_images=False)
    assert next(f.message for f in findings if f.rule == "security-non-root").endswith("it may be root")


def test_cli_image_user_option(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake_run(project_dir, **kwargs):
        seen.update(kwargs)
        raise HyHomeError("stop here")

    monkeypatch.setattr(compose_validate, "run", fake_run)
    assert main([str(tmp_path), "--image-user", "myorg/worker=1500:1500", "--image-user", " a/b = 7 "]) == 2
    assert seen["image_users"] == {"myorg/worker": "1500:1500", "a/b": "7"}
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--image-user", "myorg/worker"])
    assert "REPOSITORY=UID[:GID]" in capsys.readouterr().err


def test_cap_drop_is_case_insensitive():
    assert validate(project(svc(cap_drop=["all"]))) == []


def test_one_shot_sidecar_needs_no_healthcheck_but_others_do():
    init = svc("init", healthcheck=None)
    app = svc("app", depends_on={"init": {"condition": "service_completed_successfully"}})
    lonely = svc("lonely", healthcheck={"disable": True})
    assert rules(validate(project(init, app, lonely))) == [("error", "security-healthcheck", "lonely")]


def test_only_writable_config_binds_are_a_finding(tmp_path):
    """A writable bind of configuration (a file, a git-tracked directory, x-hyhome.config) is a warning;
    writable data directories, declared writable targets, read-only and volume mounts are fine."""
    import subprocess

    root = tmp_path / "p"
    (root / "conf.d").mkdir(parents=True)
    (root / "conf.d" / "a.conf").write_text("x\n")
    (root / "app.ini").write_text("x\n")
    (root / "data").mkdir()
    (root / "data" / ".gitkeep").write_text("")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    mounts.clear_cache()
    r = str(root)
    binds = [
        Mount("bind", "/etc/app/conf.d", False, f"{r}/conf.d"),        # git-tracked directory: config
        Mount("bind", "/etc/app.ini", False, f"{r}/app.ini"),          # a file: config
        Mount("bind", "/etc/app.ini.ro", True, f"{r}/app.ini"),        # read-only: fine
        Mount("bind", "/data", False, f"{r}/data"),                     # only a placeholder is tracked: data
        Mount("bind", "/srv/new", False, f"{r}/new-data"),              # missing directory: data
        Mount("bind", "/plugins", False, f"{r}/plugins"),               # declared config, below
        Mount("bind", "/var/lib/app", False, f"{r}/conf.d"),            # declared writable: fine
        Mount("volume", "/bound", False, f"{r}/bound", "bound", False),
        Mount("volume", "/named", False, None, "named", False),
    ]
    ext = {"x-hyhome": {"writable": ["/var/lib/app/"], "config": ["/plugins"]}}
    p = Project("p", r, [f"{r}/compose.yaml"], services={"s": svc(mounts=binds, extensions=ext)})
    found = validate(p)
    assert [(f.severity, f.rule, f.message.split(" mounted")[0]) for f in found] == [
        ("warning", "security-writable-bind", "bind mount /etc/app.ini is configuration (a file)"),
        ("warning", "security-writable-bind",
         "bind mount /etc/app/conf.d is configuration (a directory holding git-tracked files)"),
        ("warning", "security-writable-bind", "bind mount /plugins is configuration (listed in x-hyhome.config)"),
    ]
    assert found[0].hint == ("mount it read-only (:ro), or list /etc/app.ini in x-hyhome.writable if the service "
                             "writes there")


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


def test_variables_meant_for_compose_are_not_traps(tmp_path):
    """A variable listed in .env.example (a fresh clone has no .env yet) or used outside command,
    entrypoint and healthcheck is compose's on purpose; only the others are traps."""
    (tmp_path / ".env.example").write_text("FROM_EXAMPLE=x\n")
    loc = Location(str(tmp_path / "compose.yaml"), 4)
    refs = [EnvRef(n, False, False, loc, "services.s.command[1]", "s", "$" + n)
            for n in ("FROM_EXAMPLE", "IN_LABELS", "TRAP")]
    elsewhere = EnvRef("IN_LABELS", False, False, loc, "services.s.labels.host", "s", "${IN_LABELS}")
    p = Project("p", str(tmp_path), [str(tmp_path / "compose.yaml")], env_refs=[*refs, elsewhere],
                env_file=str(tmp_path / ".env"), services={"s": svc(raw_interpolations=refs)})
    assert [(f.rule, f.subject) for f in validate(p)] == [("interpolation-trap", "TRAP")]


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
    assert defects.returncode == 1 and json.loads(report.read_text())["summary"]["error"] == 19
    missing = subprocess.run([script, fixture("nope")], capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == f"validate: project directory {fixture('nope')} does not exist"


# ---------------------------------------------------------------- real-world shapes (issue 9)

@pytest.mark.docker
def test_realworld_fixture_exact_findings():
    """Literal credentials, a Swarm-only secret, a mounted script reading an undeclared secret, one-shot
    jobs without healthcheck (fine), a writable config file (warning) next to a writable data dir (fine)."""
    project, findings, report = run(fixture("realworld"))
    assert project.source == "config"
    c, o, s = "realworld/compose.yaml", "realworld/observability/compose.yaml", "realworld/storage/init/init.sh"
    assert summary_of(findings) == [
        ("error", "credential-literal", "db", c, 19),
        ("error", "credential-literal", "migrate", c, 34),
        ("error", "secret-external-swarm", "migrate", c, 41),
        ("error", "secret-undeclared", "grafana", o, 2),
        ("error", "credential-literal", "grafana", o, 11),
        ("error", "credential-literal", "grafana", o, 12),
        ("error", "secret-undeclared", "minio-init", s, 5),
        ("warning", "compose-warning", None, c, 25),
        ("warning", "security-writable-bind", "grafana", o, 2),
    ]
    by_rule = {}
    for f in findings:
        by_rule.setdefault(f.rule, []).append(f)
    literal = by_rule["credential-literal"]
    assert [f.subject for f in literal] == ["POSTGRES_PASSWORD", "API_KEY", "GF_SECURITY_ADMIN_PASSWORD",
                                            "GF_DATABASE_URL"]
    assert literal[0].message.startswith("environment POSTGRES_PASSWORD is a literal credential: anyone who reads")
    assert literal[0].hint.startswith("move it to a secret: `postgres_password: {file: ./secrets/postgres_password}`")
    assert "(it is a URL with a password in it)" in literal[3].message
    table = render_table(report)
    for value in ("changeme", "0c5f9a27d1e84b6b", "grafana:grafana"):  # names, never values
        assert value not in table and value not in json.dumps(report)
    script = by_rule["secret-undeclared"][1]
    assert script.message == ("script storage/init/init.sh (mounted at /init/init.sh) reads "
                              "/run/secrets/minio_console_token, but service minio-init does not declare secret "
                              "minio_console_token")
    assert script.hint == ("add `secrets: [minio_console_token]` to service minio-init and `minio_console_token: "
                           "{file: ./secrets/minio_console_token}` to the root secrets: registry")
    assert by_rule["secret-undeclared"][0].message == (
        "reads /run/secrets/smtp_password but does not declare secret smtp_password")   # Grafana's $__file{}
    (swarm,) = by_rule["secret-external-swarm"]
    assert 'stops with "unsupported external secret registry_token"' in swarm.message
    assert swarm.hint == ("replace `external: true` with `file: ./secrets/registry_token` (the secrets step creates "
                          "the file)")
    (warning,) = by_rule["compose-warning"]   # compose prints it four times: one finding, at the first reference
    assert warning.message == 'The "LOG_LEVEL" variable is not set. Defaulting to a blank string.'
    assert "security-healthcheck" not in by_rule   # migrate (restart "no"), minio-init (on-failure)


@pytest.mark.docker
def test_redeclared_fixture_names_every_conflict_and_still_checks_raw():
    """Compose fails on the first conflict; validate names all four, shows Compose's error line (not its
    warnings), turns the repeated warning into one finding and runs the other rules on the raw files."""
    project, findings, _ = run(fixture("redeclared"))
    assert project.source == "raw"
    r = "redeclared/"
    assert summary_of(findings) == [
        ("error", "compose-config", None, r + "compose.yaml", 22),
        ("error", "resource-redeclared", None, r + "logs/compose.yaml", 9),
        ("error", "resource-redeclared", None, r + "logs/compose.yaml", 17),
        ("error", "resource-redeclared", None, r + "logs/compose.yaml", 20),
        ("error", "security-memory-limit", "opensearch", r + "search/compose.yaml", 2),
        ("error", "resource-redeclared", None, r + "search/compose.yaml", 15),
        ("warning", "compose-warning", None, r + "compose.yaml", 19),
    ]
    config = findings[0]
    assert config.message.startswith("docker compose config failed: networks.edge conflicts with imported resource -- ")
    assert "level=warning" not in config.message and "DOMAIN" not in config.message
    redeclared = [f for f in findings if f.rule == "resource-redeclared"]
    assert [f.subject for f in redeclared] == ["services.gateway", "volumes.search-data", "secrets.shared_token",
                                               "networks.edge"]
    assert redeclared[0].message == (
        "service gateway is declared in compose.yaml:15 and again here, differently: Compose stops at the first "
        "such conflict (\"services.gateway conflicts with imported resource\") and names only it")
    assert redeclared[1].message.startswith("volume search-data is declared in search/compose.yaml:18 and again")
    assert redeclared[3].hint.startswith("declare network edge once, in the root file")


def test_config_failure_finding_shows_the_error_and_one_finding_per_warning():
    stderr = ('time="t" level=warning msg="The \\"DOMAIN\\" variable is not set. Defaulting to a blank string."\n'
              'time="t" level=warning msg="The \\"DOMAIN\\" variable is not set. Defaulting to a blank string."\n'
              'time="t" level=warning msg="/p/compose.yaml: `version` is obsolete"\n'
              "error while interpolating services.s.image: required variable IMG is missing a value: set IMG\n")
    ref = EnvRef("IMG", False, True, Location("/p/compose.yaml", 9), "services.s.image", "s", "${IMG:?set IMG}")
    p = project(svc(), config_error=stderr, source="raw", env_refs=[ref])
    found = validate(p)
    assert [(f.rule, f.line) for f in found] == [("compose-config", 9), ("compose-warning", None),
                                                 ("compose-warning", None)]   # warnings: by message
    assert found[0].message.startswith("docker compose config failed: error while interpolating services.s.image: "
                                       "required variable IMG is missing a value: set IMG -- the compose files "
                                       "require variable IMG")
    assert [f.hint for f in found[1:]] == [
        "delete the top-level version: key, Compose ignores it",
        "set DOMAIN in .env, or give it a default with ${DOMAIN:-default}"]


@pytest.mark.parametrize(("name", "value", "literal"), [
    ("POSTGRES_PASSWORD", "postgres", True),
    ("MINIO_ROOT_PASSWORD", "minio123", True),
    ("KC_CLIENT_SECRET", "s3cr3t", True),
    ("API_KEY", "abc", True),
    ("SLACK_WEBHOOK", "https://hooks.slack.com/services/T/B/x", True),
    ("DATABASE_URL", "postgres://app:hunter2@db/app", True),          # not sensitive by name, by value
    ("TLS_KEY", "-----BEGIN PRIVATE KEY-----\nx", True),
    ("POSTGRES_PASSWORD", "pa$$word", True),                            # $$ is a literal dollar
    ("POSTGRES_PASSWORD", "${POSTGRES_PASSWORD}", False),              # interpolated: .env or the shell
    ("POSTGRES_PASSWORD", "${PG_PASS:-}", False),
    ("DATABASE_URL", "postgres://app:${PG_PASS}@db/app", False),
    ("POSTGRES_PASSWORD_FILE", "/run/secrets/pg", False),              # a path, not the value
    ("GF_SMTP_PASSWORD", "$__file{/run/secrets/smtp}", False),          # Grafana reads the file
    ("GF_SECURITY_ADMIN_PASSWORD", "$__env{ADMIN}", False),
    ("POSTGRES_PASSWORD", "", False),
    ("POSTGRES_PASSWORD", None, False),                                 # passed through from the shell
    ("ALLOW_EMPTY_PASSWORD", "yes", False),
    ("PASSWORD_MIN_LENGTH", "12", False),
    ("TOKEN_TTL", "30m", False),
    ("PASSWORD_ENCRYPTION", "scram-sha-256", False),
    ("OAUTH_TOKEN_URL", "https://sso/token", False),
    ("POSTGRES_USER", "app", False),
    ("KEY_TYPE", "rsa", False),
    ("ETCD_INITIAL_CLUSTER_TOKEN", "homelab-patroni", False),         # an identifier, not a credential
])
def test_literal_credential(name, value, literal):
    assert bool(literal_credential(name, value)) is literal


def test_credential_literal_reads_raw_files_with_anchors_and_list_form(tmp_path):
    (tmp_path / "compose.yaml").write_text(
        "x-env: &env\n"
        "  REDIS_PASSWORD: redis\n"
        "services:\n"
        "  a:\n"
        "    image: x\n"
        "    environment:\n"
        "      <<: *env\n"
        "      LOG: debug\n"
        "  b:\n"
        "    image: x\n"
        "    environment:\n"
        "      - API_TOKEN=t0ken\n"
        "      - PLAIN=1\n"
        "  c:\n"
        "    image: x\n"
        "    profiles: [off]\n"
        "    environment: {API_TOKEN: t0ken}\n")
    raw = load_raw(str(tmp_path))
    found = [f for f in validate(project_from_raw(raw, profiles=[]), raw=raw) if f.rule == "credential-literal"]
    assert [(f.service, f.subject, f.line) for f in found] == [("a", "REDIS_PASSWORD", 2), ("b", "API_TOKEN", 12)]
    # without the raw files (a hand-built model) the rule has nothing to read
    assert not [f for f in validate(project_from_raw(raw, profiles=[])) if f.rule == "credential-literal"]


def _raw_project(tmp_path, files: dict[str, str], roots=None):
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    raw = load_raw(str(tmp_path), files=roots)
    return project_from_raw(raw, profiles=["*"]), raw


def test_redeclared_ignores_root_overrides_and_identical_copies(tmp_path):
    p, raw = _raw_project(tmp_path, {
        "compose.yaml": "include: [a/compose.yaml, b/compose.yaml]\nservices:\n  web: {image: x}\n"
                        "networks:\n  edge: {}\n",
        "compose.override.yaml": "services:\n  web: {image: y, ports: ['80:80']}\n",   # -f merge: fine
        "a/compose.yaml": "services:\n  a: {image: x}\nnetworks:\n  edge: {}\nvolumes:\n  v: {}\n",  # identical
        "b/compose.yaml": "services:\n  b: {image: x}\nvolumes:\n  v: {driver: local}\nconfigs:\n  c: {file: ./c}\n"
                          "secrets:\n  s: {file: ./s}\n",
        "c/compose.yaml": "configs:\n  c: {file: ../b/c}\n",     # not included: not part of the project
    })
    assert raw.roots == [str(tmp_path / "compose.yaml"), str(tmp_path / "compose.override.yaml")]
    found = [f for f in validate(p, raw=raw) if f.rule == "resource-redeclared"]
    assert [(os.path.relpath(f.file, tmp_path), f.line, f.subject) for f in found] == [
        ("b/compose.yaml", 4, "volumes.v")]
    assert found[0].message.startswith("volume v is declared in a/compose.yaml:6 and again here, differently")


def test_external_secret_outside_swarm_names_each_consumer():
    registry = {"token": Secret("token", None, external=True, location=Location("/p/compose.yaml", 20)),
                "unused": Secret("unused", None, external=True)}
    s1 = svc("a", secrets=[SecretRef("token", "/run/secrets/token")])
    s2 = svc("b", secrets=[SecretRef("token", "/run/secrets/token")])
    p = project(s1, s2, secrets={"token": registry["token"]}, unused_secrets={"unused": registry["unused"]})
    found = [f for f in validate(p) if f.rule == "secret-external-swarm"]
    assert [(f.service, f.subject, f.line) for f in found] == [(None, "unused", None), ("a", "token", 20),
                                                               ("b", "token", 20)]


@pytest.mark.parametrize(("restart", "depended", "kind", "needs"), [
    (None, False, None, True),
    ("unless-stopped", False, None, True),
    ("always", False, None, True),
    ("no", False, None, False),
    ("on-failure", False, None, False),
    ("on-failure:3", False, None, False),
    (None, True, None, False),            # a dependant waits for service_completed_successfully
    (None, False, "init", False),         # x-hyhome: {kind: init}
])
def test_healthcheck_only_for_long_running_services(restart, depended, kind, needs):
    job = svc("job", healthcheck=None, restart=restart,
              extensions={"x-hyhome": {"kind": kind}} if kind else {})
    others = [svc("app", depends_on={"job": {"condition": "service_completed_successfully"}})] if depended else []
    found = rules(validate(project(job, *others)))
    assert found == ([("error", "security-healthcheck", "job")] if needs else [])


# ---------------------------------------------------------------- secrets read by mounted scripts

def _script_project(root, mounts_, declared=()):
    s = svc("job", mounts=mounts_, secrets=[SecretRef(n, f"/run/secrets/{n}") for n in declared])
    return Project("p", str(root), [f"{root}/compose.yaml"], services={"job": s},
                   secrets={n: Secret(n, f"{root}/secrets/{n}") for n in declared})


def test_mounted_scripts_reads_are_checked(tmp_path):
    init = tmp_path / "init"
    (init / "sub").mkdir(parents=True)
    (init / "10-users.sh").write_text("#!/bin/sh\n# /run/secrets/in_a_comment\npsql -f /run/secrets/db_pass\n"
                                      "x=$(cat /run/secrets/declared)\n")
    (init / "sub" / "20-more.py").write_text("open('/run/secrets/py_secret').read()\n")
    (init / "README.md").write_text("cat /run/secrets/not_a_script\n")
    (tmp_path / "entrypoint").write_text("#!/bin/sh\nexec app --token-file /run/secrets/app_token.\n")
    binds = [Mount("bind", "/docker-entrypoint-initdb.d", True, str(init)),
             Mount("bind", "/entrypoint", True, str(tmp_path / "entrypoint"))]
    found = validate(_script_project(tmp_path, binds, declared=["declared"]))
    got = [(f.rule, os.path.relpath(f.file, tmp_path), f.line, f.subject) for f in found
           if f.rule == "secret-undeclared"]
    assert got == [
        ("secret-undeclared", "entrypoint", 2, "app_token"),
        ("secret-undeclared", "init/10-users.sh", 3, "db_pass"),
        ("secret-undeclared", "init/sub/20-more.py", 1, "py_secret"),
    ]
    msgs = [f.message for f in found if f.rule == "secret-undeclared"]
    assert msgs[1] == ("script init/10-users.sh (mounted at /docker-entrypoint-initdb.d/10-users.sh) reads "
                       "/run/secrets/db_pass, but service job does not declare secret db_pass")


def test_script_reading_is_safe(tmp_path):
    """Only regular files inside the project, below the size cap, not binary; no symlink escape, no FIFO."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "leak.sh").write_text("cat /run/secrets/outside\n")
    root = tmp_path / "p"
    scripts = root / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "escape.sh").symlink_to(outside / "leak.sh")
    os.mkfifo(scripts / "fifo.sh")
    (scripts / "big.sh").write_text("cat /run/secrets/big\n" + "#" * MAX_SCRIPT_BYTES)
    (scripts / "binary.sh").write_bytes(b"\0cat /run/secrets/binary\n")
    (scripts / "ok.sh").write_text("cat /run/secrets/ok\n")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    binds = [Mount("bind", "/scripts", True, str(scripts)),
             Mount("bind", "/linked", True, str(root / "linkdir")),          # a directory outside, via a link
             Mount("bind", "/host", True, str(outside))]                    # the host's: not read
    found = [f for f in validate(_script_project(root, binds)) if f.rule == "secret-undeclared"]
    assert [f.subject for f in found] == ["ok"]


def test_writable_data_directories_are_not_scanned_for_scripts(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "run.sh").write_text("cat /run/secrets/x\n")
    found = validate(_script_project(tmp_path, [Mount("bind", "/data", False, str(tmp_path / "data"))]))
    assert not [f for f in found if f.rule == "secret-undeclared"]


# ---------------------------------------------------------------- unusable files: exit 2, one line, nothing written

@pytest.mark.parametrize(("content", "words"), [
    (b"services:\n  a:\n    image: x\0\n", "contains a NUL byte"),
    ("services:\n  a:\n    image: caf\xe9\n".encode("latin-1"), "is not UTF-8 text"),
    (b"", "empty compose file"),
    (b"- a\n", "not a mapping"),
    ("\n".join(['x-a: &a ["lol"]'] + [f"x-{i}: &l{i} [" + ", ".join([f"*{'a' if i == 0 else f'l{i - 1}'}"] * 9) + "]"
                                      for i in range(9)] + ["services: {a: {command: *l8}}"]).encode(), "alias bomb?"),
], ids=["nul", "latin1", "empty", "list", "alias-bomb"])
def test_cli_unusable_file_exits_2_naming_it(tmp_path, capsys, content, words):
    (tmp_path / "compose.yaml").write_bytes(content)
    report = tmp_path / "out" / "report.json"
    assert main([str(tmp_path), "--json", str(report), "--no-yamllint"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"validate: {tmp_path / 'compose.yaml'}: ") and words in err
    assert not report.parent.exists()


def test_cli_internal_error_exits_3_not_1(tmp_path, capsys, monkeypatch):
    import ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_validate as cv

    def broken(*args, **kwargs):
        raise ValueError("unexpected")

    monkeypatch.setattr(cv, "run", broken)
    monkeypatch.delenv("HYHOME_DEBUG", raising=False)
    assert main([fixture("clean")]) == 3
    assert capsys.readouterr().err == ("validate: internal error: ValueError: unexpected "
                                       "(HYHOME_DEBUG=1 shows the traceback)\n")


def test_trap_warning_dropped_and_many_warnings_located(tmp_path):
    """compose's "X is not set" warning for a $X trap is reported once (as the trap); the others
    point at the first reference of their variable."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import load_raw, project_from_raw

    (tmp_path / "compose.yaml").write_text(
        "services:\n  a:\n    image: x\n    command: echo $TRAP\n    environment:\n      B: ${UNSET_B}\n")
    raw = load_raw(str(tmp_path))
    project = project_from_raw(raw, config_error=None)
    project.config_warnings = ['The "TRAP" variable is not set. Defaulting to a blank string.',
                               'The "UNSET_B" variable is not set. Defaulting to a blank string.']
    found = [(f.rule, f.subject, f.line) for f in validate(project, [], raw)
             if f.rule in ("compose-warning", "interpolation-trap")]
    assert sorted(found) == [("compose-warning", "UNSET_B", 6), ("interpolation-trap", "TRAP", 4)]
