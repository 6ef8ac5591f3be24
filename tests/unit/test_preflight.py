"""Preflight: exact findings on fixture projects, host checks on fake facts, bad input, read-only."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import preflight as pf
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
    EnvRef,
    Location,
    Mount,
    Network,
    Port,
    Project,
    Secret,
    SecretRef,
    Service,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures", "preflight")
GAPS = os.path.join(FIX, "gaps")
CLEAN = os.path.join(FIX, "clean")
BROKEN = os.path.join(FIX, "broken")
ANY = "0.0.0.0"  # noqa: S104 - an address in fake facts, nothing binds it
BUSY_PORT = 47113  # published by the gaps fixture on 127.0.0.1
GIB = 1024**3


def fake_facts(**over) -> pf.HostFacts:
    """A healthy host, fixed numbers: host checks become deterministic."""
    base = pf.HostFacts(
        docker_version="24.0.7", docker_api_version="1.43", docker_root_dir="/var/lib/docker",
        compose_version="2.26.1", max_map_count=262144, mem_total=8 * GIB, mem_available=6 * GIB,
        disks=[pf.Disk("project filesystem", "/srv/p", 50 * GIB), pf.Disk("Docker root", "/var/lib/docker", 50 * GIB)],
        listeners=[], bindings=[], networks={"bridge", "host", "none"}, volumes=set(),
    )
    return dataclasses.replace(base, **over)


def triples(findings):
    return [(f.check, f.severity, f.subject) for f in findings]


def by(findings, check, subject=None):
    hits = [f for f in findings if f.check == check and (subject is None or f.subject == subject)]
    assert hits, f"no finding {check} {subject}"
    return hits[0] if subject is not None else hits


def project(services=(), **kw) -> Project:
    p = Project(name=kw.pop("name", "demo"), working_dir=kw.pop("working_dir", "/nonexistent/demo"),
                files=["/nonexistent/demo/compose.yaml"], **kw)
    for s in services:
        p.services[s.name] = s
    return p


def svc(name, image="hyhome/busybox:local", **kw) -> Service:
    return Service(name=name, image=image, build=None, user=kw.pop("user", None), **kw)


@pytest.fixture
def busy_port():
    """Hold the port the gaps fixture publishes, as a foreign process would."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", BUSY_PORT))
    except OSError as exc:
        s.close()
        pytest.fail(f"port {BUSY_PORT} is already taken on this host ({exc}); free it to run this test")
    s.listen(1)
    yield s
    s.close()


def gaps_run(facts_over=None):
    proj = pf.load(GAPS)
    real = pf.gather_host_facts(proj)
    # Keep what the fixture is about (sockets, engine containers, networks, volumes); pin the rest.
    facts = fake_facts(listeners=real.listeners, bindings=real.bindings, networks=real.networks,
                       volumes=real.volumes, max_map_count=65530, **(facts_over or {}))
    return proj, facts, pf.run_checks(proj, facts)


# --------------------------------------------------------------------------------------------
# Fixture projects, real loader


@pytest.mark.docker
def test_gaps_fixture_exact_findings(busy_port):
    _, _, findings = gaps_run()
    assert triples(findings) == [
        ("host.docker_engine", "info", "Docker Engine"),
        ("host.compose", "info", "Compose v2"),
        ("host.vm_max_map_count", "blocker", "vm.max_map_count"),
        ("host.disk", "info", "Docker root"),
        ("host.disk", "info", "project filesystem"),
        ("host.memory", "info", "memory"),
        ("host.ports", "blocker", "tcp/47113 on 127.0.0.1"),
        ("host.ports", "info", "ports"),
        ("project.compose_config", "info", "docker compose config"),
        ("project.env_file", "info", ".env"),
        ("project.env_vars", "blocker", "APP_DOMAIN"),
        ("project.env_vars", "warning", "APP_COLOR"),
        ("project.secrets", "blocker", "api_token"),
        ("project.secrets", "blocker", "db_password"),
        ("project.certs", "blocker", "secrets/certs/key.pem"),
        ("project.certs", "blocker", "tls_cert"),
        ("project.bind_dirs", "blocker", "data/app"),
        ("project.bind_dirs", "blocker", "data/pg"),
        ("project.bind_dirs", "warning", "data/search"),
        ("project.bind_files", "blocker", "config/app.conf"),
        ("project.bind_files", "blocker", "config/extra.yml"),
        ("project.networks", "blocker", "pf-gaps-edge-missing"),
        ("project.volumes", "blocker", "pf-gaps-backups-missing"),
    ]


@pytest.mark.docker
def test_gaps_fixture_messages_and_fixes(busy_port):
    _, _, findings = gaps_run()
    port = by(findings, "host.ports", "tcp/47113 on 127.0.0.1")
    assert f"(pid {os.getpid()})" in port.message and "published by app" in port.message
    assert by(findings, "host.ports", "ports").message == "1 published port free"

    assert by(findings, "project.env_vars", "APP_DOMAIN").message == (
        "referenced without a default (compose.yaml:14) but not set in .env: Compose substitutes an empty string")
    assert by(findings, "project.env_vars", "APP_COLOR").message.startswith("empty in .env")

    db = by(findings, "project.secrets", "db_password")
    assert db.message == "secret file secrets/db_password.txt is missing; used by app"
    assert db.fixed_by == "secrets" and "hyhome.bootstrap.secrets" in db.fix
    assert by(findings, "project.secrets", "api_token").message == (
        "secret file secrets/api_token.txt is empty; used by app")

    cert = by(findings, "project.certs", "tls_cert")
    assert cert.message == "certificate file secrets/certs/cert.pem is missing; used by app"
    assert cert.fixed_by == "tls"
    assert by(findings, "project.certs", "secrets/certs/key.pem").fixed_by == "tls"

    conf = by(findings, "project.bind_files", "config/app.conf")
    assert "config/app.conf.example exists" in conf.message and conf.fixed_by == "data_dirs"
    extra = by(findings, "project.bind_files", "config/extra.yml")
    assert "no extra.yml.example sibling" in extra.message and extra.fixed_by is None

    assert "non-root app" in by(findings, "project.bind_dirs", "data/app").message
    assert "local volume pgdata" in by(findings, "project.bind_dirs", "data/pg").message
    assert by(findings, "project.networks", "pf-gaps-edge-missing").fix == (
        "docker network create pf-gaps-edge-missing")
    assert by(findings, "project.volumes", "pf-gaps-backups-missing").fix == (
        "docker volume create pf-gaps-backups-missing")
    # every problem says how to fix it
    assert all(f.fix for f in findings if f.severity != pf.INFO)


@pytest.mark.docker
def test_report_is_deterministic_and_holds_no_values(busy_port):
    proj, facts, findings = gaps_run()
    again = pf.run_checks(proj, facts)
    assert again == findings
    report = pf.build_report(proj, findings)
    text = json.dumps(report, sort_keys=True)
    assert text == json.dumps(pf.build_report(proj, again), sort_keys=True)
    assert report["summary"] == {"blocker": 13, "warning": 2, "info": 8, "blocking": 13, "deferred": 0,
                                 "blocks_boot": True}
    with open(os.path.join(GAPS, "secrets", "app_secret.txt")) as fh:
        secret_value = fh.read().strip()
    assert secret_value not in text
    assert "demo" not in text  # the .env value of APP_NAME


@pytest.mark.docker
def test_clean_fixture_has_no_blockers_nor_warnings():
    proj = pf.load(CLEAN)
    findings = pf.run_checks(proj, fake_facts())
    assert [f for f in findings if f.severity != pf.INFO] == []
    assert triples(findings)[6:] == [
        ("host.ports", "info", "ports"),
        ("project.compose_config", "info", "docker compose config"),
        ("project.env_file", "info", ".env"),
        ("project.env_vars", "info", "variables"),
        ("project.secrets", "info", "secrets"),
        ("project.certs", "info", "certificates"),
        ("project.bind_dirs", "info", "bind mounts"),
        ("project.bind_files", "info", "bind mounts"),
        ("project.networks", "info", "networks"),
        ("project.volumes", "info", "volumes"),
    ]


@pytest.mark.docker
def test_clean_fixture_on_this_host_does_not_block():
    res = pf.preflight(CLEAN)
    assert res.blocking == [], res.table
    assert by(res.findings, "host.docker_engine", "Docker Engine").severity == pf.INFO
    assert res.report["summary"]["blocks_boot"] is False


@pytest.mark.docker
def test_project_compose_rejects_is_reported_and_checked_from_raw_files():
    proj = pf.load(BROKEN)
    assert proj.source == "raw"
    findings = pf.run_checks(proj, fake_facts())
    problems = [(f.check, f.severity, f.subject) for f in findings if f.severity != pf.INFO]
    assert problems == [
        ("project.compose_config", "blocker", "docker compose config"),
        ("project.env_file", "blocker", ".env"),
        ("project.env_vars", "blocker", "DB_HOST"),
        ("project.secrets", "blocker", "db_password"),
        ("project.bind_dirs", "blocker", "data/db"),
    ]
    cfg = by(findings, "project.compose_config", "docker compose config")
    assert "required variable DB_HOST is missing a value" in cfg.message
    assert "Compose stops with an error" in by(findings, "project.env_vars", "DB_HOST").message


def test_preflight_never_writes(tmp_path):
    def snapshot(root):
        out = {}
        for d, dirs, files in os.walk(root):
            for n in dirs + files:
                p = os.path.join(d, n)
                st = os.lstat(p)
                out[p] = (st.st_mode, st.st_size, st.st_mtime_ns)
        return out

    before = snapshot(GAPS)
    res = pf.preflight(GAPS, gather=lambda project, **_: fake_facts(), docker="/nonexistent/docker")
    assert res.findings
    assert snapshot(GAPS) == before


# --------------------------------------------------------------------------------------------
# Bad input and an unusable host: one clear message or one finding, never a traceback


@pytest.mark.parametrize(("path", "message"), [
    (os.path.join(FIX, "does-not-exist"), "project directory {p} does not exist"),
    (os.path.join(FIX, "notaproject"), "{p} is not a compose project: none of compose.yaml, compose.yml, "
                                       "docker-compose.yaml, docker-compose.yml found there"),
    (os.path.join(FIX, "notaproject", "README.md"), "project path {p} is not a directory"),
    ("", "no project directory given"),
])
def test_bad_input_is_one_clear_message(path, message):
    with pytest.raises(HyHomeError) as err:
        pf.preflight(path, gather=lambda project, **_: fake_facts())
    assert err.value.msg == message.format(p=path)


def test_cli_bad_input_exits_2_without_traceback(capsys):
    missing = os.path.join(FIX, "does-not-exist")
    assert pf.cli([missing]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"preflight: project directory {missing} does not exist\n"


def test_docker_not_running_is_a_blocker_finding(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    proj = project([svc("web", ports=[Port(80, 8080, None)])],
                   networks={"edge": Network("edge", "edge", True)})
    facts = pf.gather_host_facts(proj)
    assert facts.docker_error == ("cannot reach Docker Engine at unix:///nonexistent/docker.sock: "
                                  "the socket does not exist (is dockerd running?)")
    findings = pf.run_checks(proj, facts)
    engine = by(findings, "host.docker_engine", "Docker Engine")
    assert engine.severity == pf.BLOCKER and engine.fixed_by == "docker_engine"
    net = by(findings, "project.networks", "edge")
    assert (net.severity, net.message) == ("warning", "external network: not checked, Docker Engine unreachable")
    assert by(findings, "host.ports", "ports").message.startswith("containers not checked: Docker Engine unreachable")


def test_docker_sdk_missing_is_a_blocker_finding(monkeypatch):
    monkeypatch.setitem(sys.modules, "docker", None)
    facts = pf.HostFacts()
    pf._docker_probe(facts)
    assert "docker SDK for Python is not installed" in facts.docker_error
    assert by(pf.run_checks(project(), facts), "host.docker_engine", "Docker Engine").severity == pf.BLOCKER


def test_docker_cli_missing_still_checks_the_project():
    res = pf.preflight(GAPS, docker="/nonexistent/docker",
                       gather=lambda project, **kw: pf.gather_host_facts(project, docker_cli=kw["docker_cli"]))
    assert res.project.source == "raw"
    assert by(res.findings, "host.compose", "Compose v2").message == (
        "the docker CLI (/nonexistent/docker) is not installed")
    assert "docker binary /nonexistent/docker not found" in by(res.findings, "project.compose_config",
                                                               "docker compose config").message
    # the raw files still give the project checks
    assert by(res.findings, "project.secrets", "db_password").severity == pf.BLOCKER
    assert by(res.findings, "project.bind_files", "config/app.conf").severity == pf.BLOCKER


# --------------------------------------------------------------------------------------------
# Host checks on fake facts (pure)


@pytest.mark.parametrize(("over", "severity", "message"), [
    ({}, "info", "reachable, version 24.0.7 (API 1.43)"),
    ({"docker_version": "19.03.15"}, "blocker", "version 19.03.15 is older than the minimum 20.10"),
])
def test_engine_version(over, severity, message):
    f = by(pf.run_checks(project(), fake_facts(**over)), "host.docker_engine", "Docker Engine")
    assert (f.severity, f.message) == (severity, message)


@pytest.mark.parametrize(("over", "severity", "message"), [
    ({}, "info", "version 2.26.1"),
    ({"compose_version": "2.17.3"}, "warning", "version 2.17.3 is older than 2.20"),
    ({"compose_version": None, "compose_error": "only the old Compose v1 (docker-compose 1.29.2) is installed; "
                                                "the v2 plugin is missing"}, "blocker", "only the old Compose v1"),
])
def test_compose_version(over, severity, message):
    f = by(pf.run_checks(project(), fake_facts(**over)), "host.compose", "Compose v2")
    assert f.severity == severity and f.message.startswith(message)


@pytest.mark.parametrize(("image", "count", "severity"), [
    ("opensearchproject/opensearch:2.11.0", 65530, "blocker"),
    ("docker.elastic.co/elasticsearch/elasticsearch:8.11.1", 65530, "blocker"),
    ("opensearchproject/opensearch:2.11.0", 262144, "info"),
    ("opensearchproject/opensearch:2.11.0", None, "warning"),
    ("opensearchproject/opensearch-dashboards:2.11.0", 65530, "info"),  # dashboards do not need it
])
def test_vm_max_map_count(image, count, severity):
    f = by(pf.run_checks(project([svc("search", image=image)]), fake_facts(max_map_count=count)),
           "host.vm_max_map_count", "vm.max_map_count")
    assert f.severity == severity


def test_disk_and_memory_thresholds():
    facts = fake_facts(disks=[pf.Disk("project filesystem", "/srv/p", 2 * GIB),
                              pf.Disk("Docker root", "/var/lib/docker", None, "not visible from here")],
                       mem_available=512 * 1024**2)
    proj = project([svc("big", mem_limit=16 * GIB)])
    findings = pf.run_checks(proj, facts)
    assert triples(by(findings, "host.disk")) == [("host.disk", "blocker", "project filesystem"),
                                                  ("host.disk", "info", "Docker root")]
    assert by(findings, "host.disk", "project filesystem").message == (
        "2.0 GiB free at /srv/p, below the minimum 5 GiB")
    assert triples(by(findings, "host.memory")) == [("host.memory", "warning", "memory"),
                                                    ("host.memory", "warning", "memory limits")]


def test_ports_held_by_other_container_own_container_or_process():
    proj = project([svc("web", ports=[Port(80, 8080, None), Port(443, 8443, None), Port(53, 5353, "127.0.0.1", "udp"),
                                      Port(9000, 9000, "127.0.0.1"), Port(9001, 9001, None), Port(81, None, None)])])
    facts = fake_facts(
        bindings=[pf.Binding("other-web-1", "other", "tcp", ANY, 8080),
                  pf.Binding("demo-web-1", "demo", "tcp", ANY, 8443)],
        listeners=[pf.Listener("tcp", ANY, 8443, "docker-proxy (pid 7)"),   # our own container's proxy
                   pf.Listener("tcp", ANY, 5353, "dnsmasq (pid 8)"),        # tcp does not block udp
                   pf.Listener("tcp", "127.0.0.2", 9000, "x (pid 9)"),            # another address
                   pf.Listener("tcp", "::", 9001, "nginx (pid 10)")],
    )
    findings = by(pf.run_checks(proj, facts), "host.ports")
    assert [(f.severity, f.subject, f.message) for f in findings] == [
        ("blocker", "tcp/8080", "published by web, but already held by container other-web-1 of compose project other"),
        ("blocker", "tcp/9001", "published by web, but already in use on :: by nginx (pid 10)"),
        ("info", "ports", "2 published ports free, 1 published port held by this project's own running containers"),
    ]


def test_external_networks_and_volumes():
    proj = project(networks={"edge": Network("edge", "edge-net", True), "default": Network("default", "d", False)},
                   volumes={"bk": {"external": True, "name": "backups"}, "data": {}})
    findings = pf.run_checks(proj, fake_facts(networks={"edge-net"}, volumes=set()))
    assert by(findings, "project.networks", "networks").message == "1 external network exist"
    assert by(findings, "project.volumes", "backups").severity == pf.BLOCKER


def test_secret_that_is_a_directory_and_unused_secret(tmp_path):
    (tmp_path / "secrets" / "db").mkdir(parents=True)
    proj = project([svc("db", secrets=[SecretRef("db", "/run/secrets/db")])], working_dir=str(tmp_path),
                   secrets={"db": Secret("db", str(tmp_path / "secrets" / "db"))})
    f = by(pf.run_checks(proj, fake_facts()), "project.secrets", "db")
    assert f.severity == pf.BLOCKER and f.message.startswith("secrets/db is a directory, not a file")


def test_bind_file_replaced_by_docker_made_directory(tmp_path):
    (tmp_path / "conf" / "nginx.conf").mkdir(parents=True)
    (tmp_path / "conf" / "nginx.conf.example").write_text("events {}\n")
    mount = Mount("bind", "/etc/nginx/nginx.conf", True, str(tmp_path / "conf/nginx.conf"))
    proj = project([svc("gw", mounts=[mount])], working_dir=str(tmp_path))
    f = by(pf.run_checks(proj, fake_facts()), "project.bind_files", "conf/nginx.conf")
    assert f.severity == pf.BLOCKER and "is a directory" in f.message and f.fixed_by == "data_dirs"


def test_required_variable_empty_is_a_blocker(tmp_path):
    (tmp_path / ".env").write_text("DB_HOST=\nexport OTHER='x'\n")
    loc = Location(str(tmp_path / "compose.yaml"), 3)
    proj = project(working_dir=str(tmp_path), env_refs=[EnvRef("DB_HOST", False, True, loc),
                                                        EnvRef("OTHER", False, False, loc)])
    findings = pf.run_checks(proj, fake_facts())
    f = by(findings, "project.env_vars", "DB_HOST")
    assert (f.severity, f.message) == ("blocker", "empty in .env, but required (compose.yaml:3) (${DB_HOST:?})")
    assert [x.subject for x in by(findings, "project.env_vars")] == ["DB_HOST"]


def test_deferred_steps_do_not_block_but_stay_reported():
    proj = project([svc("db", secrets=[SecretRef("pw", "/run/secrets/pw")])],
                   secrets={"pw": Secret("pw", "/nonexistent/demo/secrets/pw.txt")})
    findings = pf.run_checks(proj, fake_facts(docker_error="cannot reach Docker Engine at x: y"))
    assert [f.check for f in pf.blocking(findings)] == ["host.docker_engine", "project.secrets"]
    assert [f.check for f in pf.blocking(findings, ["secrets"])] == ["host.docker_engine"]
    summary = pf.summarize(findings, ["secrets"])
    assert (summary["blocker"], summary["blocking"], summary["deferred"]) == (2, 1, 1)
    table = "\n".join(pf.render_table(proj, findings, ["secrets"]))
    assert "[left to the later secrets step]" in table
    assert table.splitlines()[-1].startswith("BLOCKED: 1 blocker stops first boot (1 more blocker left to later steps)")


def test_read_proc_listeners(tmp_path):
    net = tmp_path / "net"
    net.mkdir()
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    rest = " 00000000:00000000 00:00000000 00000000  0 0 {inode} 1\n"
    zero6 = "0" * 32
    (net / "tcp").write_text(head + "   0: 0100007F:B829 00000000:0000 0A" + rest.format(inode=111)
                             + "   1: 0100007F:0050 0200007F:1F90 01" + rest.format(inode=112))  # established
    (net / "tcp6").write_text(head + f"   0: {zero6}:1F90 {zero6}:0000 0A" + rest.format(inode=113))
    (net / "udp").write_text(head + "   0: 00000000:14E9 00000000:0000 07" + rest.format(inode=114))
    got = pf.read_proc_listeners(str(tmp_path))
    assert [(x.proto, x.ip, x.port) for x in got] == [("tcp", "127.0.0.1", 47145), ("tcp", "::", 8080),
                                                       ("udp", ANY, 5353)]


def test_parse_version():
    assert pf.parse_version("v2.26.1-4") == (2, 26, 1)
    assert pf.parse_version("20.10.24+dfsg1") == (20, 10, 24)
    assert pf.parse_version("unknown") is None


# --------------------------------------------------------------------------------------------
# Entry points


@pytest.mark.docker
def test_cli_writes_json_and_exits_1_on_blockers(tmp_path, capsys, busy_port):
    out_json = tmp_path / "report.json"
    assert pf.cli([GAPS, "--json", str(out_json), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "BLOCKER   project.secrets" in out and "INFO " not in out
    report = json.loads(out_json.read_text())
    assert report["schema"] == 1 and report["project"]["name"] == "pf-gaps"
    assert ("project.bind_files", "blocker", "config/app.conf") in triples(
        pf.Finding(**f) for f in report["findings"])
    assert oct(out_json.stat().st_mode & 0o777) == "0o644"


@pytest.mark.docker
def test_script_entry_point(tmp_path):
    out_json = tmp_path / "r.json"
    script = os.path.join(ROOT, "scripts", "preflight-compose.sh")
    env = {**os.environ, "HYHOME_PYTHON": sys.executable}
    ok = subprocess.run([script, CLEAN, "--json", str(out_json)], capture_output=True, text=True, env=env, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[-2].startswith("OK: nothing blocks first boot")
    assert json.loads(out_json.read_text())["summary"]["blocks_boot"] is False
    bad = subprocess.run([script, GAPS, "--no-ports"], capture_output=True, text=True, env=env, check=False)
    assert bad.returncode == 1 and "BLOCKED:" in bad.stdout
    none = subprocess.run([script, os.path.join(FIX, "notaproject")], capture_output=True, text=True, env=env,
                          check=False)
    assert none.returncode == 2 and "Traceback" not in none.stderr and "is not a compose project" in none.stderr


def test_env_file_that_is_a_directory_is_a_finding(tmp_path):
    (tmp_path / ".env").mkdir()
    loc = Location(str(tmp_path / "compose.yaml"), 2)
    proj = project(working_dir=str(tmp_path), env_refs=[EnvRef("A", False, False, loc)])
    findings = pf.run_checks(proj, fake_facts())
    f = by(findings, "project.env_file", ".env")
    assert (f.severity, f.message) == ("blocker", "is a directory, not a file; Compose cannot read it")
    assert by(findings, "project.env_vars", "A").severity == pf.BLOCKER


def test_provided_secrets_from_the_secrets_registry(tmp_path):
    """kind: provided = only a person can supply it: a blocker no step fixes; optional ones get a
    placeholder from the secrets step, so a warning, also while the placeholder is there."""
    sec = tmp_path / "secrets"
    sec.mkdir()
    (sec / "smtp").write_bytes(b"hyhome-placeholder:smtp\n")
    (tmp_path / "hyhome-secrets.yml").write_text(
        "secrets:\n"
        "  api_key: {kind: provided, hint: the vendor API key}\n"
        "  webhook: {kind: provided, optional: true}\n"
        "  smtp: {kind: provided, optional: true}\n"
        "  db: {kind: password}\n")
    names = ("api_key", "webhook", "smtp", "db")
    proj = project([svc("app", secrets=[SecretRef(n, f"/run/secrets/{n}") for n in names])],
                   working_dir=str(tmp_path), secrets={n: Secret(n, str(sec / n)) for n in names})
    findings = pf.run_checks(proj, fake_facts())
    got = {f.subject: (f.severity, f.fixed_by, f.message, f.fix) for f in by(findings, "project.secrets")}
    assert got["api_key"] == ("blocker", None, "provided secret secrets/api_key is missing; used by app",
                              "put the vendor API key in secrets/api_key; only a person can supply it")
    assert got["webhook"][:2] == ("warning", "secrets") and "writes a placeholder" in got["webhook"][2]
    assert got["smtp"][:2] == ("warning", None) and "still holds the placeholder" in got["smtp"][2]
    assert got["db"][:2] == ("blocker", "secrets")
    assert [f.subject for f in pf.blocking(findings, ["secrets"])] == ["api_key"]


def test_broken_secrets_registry_is_a_finding(tmp_path):
    (tmp_path / "hyhome-secrets.yml").write_text("secrets: [unclosed\n")
    findings = pf.run_checks(project(working_dir=str(tmp_path)), fake_facts())
    f = by(findings, "project.secrets", "hyhome-secrets.yml")
    assert f.severity == pf.BLOCKER and f.message.startswith("secrets registry is not valid YAML")


@pytest.mark.docker
def test_config_failing_only_on_env_is_left_to_the_env_step():
    findings = pf.run_checks(pf.load(BROKEN), fake_facts())
    cfg = by(findings, "project.compose_config", "docker compose config")
    assert (cfg.fixed_by, cfg.fix) == ("env", "set DB_HOST in .env (the env step renders it)")
    # with every fixing step deferred, the broken fixture no longer blocks (all its gaps are fixable)
    assert pf.blocking(findings, pf.STEPS) == []
