"""The compose model: canonical config -> dataclasses, raw walk, fallback, bad input."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
    EnvRef,
    Location,
    Mount,
    Port,
    SecretRef,
    UnusableFile,
    guarded_cli,
    load_project,
    load_raw,
    load_yaml_file,
    parse_bytes,
    parse_yaml,
    project_from_config,
    project_from_raw,
    raw_env_refs,
    scan_interpolations,
    split_compose_stderr,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "compose")


def fixture(name: str) -> str:
    return os.path.abspath(os.path.join(FIXTURES, name))


FULL = fixture("full")


# ---------------------------------------------------------------- pure helpers

@pytest.mark.parametrize(("value", "expected"), [
    ("256m", 256 * 1024**2), ("1g", 1024**3), ("1G", 1024**3), ("1073741824", 1073741824),
    (512, 512), ("64kb", 65536), (None, None), ("", None), ("1.5g", int(1.5 * 1024**3)),
])
def test_parse_bytes(value, expected):
    assert parse_bytes(value) == expected


@pytest.mark.parametrize("value", ["lots", "12q", True])
def test_parse_bytes_rejects_garbage(value):
    with pytest.raises(HyHomeError, match="invalid memory size"):
        parse_bytes(value)


def test_scan_interpolations_all_forms():
    text = "a $A ${B} ${C:-d} ${D-e} ${E:?m} ${F?m} ${G:+x} $$H $${I} ${J:-${K}} $1 $"
    got = [(name, op, written) for name, op, _, written in scan_interpolations(text)]
    assert got == [
        ("A", "", "$A"), ("B", "", "${B}"), ("C", ":-", "${C:-d}"), ("D", "-", "${D-e}"),
        ("E", ":?", "${E:?m}"), ("F", "?", "${F?m}"), ("G", ":+", "${G:+x}"),
        ("J", ":-", "${J:-${K}}"), ("K", "", "${K}"),
    ]
    # offsets point at the "$" of each reference, also for nested ones
    for _name, _op, off, written in scan_interpolations(text):
        assert text[off:off + len(written)] == written


def test_project_from_config_is_pure_and_normalises():
    config = {
        "name": "p",
        "services": {
            "a": {
                "image": "busybox",
                "user": 1000,
                "mem_limit": "268435456",
                "volumes": [
                    {"type": "bind", "source": "/srv/x", "target": "/x", "bind": {"create_host_path": True}},
                    {"type": "bind", "source": "/srv/y", "target": "/y", "read_only": True},
                    {"type": "volume", "source": "v", "target": "/v"},
                    {"type": "volume", "target": "/anon"},
                ],
                "secrets": [{"source": "s", "target": "custom", "mode": 288}, {"source": "t", "target": "/abs/t"}],
                "healthcheck": {"test": ["NONE"]},
                "ports": [{"target": 80, "published": "8080", "protocol": "tcp"}],
                "environment": {"X_FILE": "/run/secrets/t", "Y": None},
                "entrypoint": ["sh", "-c", "cat /run/secrets/s"],
                "x-hyhome": {"writable": ["/x"]},
            },
            "b": {"image": "busybox", "deploy": {"resources": {"limits": {"memory": 1024}}},
                  "depends_on": {"a": {"condition": "service_healthy"}}},
        },
        "secrets": {"s": {"file": "/p/s"}, "t": {"environment": "T"}},
        "volumes": {"v": {"driver": "local", "driver_opts": {"o": "bind,rw", "device": "/srv/v"}}},
        "networks": {"default": {"name": "p_default"}, "ext": {"name": "real", "external": True}},
        "x-top": {"k": 1},
    }
    p = project_from_config(config, "/p")
    a, b = p.services["a"], p.services["b"]
    assert (p.name, p.working_dir, p.source, p.config_error) == ("p", "/p", "config", None)
    assert a.user == "1000" and a.mem_limit == 256 * 1024**2 and b.mem_limit == 1024
    assert a.mounts == [
        Mount("bind", "/x", False, "/srv/x", None, True, "/srv/x"),
        Mount("bind", "/y", True, "/srv/y", None, False, "/srv/y"),
        Mount("volume", "/v", False, "/srv/v", "v", False, "v"),
        Mount("volume", "/anon", False, None, None, False, None),
    ]
    assert a.secrets == [SecretRef("s", "/run/secrets/custom", mode=0o440), SecretRef("t", "/abs/t")]
    assert a.secret_paths_read == {"/run/secrets/s", "/run/secrets/t"}
    assert a.healthcheck == {"disable": True} and b.healthcheck is None
    assert a.ports == [Port(80, 8080, None, "tcp")]
    assert a.extensions == {"x-hyhome": {"writable": ["/x"]}}
    assert b.depends_on == {"a": {"condition": "service_healthy"}}
    assert p.secrets["t"].environment == "T" and p.secrets["s"].file == "/p/s"
    assert p.networks["ext"].external and p.networks["ext"].name == "real"
    assert p.extensions == {"x-top": {"k": 1}}
    assert p.files == [] and p.env_refs == []


def test_project_from_config_rejects_non_mapping():
    with pytest.raises(HyHomeError):
        project_from_config(["not", "a", "dict"], "/p")


# ---------------------------------------------------------------- raw walk

def test_raw_walk_files_locations_and_env_refs():
    raw = load_raw(FULL)
    assert raw.paths == [os.path.join(FULL, "compose.yaml"), os.path.join(FULL, "db", "compose.yaml")]
    assert raw.errors == []
    assert raw.env == {"DOMAIN": "example.test", "DB_USER": "app"}


def test_raw_fallback_when_yaml_is_broken():
    raw = load_raw(fixture("badyaml"))
    broken = os.path.join(fixture("badyaml"), "broken-service.yml")
    assert [(e.location.file, e.location.line) for e in raw.errors] == [(broken, 4)]  # where the bracket opens
    assert "YAML syntax error" in raw.errors[0].message
    project = project_from_raw(raw, config_error="boom")
    assert list(project.services) == ["ok"]
    assert project.source == "raw" and project.config_error == "boom"


# ---------------------------------------------------------------- bad input

def test_missing_directory(tmp_path):
    with pytest.raises(HyHomeError, match="does not exist"):
        load_project(str(tmp_path / "nope"))


def test_not_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(HyHomeError, match="not a directory"):
        load_project(str(f))


def test_not_a_compose_project():
    with pytest.raises(HyHomeError, match=r"not a compose project: none of compose\.yaml, compose\.yml"):
        load_project(fixture("notcompose"))


def test_explicit_file_missing():
    with pytest.raises(HyHomeError, match=r"compose file .*/nope\.yaml not found"):
        load_project(FULL, files=["nope.yaml"])


def test_docker_binary_missing():
    with pytest.raises(HyHomeError, match="docker binary 'no-such-docker' not found in PATH"):
        load_project(FULL, docker="no-such-docker")
    with pytest.raises(HyHomeError, match="not found or not executable"):
        load_project(FULL, docker="/nonexistent/docker")


# ---------------------------------------------------------------- real docker compose config

@pytest.fixture(scope="module")
def full():
    if shutil.which("docker") is None:
        pytest.fail("docker is required for @pytest.mark.docker tests")
    return load_project(FULL, profiles=["*"])


@pytest.mark.docker
def test_full_project_services_and_files(full):
    assert full.name == "fixture-full" and full.source == "config" and full.config_error is None
    assert list(full.services) == ["db", "tool", "web"]
    assert full.files == [os.path.join(FULL, "compose.yaml"), os.path.join(FULL, "db", "compose.yaml")]
    assert full.services["web"].location == Location(os.path.join(FULL, "compose.yaml"), 10)
    assert full.services["db"].location == Location(os.path.join(FULL, "db", "compose.yaml"), 2)
    assert full.config_warnings == ['The "GREETING" variable is not set. Defaulting to a blank string.']
    assert full.env_file == os.path.join(FULL, ".env") and full.env_file_vars == ["DB_USER", "DOMAIN"]


@pytest.mark.docker
def test_full_project_mounts_all_syntaxes(full):
    web = full.services["web"]
    assert web.mounts == [
        Mount("bind", "/etc/nginx/nginx.conf", True, f"{FULL}/conf/nginx.conf", None, True, f"{FULL}/conf/nginx.conf"),
        Mount("volume", "/var/cache/nginx", False, None, "web-cache", False, "web-cache"),
        Mount("bind", "/usr/share/nginx/html", True, f"{FULL}/html", None, False, f"{FULL}/html"),
        Mount("tmpfs", "/tmp", False, None, None, False, None),
        Mount("volume", "/srv/bound", False, f"{FULL}/data/bound", "bound", False, "bound"),
    ]
    # included file: relative paths resolve against the included file's directory
    assert full.services["db"].mounts == [
        Mount("bind", "/var/lib/postgresql/data", False, f"{FULL}/db/data", None, True, f"{FULL}/db/data"),
    ]


@pytest.mark.docker
def test_full_project_secrets(full):
    web, db = full.services["web"], full.services["db"]
    assert web.secrets == [
        SecretRef("smtp_password", "/run/secrets/smtp_password"),
        SecretRef("slack_webhook", "/run/secrets/slack", uid="101", mode=0o440),
    ]
    assert web.secret_paths_read == {"/run/secrets/smtp_password", "/run/secrets/slack_webhook"}
    assert db.secret_paths_read == {"/run/secrets/db_password"}
    assert {k: s.file for k, s in full.secrets.items()} == {
        "db_password": f"{FULL}/db/secrets/db_password.txt",
        "slack_webhook": f"{FULL}/secrets/slack_webhook.txt",
        "smtp_password": f"{FULL}/secrets/smtp_password.txt",
    }
    assert full.secrets["smtp_password"].location == Location(f"{FULL}/compose.yaml", 63)
    # compose prunes registry entries nobody uses; the model keeps them apart
    assert list(full.unused_secrets) == ["unused_token"]
    assert full.unused_secrets["unused_token"].file == f"{FULL}/secrets/unused_token.txt"


@pytest.mark.docker
def test_full_project_service_settings(full):
    web, db, tool = full.services["web"], full.services["db"], full.services["tool"]
    assert web.image == "nginx:1.25" and web.user == "101:101" and db.user == "999:999" and tool.user is None
    assert web.security_opt == ["no-new-privileges:true"] and web.cap_drop == ["ALL"] and web.read_only
    assert web.mem_limit == 128 * 1024**2 and db.mem_limit == 1024**3 and tool.mem_limit is None
    assert web.ports == [Port(80, 8080, None, "tcp"), Port(443, 8443, "127.0.0.1", "tcp")]
    assert web.networks == ["front"] and db.networks == ["front", "shared"]
    assert web.healthcheck["test"] == ["CMD-SHELL", "wget -qO- http://localhost/ || exit 1"]
    assert tool.healthcheck == {"disable": True}
    assert (tool.network_mode, tool.pid, tool.ipc, tool.privileged, tool.cap_add) == (
        "host", "host", "host", True, ["NET_ADMIN"])
    assert tool.profiles == ["tools"] and web.profiles == []
    assert web.environment == {"SLACK_WEBHOOK_FILE": "/run/secrets/slack_webhook", "LOG_LEVEL": "info",
                               "DOMAIN": "example.test"}
    assert web.depends_on["db"]["condition"] == "service_healthy"
    assert web.labels == {"org.hyhome.tier": "1"} and web.restart == "unless-stopped"
    assert web.extensions == {"x-hyhome": {"writable": ["/var/cache/nginx"]}}
    assert full.networks["shared"].external and full.networks["shared"].name == "hyhome_shared"
    assert full.networks["front"].name == "fixture-full_front"
    assert full.volumes["bound"]["driver_opts"]["device"] == f"{FULL}/data/bound"


@pytest.mark.docker
def test_full_project_env_refs(full):
    compose = f"{FULL}/compose.yaml"
    got = [(r.name, r.has_default, r.required, r.location.file, r.location.line, r.text) for r in full.env_refs]
    assert got == [
        ("NGINX_TAG", True, False, compose, 12, "${NGINX_TAG:-1.25}"),
        ("GREETING", False, False, compose, 14, "${GREETING}"),
        ("LOG_LEVEL", True, False, compose, 17, "${LOG_LEVEL-info}"),
        ("DOMAIN", False, True, compose, 18, "${DOMAIN:?set DOMAIN in .env}"),
        ("DB_USER", False, False, f"{FULL}/db/compose.yaml", 7, "$DB_USER"),
    ]
    # the $VAR traps: interpolations compose applies inside command/entrypoint/healthcheck
    assert [(r.name, r.path) for r in full.services["web"].raw_interpolations] == [
        ("GREETING", "services.web.command[2]")]
    assert full.services["db"].raw_interpolations == []  # $${POSTGRES_USER} is an escape
    assert full.services["tool"].raw_interpolations == []


@pytest.mark.docker
def test_profiles_filter_services():
    project = load_project(FULL)
    assert list(project.services) == ["db", "web"]


@pytest.mark.docker
def test_config_error_falls_back_to_raw():
    root = fixture("unresolved")
    project = load_project(root)
    assert project.source == "raw"
    assert project.config_error == ("error while interpolating services.proxy.image: "
                                    "required variable PROXY_IMAGE is missing a value: set PROXY_IMAGE")
    assert project.files == [f"{root}/compose.yaml", f"{root}/app/compose.yaml"]
    assert list(project.services) == ["app", "proxy"]
    proxy, app = project.services["proxy"], project.services["app"]
    assert proxy.mounts == [Mount("bind", "/etc/proxy.conf", True, f"{root}/conf/proxy.conf", None, True,
                                  f"{root}/conf/proxy.conf")]
    assert app.mounts == [Mount("bind", "/state", False, f"{root}/app/state", None, True, f"{root}/app/state")]
    assert proxy.env_files == [f"{root}/missing.env"] and proxy.user == "1000"
    assert app.mem_limit == 64 * 1024**2 and app.secret_paths_read == {"/run/secrets/api_key"}
    assert project.secrets["api_key"].file == f"{root}/secrets/api_key"
    assert proxy.location == Location(f"{root}/compose.yaml", 6)
    assert app.location == Location(f"{root}/app/compose.yaml", 2)
    assert [r.name for r in app.raw_interpolations] == ["API_TOKEN"]
    assert EnvRef("PROXY_IMAGE", False, True, Location(f"{root}/compose.yaml", 7), "services.proxy.image",
                  "proxy", "${PROXY_IMAGE:?set PROXY_IMAGE}") in project.env_refs


@pytest.mark.docker
def test_yaml_error_reported_with_file_and_line():
    root = fixture("badyaml")
    project = load_project(root)
    assert project.source == "raw"
    assert project.config_error.startswith("yaml: line 3")
    assert [(e.location.file, e.location.line) for e in project.file_errors] == [(f"{root}/broken-service.yml", 4)]


@pytest.mark.docker
def test_missing_include_is_a_file_error(tmp_path):
    (tmp_path / "compose.yaml").write_text("include:\n  - sub/compose.yaml\nservices:\n  a:\n    image: x\n")
    project = load_project(str(tmp_path))
    assert project.source == "raw" and "no such file or directory" in project.config_error
    assert [(e.location.line, e.message) for e in project.file_errors] == [
        (2, f"included file {tmp_path}/sub/compose.yaml not found")]
    assert list(project.services) == ["a"]


@pytest.mark.docker
def test_override_file_is_picked_up(tmp_path):
    (tmp_path / "compose.yaml").write_text("services:\n  a:\n    image: x\n")
    (tmp_path / "compose.override.yaml").write_text("services:\n  a:\n    user: '1000'\n")
    project = load_project(str(tmp_path))
    assert project.services["a"].user == "1000"
    assert project.files == [str(tmp_path / "compose.yaml"), str(tmp_path / "compose.override.yaml")]


@pytest.mark.docker
def test_extends_base_file_is_walked_but_defines_no_service():
    root = fixture("extends")
    project = load_project(root)
    assert project.files == [f"{root}/compose.yaml", f"{root}/svc/compose.yaml", f"{root}/common/base.yaml"]
    assert list(project.services) == ["app"]
    app = project.services["app"]
    assert app.user == "1000:1000" and app.cap_drop == ["ALL"]
    assert app.location == Location(f"{root}/svc/compose.yaml", 2)
    assert app.extensions == {"x-hyhome": {"writable": ["/state"]}}  # inherited through extends
    assert [(r.name, r.has_default, r.location.file) for r in project.env_refs] == [
        ("HC_INTERVAL", True, f"{root}/common/base.yaml")]
    # the raw fallback resolves extends too, without turning the base into a service
    raw_project = project_from_raw(load_raw(root), config_error="x")
    assert list(raw_project.services) == ["app"]
    assert raw_project.services["app"].user == "1000:1000"
    assert raw_project.services["app"].mounts == [
        Mount("bind", "/state", False, f"{root}/svc/state", None, True, f"{root}/svc/state")]


def test_compose_plugin_missing(tmp_path):
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho \"docker: 'compose' is not a docker command.\" >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(HyHomeError, match=r"^Docker Compose v2 is not installed"):
        load_project(FULL, docker=str(fake))


def test_config_output_that_is_not_json_falls_back_to_raw(tmp_path):
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'not json'\n")
    fake.chmod(0o755)
    project = load_project(FULL, docker=str(fake))
    assert project.source == "raw" and project.config_error.startswith("docker compose config printed no JSON")
    assert sorted(project.services) == ["db", "web"]  # "tool" is in a profile that is not active
    assert sorted(load_project(FULL, docker=str(fake), profiles=["tools"]).services) == ["db", "tool", "web"]


# ---------------------------------------------------------------- compose's stderr, one parser

WARN_A = ('time="2026-01-01T00:00:00Z" level=warning msg="The \\"A\\" variable is not set. '
          'Defaulting to a blank string."')
WARN_V = 'time="2026-01-01T00:00:00Z" level=warning msg="/x/compose.yaml: `version` is obsolete"'


def test_split_compose_stderr_chooses_the_error_line_over_warnings():
    stderr = f"{WARN_A}\n{WARN_A}\n{WARN_V}\nservices.db conflicts with imported resource\n"
    assert split_compose_stderr(stderr) == (
        ["services.db conflicts with imported resource"],
        ['The "A" variable is not set. Defaulting to a blank string.', "/x/compose.yaml: `version` is obsolete"])


@pytest.mark.parametrize(("stderr", "expected"), [
    ('time="t" level=fatal msg="boom"\n', (["boom"], [])),
    ('time="t" level=error msg="bad \\"thing\\" in C:\\\\dir"', (['bad "thing" in C:\\dir'], [])),
    ('level=warning msg="no time field"', ([], ["no time field"])),
    ('time="t" level=warn msg="short level"', ([], ["short level"])),
    ('time="t" level=info msg="chatter"\ntime="t" level=debug msg="more"', ([], [])),   # neither
    ('time="t" level=warning msg="two\\nlines"', ([], ["two lines"])),
    ('time="t" level=warning msg="unterminated', (['time="t" level=warning msg="unterminated'], [])),  # not logrus
    ("exit code 1", (["exit code 1"], [])),
    ("line one\n\n  line one  \nline two\n", (["line one", "line two"], [])),            # each once
    (f"{WARN_V}\n", ([], ["/x/compose.yaml: `version` is obsolete"])),                    # no error line
    ("", ([], [])), ("   \n\t\n", ([], [])), (None, ([], [])),
])
def test_split_compose_stderr_odd_input(stderr, expected):
    assert split_compose_stderr(stderr) == expected


def fake_compose(tmp_path, stdout: str, stderr: str, rc: int = 0) -> str:
    (tmp_path / "out").write_text(stdout, encoding="utf-8")
    (tmp_path / "err").write_text(stderr, encoding="utf-8")
    fake = tmp_path / "docker"
    fake.write_text(f"#!/bin/sh\ncat {tmp_path}/out\ncat {tmp_path}/err >&2\nexit {rc}\n")
    fake.chmod(0o755)
    return str(fake)


def test_config_warnings_are_parsed_once_each(tmp_path):
    docker = fake_compose(tmp_path, '{"name": "full", "services": {}}', f"{WARN_A}\n{WARN_A}\n{WARN_V}\n")
    project = load_project(FULL, docker=docker)
    assert project.source == "config" and project.config_error is None
    assert project.config_warnings == ['The "A" variable is not set. Defaulting to a blank string.',
                                       "/x/compose.yaml: `version` is obsolete"]


def test_load_project_reuses_raw_files_it_is_given(tmp_path, monkeypatch):
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import compose_model

    raw = load_raw(FULL)
    docker = fake_compose(tmp_path, "not json", "")

    def no_second_read(*args, **kwargs):
        raise AssertionError("the raw files were read again")

    monkeypatch.setattr(compose_model, "load_raw", no_second_read)
    project = load_project(FULL, docker=docker, raw=raw)
    assert project.source == "raw" and sorted(project.services) == ["db", "web"]
    assert project.files == raw.paths
    with pytest.raises(HyHomeError, match="the raw files given are those of"):
        load_project(str(tmp_path), docker=docker, raw=raw)


def test_raw_extends_merge_follows_compose():
    """The raw fallback merges an extends: base as compose does: volumes by target (the service's
    entry wins), environment and labels key by key, list keys as a union, other keys replaced."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import merge_extends

    base = {"image": "base:1", "volumes": ["./data/a:/a", "./data/b:/b:ro"], "cap_drop": ["ALL"],
            "environment": ["A=1", "B=2"], "labels": {"x": "1"}, "security_opt": ["no-new-privileges:true"]}
    svc = {"image": "svc:2", "volumes": [{"type": "bind", "source": "./other", "target": "/b"}],
           "environment": {"B": "3"}, "cap_drop": ["ALL", "NET_RAW"], "labels": ["y=2"]}
    merged = merge_extends(base, svc)
    assert merged["image"] == "svc:2"
    assert merged["volumes"] == ["./data/a:/a", {"type": "bind", "source": "./other", "target": "/b"}]
    assert merged["environment"] == {"A": "1", "B": "3"}
    assert merged["labels"] == {"x": "1", "y": "2"}
    assert merged["cap_drop"] == ["ALL", "NET_RAW"]
    assert merged["security_opt"] == ["no-new-privileges:true"]
    assert base["volumes"] == ["./data/a:/a", "./data/b:/b:ro"]   # inputs untouched


# ---------------------------------------------------------------- the one YAML loader: hostile files

def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """The classic ~1 KB alias bomb: each level a list of ``width`` aliases of the level below
    (9 x 9: 9**9 = 387,420,489 leaves once expanded)."""
    lines = ['x-l0: &l0 ["lol", "${LOL}"]']
    for i in range(1, levels):
        lines.append(f"x-l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    lines += ["services:", "  web:", "    image: busybox", f"    command: *l{levels - 1}"]
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 12) -> str:
    """The same with merge keys: each level merges the one below nine times."""
    lines = ["x-m0: &m0 {a: 1, b: $B}"]
    for i in range(1, levels):
        lines.append(f"x-m{i}: &m{i}\n  <<: [" + ", ".join([f"*m{i - 1}"] * 9) + f"]\n  k{i}: v")
    lines += ["services:", "  web:", f"    <<: *m{levels - 1}", "    image: busybox"]
    return "\n".join(lines) + "\n"


def project_with(tmp_path, content) -> str:
    path = tmp_path / "compose.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


@pytest.mark.parametrize("content", [billion_laughs(), merge_bomb()], ids=["aliases", "merge-keys"])
def test_alias_bomb_fails_fast_with_one_line_naming_the_file(tmp_path, content):
    path = project_with(tmp_path, content)
    assert len(content) < 1500
    with pytest.raises(UnusableFile) as err:
        load_raw(str(tmp_path))
    msg = str(err.value)
    assert re.fullmatch(re.escape(path) + r": YAML aliases expand to more than [\d,]+ nodes \(alias bomb\?\)", msg)
    assert err.value.path == path and isinstance(err.value, HyHomeError)
    # every entry point reads through the same loader: load_project stops before docker runs
    with pytest.raises(UnusableFile, match="alias bomb"):
        load_project(str(tmp_path), docker=shutil.which("true") or "/bin/true")


def test_alias_budget_counts_expansion_not_text(tmp_path):
    """A small bomb under the budget loads, and the env walk visits each node once: refs under an
    alias appear once per place the alias is used, with that place's path."""
    project_with(tmp_path, billion_laughs(levels=3, width=3))   # 3 * 3 * 2 leaves
    raw = load_raw(str(tmp_path))
    refs = [r for r in raw_env_refs(raw) if r.service == "web"]
    assert len(refs) == 9
    assert refs[0].path == "services.web.command[0][0][1]" and refs[-1].path == "services.web.command[2][2][1]"
    assert {r.location.line for r in refs} == {1}


def test_recursive_alias_and_depth_bomb_are_refused(tmp_path):
    project_with(tmp_path, "x-a: &a [1, *a]\nservices: {}\n")
    with pytest.raises(UnusableFile, match=r"compose\.yaml: line 1: alias \*a is inside its own anchor &a"):
        load_raw(str(tmp_path))
    project_with(tmp_path, "services:\n  a:\n    command: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(UnusableFile, match=r"compose\.yaml: line 3: YAML nested deeper than 100 levels"):
        load_raw(str(tmp_path))


LEGIT_ANCHORS = """\
x-logging: &logging
  driver: json-file
  options: {max-size: 10m}
x-common: &common
  restart: unless-stopped
  security_opt: ["no-new-privileges:true"]
  cap_drop: [ALL]
  logging: *logging
  healthcheck:
    test: ["CMD-SHELL", "wget -qO- http://localhost:${HEALTH_PORT:-8080}/ || exit 1"]
  environment: &env
    TZ: ${TZ}
services:
  api:
    <<: *common
    image: example/api:1
    restart: always
    volumes: ["./api.conf:/etc/api.conf:ro"]
  worker:
    <<: [*common]
    image: example/worker:1
    environment:
      <<: *env
      QUEUE: jobs
"""


def test_anchors_and_merge_keys_still_work(tmp_path):
    project_with(tmp_path, LEGIT_ANCHORS)
    raw = load_raw(str(tmp_path))
    assert raw.errors == []
    data = raw.files[0].data
    assert data["services"]["api"]["restart"] == "always"              # own key wins over the merged one
    assert data["services"]["worker"]["restart"] == "unless-stopped"
    assert data["services"]["worker"]["environment"] == {"TZ": "${TZ}", "QUEUE": "jobs"}
    assert data["services"]["api"]["logging"] is data["x-logging"]     # an alias is the same object
    # the nodes are left as written (merge keys included) for the walks that need lines
    services = raw.files[0].node.value[2][1]
    assert services.value[0][1].value[0][0].value == "<<"
    project = project_from_raw(raw, config_error="no docker here")
    assert project.services["api"].cap_drop == ["ALL"] and project.services["worker"].cap_drop == ["ALL"]
    assert project.services["worker"].environment == {"TZ": "${TZ}", "QUEUE": "jobs"}
    by_service = {(r.service, r.name, r.path) for r in raw_env_refs(raw)}
    assert ("api", "HEALTH_PORT", "services.api.healthcheck.test[1]") in by_service
    assert ("worker", "HEALTH_PORT", "services.worker.healthcheck.test[1]") in by_service
    assert ("worker", "TZ", "services.worker.environment.TZ") in by_service
    assert (None, "TZ", "x-common.environment.TZ") in by_service
    assert [r.name for r in project.services["worker"].raw_interpolations] == ["HEALTH_PORT"]
    assert project.services["api"].mounts[0].location == Location(str(tmp_path / "compose.yaml"), 18)


UNUSABLE = [
    ("nul", b"services:\n  a:\n    image: x\0\n", r"compose file contains a NUL byte \(offset 27\): a binary file"),
    ("binary", bytes(range(256)) * 4, r"compose file contains a NUL byte"),
    ("latin1", "services:\n  a:\n    image: café\n".encode("latin-1"),
     r"compose file is not UTF-8 text \(byte 0xe9 on line 3\)"),
    ("control", b"services:\n  a:\n    image: x\x07\n", r"compose file is not YAML text: unacceptable character"),
    ("empty", b"", r"empty compose file"),
    ("comments-only", b"# nothing here\n", r"empty compose file"),
    ("list", b"- services\n", r"the top level of the compose file is a list, not a mapping"),
    ("scalar", b"services\n", r"the top level of the compose file is a str, not a mapping"),
]


@pytest.mark.parametrize(("content", "message"), [c[1:] for c in UNUSABLE], ids=[c[0] for c in UNUSABLE])
def test_unusable_compose_file_is_one_line_naming_it(tmp_path, content, message):
    path = project_with(tmp_path, content)
    with pytest.raises(UnusableFile) as err:
        load_raw(str(tmp_path))
    assert re.match(re.escape(path) + ": " + message, str(err.value))
    assert "\n" not in str(err.value)


def test_unusable_file_kinds(tmp_path):
    (tmp_path / "compose.yaml").mkdir()
    with pytest.raises(UnusableFile, match=r"compose\.yaml: compose file is a directory, not a file$"):
        load_raw(str(tmp_path))
    (tmp_path / "compose.yaml").rmdir()
    os.mkfifo(tmp_path / "compose.yaml")   # must not block
    with pytest.raises(UnusableFile, match=r"compose\.yaml: compose file is not a regular file$"):
        load_raw(str(tmp_path))
    os.unlink(tmp_path / "compose.yaml")
    (tmp_path / "compose.yaml").write_text("services: {a: {image: x}}\n")
    (tmp_path / "extra.yaml").mkdir()
    with pytest.raises(UnusableFile, match=r"extra\.yaml: compose file is a directory, not a file$"):
        load_raw(str(tmp_path), files=["compose.yaml", "extra.yaml"])
    (tmp_path / "compose.override.yaml").symlink_to(tmp_path / "gone.yaml")
    with pytest.raises(UnusableFile, match=r"compose\.override\.yaml: compose override file cannot be read"):
        load_raw(str(tmp_path))


def test_syntax_errors_stay_findings_with_lines(tmp_path):
    for text, line, words in [("x: &a 1\ny: &a 2\nservices: {}\n", 2, "found duplicate anchor 'a'"),
                              ("services:\n  a: *nope\n", 2, "found undefined alias 'nope'"),
                              ("services: {}\n---\nb: 1\n", 2, "but found another document")]:
        path = project_with(tmp_path, text)
        raw = load_raw(str(tmp_path))
        assert [(e.location.file, e.location.line) for e in raw.errors] == [(path, line)], text
        assert words in raw.errors[0].message


def test_load_yaml_file_names_the_file(tmp_path):
    reg = tmp_path / "hyhome-secrets.yml"
    reg.write_text("a: [1\n")
    with pytest.raises(UnusableFile, match=re.escape(str(reg)) + r": registry is not valid YAML \(line 1\): "):
        load_yaml_file(str(reg), "registry")
    reg.write_text(billion_laughs())
    with pytest.raises(UnusableFile, match="alias bomb"):
        load_yaml_file(str(reg), "registry")
    reg.write_text("a: {kind: provided}\n")
    assert load_yaml_file(str(reg)) == {"a": {"kind": "provided"}}


def test_parse_yaml_matches_pyyaml_on_a_real_file():
    import yaml

    with open(os.path.join(FULL, "compose.yaml"), encoding="utf-8") as fh:
        text = fh.read()

    assert parse_yaml(text, "compose.yaml")[1] == yaml.safe_load(text)
    assert parse_yaml(LEGIT_ANCHORS, "x")[1] == yaml.safe_load(LEGIT_ANCHORS)


def test_guarded_cli_never_ends_in_a_traceback(capsys):
    def crash(argv):
        raise KeyError("boom")

    def bad(argv):
        raise UnusableFile("/p/compose.yaml", "empty compose file")

    assert guarded_cli("x", crash, []) == 3
    assert capsys.readouterr().err == "x: internal error: KeyError: 'boom' (HYHOME_DEBUG=1 shows the traceback)\n"
    assert guarded_cli("x", bad, []) == 2
    assert capsys.readouterr().err == "x: /p/compose.yaml: empty compose file\n"
    assert guarded_cli("x", lambda argv: 1, []) == 1
