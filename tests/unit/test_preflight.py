"""Preflight: exact findings on fixture projects, host checks on fake facts, bad input, read-only."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import preflight as pf
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
    EnvRef,
    FileError,
    Location,
    Mount,
    Network,
    Port,
    Project,
    Secret,
    SecretRef,
    Service,
    load_raw,
    project_from_raw,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.findings import Finding

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
    return [(f.rule, f.severity, f.subject) for f in findings]


def by(findings, check, subject=None):
    hits = [f for f in findings if f.rule == check and (subject is None or f.subject == subject)]
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
        ("host.vm_max_map_count", "error", "vm.max_map_count"),
        ("host.disk", "info", "Docker root"),
        ("host.disk", "info", "project filesystem"),
        ("host.memory", "info", "memory"),
        ("host.ports", "error", "tcp/47113 on 127.0.0.1"),
        ("host.ports", "info", "ports"),
        ("project.compose_config", "info", "docker compose config"),
        ("project.env_file", "info", ".env"),
        ("project.env_vars", "error", "APP_COLOR"),
        ("project.env_vars", "error", "APP_DOMAIN"),
        ("project.secrets", "error", "api_token"),
        ("project.secrets", "error", "db_password"),
        ("project.certs", "error", "secrets/certs/key.pem"),
        ("project.certs", "error", "tls_cert"),
        ("project.bind_dirs", "error", "data/app"),
        ("project.bind_dirs", "error", "data/pg"),
        ("project.bind_dirs", "warning", "data/search"),
        ("project.bind_files", "error", "config/app.conf"),
        ("project.bind_files", "error", "config/extra.yml"),
        ("project.networks", "error", "pf-gaps-edge-missing"),
        ("project.volumes", "error", "pf-gaps-backups-missing"),
    ]


@pytest.mark.docker
def test_gaps_fixture_messages_and_fixes(busy_port):
    _, _, findings = gaps_run()
    port = by(findings, "host.ports", "tcp/47113 on 127.0.0.1")
    assert f"(pid {os.getpid()})" in port.message and "published by app" in port.message
    assert by(findings, "host.ports", "ports").message == "1 published port free"

    domain = by(findings, "project.env_vars", "APP_DOMAIN")
    assert domain.message == (
        "referenced without a default (compose.yaml:14), not set in .env, and nothing will set it: there is no "
        ".env.example and the inventory does not set it; Compose substitutes an empty string")
    assert domain.fixed_by is None and "env_values" in domain.hint and "env_generated" in domain.hint
    color = by(findings, "project.env_vars", "APP_COLOR")
    assert color.message.startswith("referenced without a default (compose.yaml:15), empty in .env, and nothing")

    db = by(findings, "project.secrets", "db_password")
    assert db.message == "secret file secrets/db_password.txt is missing; used by app"
    assert db.fixed_by == "secrets" and "hyhome.bootstrap.secrets" in db.hint
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
    edge = by(findings, "project.networks", "pf-gaps-edge-missing")
    assert edge.fixed_by == "compose" and edge.hint == (
        "let the compose step create it, or docker network create pf-gaps-edge-missing")
    assert by(findings, "project.volumes", "pf-gaps-backups-missing").hint == (
        "docker volume create pf-gaps-backups-missing")
    # every problem says how to fix it
    assert all(f.hint for f in findings if f.severity != pf.INFO)


@pytest.mark.docker
def test_report_is_deterministic_and_holds_no_values(busy_port):
    proj, facts, findings = gaps_run()
    again = pf.run_checks(proj, facts)
    assert again == findings
    report = pf.build_report(proj, findings)
    text = json.dumps(report, sort_keys=True)
    assert text == json.dumps(pf.build_report(proj, again), sort_keys=True)
    assert report["summary"] == {"error": 14, "warning": 1, "info": 8, "accepted": 0, "blocking": 14,
                                 "deferred": 0, "blocks_boot": True}
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
    problems = [(f.rule, f.severity, f.subject) for f in findings if f.severity != pf.INFO]
    assert problems == [
        ("project.compose_config", "error", "docker compose config"),
        ("project.env_file", "error", ".env"),
        ("project.env_vars", "error", "DB_HOST"),
        ("project.secrets", "error", "db_password"),
        ("project.bind_dirs", "error", "data/db"),
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
    ({"docker_version": "19.03.15"}, "error", "version 19.03.15 is older than the minimum 20.10"),
])
def test_engine_version(over, severity, message):
    f = by(pf.run_checks(project(), fake_facts(**over)), "host.docker_engine", "Docker Engine")
    assert (f.severity, f.message) == (severity, message)


@pytest.mark.parametrize(("over", "severity", "message"), [
    ({}, "info", "version 2.26.1"),
    ({"compose_version": "2.17.3"}, "warning", "version 2.17.3 is older than 2.20"),
    ({"compose_version": None, "compose_error": "only the old Compose v1 (docker-compose 1.29.2) is installed; "
                                                "the v2 plugin is missing"}, "error", "only the old Compose v1"),
])
def test_compose_version(over, severity, message):
    f = by(pf.run_checks(project(), fake_facts(**over)), "host.compose", "Compose v2")
    assert f.severity == severity and f.message.startswith(message)


@pytest.mark.parametrize(("image", "count", "severity"), [
    ("opensearchproject/opensearch:2.11.0", 65530, "error"),
    ("docker.elastic.co/elasticsearch/elasticsearch:8.11.1", 65530, "error"),
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
    assert triples(by(findings, "host.disk")) == [("host.disk", "error", "project filesystem"),
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
        ("error", "tcp/8080", "published by web, but already held by container other-web-1 of compose project other"),
        ("error", "tcp/9001", "published by web, but already in use on :: by nginx (pid 10)"),
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
    assert (f.severity, f.fixed_by, f.message) == (
        "error", None, "referenced without a default (compose.yaml:3), empty in .env, and nothing will set it: "
                         "there is no .env.example and the inventory does not set it; Compose stops with an error")
    assert [x.subject for x in by(findings, "project.env_vars")] == ["DB_HOST"]


def test_deferred_steps_do_not_block_but_stay_reported():
    proj = project([svc("db", secrets=[SecretRef("pw", "/run/secrets/pw")])],
                   secrets={"pw": Secret("pw", "/nonexistent/demo/secrets/pw.txt")})
    findings = pf.run_checks(proj, fake_facts(docker_error="cannot reach Docker Engine at x: y"))
    assert [f.rule for f in pf.blocking(findings)] == ["host.docker_engine", "project.secrets"]
    assert [f.rule for f in pf.blocking(findings, ["secrets"])] == ["host.docker_engine"]
    summary = pf.summarize(findings, ["secrets"])
    assert (summary["error"], summary["blocking"], summary["deferred"]) == (2, 1, 1)
    table = "\n".join(pf.render_table(proj, findings, ["secrets"]))
    assert "[left to the later secrets step]" in table
    assert table.splitlines()[-1].startswith("BLOCKED: 1 error stops first boot (1 more error left to later steps)")


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
    assert "\nerror     project.secrets " in out and "\ninfo " not in out
    report = json.loads(out_json.read_text())
    assert report["schema"] == 2 and report["project"]["name"] == "pf-gaps"
    assert ("project.bind_files", "error", "config/app.conf") in triples(
        Finding(**f) for f in report["findings"])
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
    assert (f.severity, f.message) == ("error", "is a directory, not a file; Compose cannot read it")
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
    got = {f.subject: (f.severity, f.fixed_by, f.message, f.hint) for f in by(findings, "project.secrets")}
    assert got["api_key"] == ("error", None,
                              "provided secret secrets/api_key is missing (kind provided in hyhome-secrets.yml); "
                              "read by app; only a person can supply it",
                              "a person supplies it (the vendor API key): write it to secrets/api_key (read by app)")
    assert got["webhook"][:2] == ("warning", "secrets") and "writes a placeholder" in got["webhook"][2]
    assert got["smtp"][:2] == ("warning", None) and "still holds the placeholder" in got["smtp"][2]
    assert got["db"][:2] == ("error", "secrets")
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
    assert (cfg.fixed_by, cfg.hint) == ("env", "set DB_HOST in .env (the env step renders it)")
    # nothing sets DB_HOST: the env step would fail too, so that blocks even with every step deferred
    assert [(f.rule, f.subject) for f in pf.blocking(findings, pf.STEPS)] == [("project.env_vars", "DB_HOST")]
    # once the inventory sets it, every gap of the broken fixture is left to a later step
    supplied = pf.run_checks(pf.load(BROKEN), fake_facts(), pf.Options(env_supplied=("DB_HOST",)))
    assert pf.blocking(supplied, pf.STEPS) == []


# --------------------------------------------------------------------------------------------
# Real projects: compose's error line, raw-file fallbacks, provided secrets, required-empty
# variables, external networks the compose step creates, prepare-only runs


def test_compose_error_line_is_shown_not_its_warnings():
    stderr = ('time="2026-11-25T21:38:37Z" level=warning msg="The \\"UNSET\\" variable is not set. '
              'Defaulting to a blank string."\n'
              'time="2026-11-25T21:38:37Z" level=warning msg="/srv/p/compose.yaml: `version` is obsolete"\n'
              'service "web" refers to undefined network nope: invalid compose project\n')
    f = by(pf.run_checks(project(config_error=stderr + stderr), fake_facts()), "project.compose_config",
           "docker compose config")
    assert f.message.startswith('failed: service "web" refers to undefined network nope: invalid compose project '
                                "(and 2 compose warnings: the validate step lists them)")    # each warning once
    assert "UNSET" not in f.message and "obsolete" not in f.message
    f = by(pf.run_checks(project(config_error='time="x" level=fatal msg="bad \\"thing\\""'), fake_facts()),
           "project.compose_config", "docker compose config")
    assert f.message.startswith('failed: bad "thing" -- ')
    only_warnings = 'time="x" level=warning msg="The \\"UNSET\\" variable is not set."'
    f = by(pf.run_checks(project(config_error=only_warnings), fake_facts()), "project.compose_config",
           "docker compose config")
    assert f.message.startswith("failed: without an error line (and 1 compose warning: the validate step lists them)")


def failing_project_with_search(tmp_path):
    """A root file including a search folder; `docker compose config` fails (a required variable,
    after a warning about another)."""
    (tmp_path / "search").mkdir()
    (tmp_path / "docker-compose.yml").write_text(
        "include:\n  - search/compose.yml\nservices:\n  web:\n    image: nginx:1.25\n    networks: [nope]\n")
    (tmp_path / "search" / "compose.yml").write_text(
        "services:\n  opensearch:\n    image: opensearchproject/opensearch:${OPENSEARCH_VERSION:?see docs/os.md}\n"
        "    environment:\n      X: ${UNSET_VAR}\n")
    return tmp_path


@pytest.mark.docker
def test_vm_max_map_count_is_detected_from_the_raw_files_when_config_fails(tmp_path):
    proj = pf.load(str(failing_project_with_search(tmp_path)))
    assert proj.source == "raw" and "opensearch" in proj.services
    findings = pf.run_checks(proj, fake_facts(max_map_count=65530))
    f = by(findings, "host.vm_max_map_count", "vm.max_map_count")
    assert f.severity == pf.BLOCKER
    assert "service opensearch (found in the compose files: `docker compose config` failed)" in f.message
    cfg = by(findings, "project.compose_config", "docker compose config")
    assert "required variable OPENSEARCH_VERSION is missing a value" in cfg.message
    assert "UNSET_VAR" not in cfg.message    # compose warns about it (when it gets that far): not the error


@pytest.mark.parametrize(("image", "name"), [
    ("opensearchproject/opensearch:${OPENSEARCH_VERSION:?see docs/os.md}", "opensearch"),
    ("${REGISTRY}/elasticsearch:${TAG}", "elasticsearch"),
    ("registry.local:5000/search/opensearch@sha256:abc", "opensearch"),
])
def test_image_name_of_raw_images(image, name):
    assert pf._image_name(image) == name


def provided_project(tmp_path, registry=None, files=()):
    sec = tmp_path / "secrets"
    sec.mkdir()
    for name, content in files:
        (sec / name).write_bytes(content)
    if registry is not None:
        (tmp_path / "hyhome-secrets.yml").write_text(registry)
    names = ("slack_webhook", "smtp_password", "grafana_oauth_client_secret", "db_password")
    return project([svc("alertmanager", secrets=[SecretRef("slack_webhook", "/run/secrets/slack_webhook"),
                                                  SecretRef("smtp_password", "/run/secrets/smtp_password")]),
                    svc("grafana", secrets=[SecretRef("slack_webhook", "/run/secrets/slack_webhook"),
                                            SecretRef("grafana_oauth_client_secret", "/run/secrets/x"),
                                            SecretRef("db_password", "/run/secrets/db_password")])],
                   working_dir=str(tmp_path), secrets={n: Secret(n, str(sec / n)) for n in names})


def test_provided_secrets_inferred_from_names_say_who_must_supply_them(tmp_path):
    findings = pf.run_checks(provided_project(tmp_path), fake_facts())
    got = {f.subject: f for f in by(findings, "project.secrets")}
    hook = got["slack_webhook"]
    assert (hook.severity, hook.fixed_by) == ("warning", "secrets")    # placeholder from the secrets step
    assert hook.message.startswith("provided secret secrets/slack_webhook is missing (kind provided inferred from "
                                   "its name); read by alertmanager, grafana: the secrets step writes a placeholder")
    assert hook.hint.startswith("a person supplies it (a webhook URL issued by the receiving service")
    assert hook.hint.endswith("): write it to secrets/slack_webhook (read by alertmanager, grafana); if the stack can "
                              "generate it instead, give slack_webhook a kind in hyhome-secrets.yml")
    assert "outside SMTP relay" in got["smtp_password"].hint and "read by alertmanager" in got["smtp_password"].hint
    assert "identity provider" in got["grafana_oauth_client_secret"].hint
    assert (got["db_password"].severity, got["db_password"].fixed_by) == ("error", "secrets")   # generated
    assert pf.blocking(findings, ["secrets"]) == []


def test_inferred_provided_placeholder_warns_on_every_run(tmp_path):
    proj = provided_project(tmp_path, files=[("slack_webhook", b"hyhome-placeholder:slack_webhook\n")])
    f = by(pf.run_checks(proj, fake_facts()), "project.secrets", "slack_webhook")
    assert (f.severity, f.fixed_by) == ("warning", None)
    assert f.message == ("provided secret secrets/slack_webhook still holds the placeholder, not a working value "
                         "(kind provided inferred from its name); read by alertmanager, grafana")


def test_registry_overrides_the_inferred_kind(tmp_path):
    proj = provided_project(tmp_path, registry=(
        "slack_webhook: {kind: password}\n"                                  # the stack generates it after all
        "smtp_password: {kind: provided, hint: the relay's app password}\n"  # declared: no placeholder, blocks
    ))
    got = {f.subject: f for f in by(pf.run_checks(proj, fake_facts()), "project.secrets")}
    assert (got["slack_webhook"].severity, got["slack_webhook"].fixed_by) == ("error", "secrets")
    assert "provided" not in got["slack_webhook"].message
    smtp = got["smtp_password"]
    assert (smtp.severity, smtp.fixed_by) == ("error", None)
    assert "(kind provided in hyhome-secrets.yml); read by alertmanager; only a person can supply it" in smtp.message
    assert smtp.hint == ("a person supplies it (the relay's app password): write it to secrets/smtp_password "
                         "(read by alertmanager)")


def env_project(tmp_path, example, refs):
    if example is not None:
        (tmp_path / ".env.example").write_text(example)
    loc = Location(str(tmp_path / "compose.yaml"), 7)
    return project(working_dir=str(tmp_path), env_refs=[EnvRef(n, False, req, loc, text=t) for n, req, t in refs])


def test_required_empty_variables_block_unless_the_env_step_will_set_them(tmp_path):
    proj = env_project(tmp_path, "KAFKA_CLUSTER_ID=\nSITE=example\nOPTS=\n", [
        ("KAFKA_CLUSTER_ID", False, "${KAFKA_CLUSTER_ID}"), ("SITE", False, "$SITE"), ("OPTS", False, "${OPTS}"),
        ("DEBUG", False, "${DEBUG:+--debug}"), ("VOTERS", True, "${VOTERS:?}")])
    findings = pf.run_checks(proj, fake_facts())
    got = {f.subject: f for f in by(findings, "project.env_vars")}
    assert set(got) == {"KAFKA_CLUSTER_ID", "SITE", "OPTS", "VOTERS"}                 # ${X:+alt} needs nothing
    assert got["SITE"].fixed_by == "env"                                             # the example has a value
    cid = got["KAFKA_CLUSTER_ID"]
    assert (cid.severity, cid.fixed_by) == ("error", None)
    assert cid.message == ("referenced without a default (compose.yaml:7), not set in .env, and nothing will set "
                           "it: .env.example leaves it empty and the inventory does not set it; Compose substitutes "
                           "an empty string")
    assert "declare it in env_generated (KAFKA_CLUSTER_ID: uuid, hex or kafka-cluster-id)" in cid.hint
    assert "VOTERS" in [f.subject for f in pf.blocking(findings, ["env"])]
    assert ".env.example leaves it out" in got["VOTERS"].message
    # the inventory sets (or generates) two, one may stay empty: the env step handles all
    opts = pf.Options(env_supplied=("KAFKA_CLUSTER_ID", "VOTERS"), env_allow_empty=("OPTS",))
    findings = pf.run_checks(proj, fake_facts(), opts)
    assert {f.subject: f.fixed_by for f in by(findings, "project.env_vars")} == {
        "KAFKA_CLUSTER_ID": "env", "OPTS": "env", "SITE": "env", "VOTERS": "env"}
    assert pf.blocking(findings, ["env"]) == []
    # once .env exists: an allowed empty value is fine, a required one never is
    (tmp_path / ".env").write_text("KAFKA_CLUSTER_ID=MkU3OEVBNTcwNTJENDM2Qk\nSITE=x\nOPTS=\nVOTERS=\n")
    findings = pf.run_checks(proj, fake_facts(), pf.Options(env_allow_empty=("OPTS", "VOTERS")))
    assert [f.subject for f in by(findings, "project.env_vars") if f.severity != pf.INFO] == ["VOTERS"]


def test_missing_external_network_is_left_to_the_compose_step(tmp_path):
    proj = project(networks={"edge": Network("edge", "proxy", True)}, volumes={"bk": {"external": True}})
    findings = pf.run_checks(proj, fake_facts(networks={"bridge"}))
    net = by(findings, "project.networks", "proxy")
    assert (net.severity, net.fixed_by) == ("error", "compose")
    assert net.message == ("external network does not exist; Compose will not create it, the compose step does "
                           "(compose_create_networks)")
    assert [f.rule for f in pf.blocking(findings, ["compose"])] == ["project.volumes"]   # volumes stay blockers
    table = "\n".join(pf.render_table(proj, findings, ["compose"]))
    assert "[left to the later compose step]" in table


def test_prepare_only_turns_boot_time_checks_into_warnings():
    proj = project([svc("search", image="opensearchproject/opensearch:2.13.0", ports=[Port(9200, 9200, None)])],
                   networks={"edge": Network("edge", "proxy", True)}, volumes={"bk": {"external": True}})
    facts = fake_facts(max_map_count=65530, networks={"bridge"},
                       listeners=[pf.Listener("tcp", ANY, 9200, "java (pid 4)")],
                       disks=[pf.Disk("project filesystem", "/srv/p", 1 * GIB)])
    booting = pf.run_checks(proj, facts)
    boot_checks = ["host.vm_max_map_count", "host.ports", "project.networks", "project.volumes"]
    assert [f.rule for f in pf.blocking(booting)] == ["host.vm_max_map_count", "host.disk", "host.ports",
                                                       "project.networks", "project.volumes"]
    preparing = pf.run_checks(proj, facts, pf.Options(start_stack=False))
    assert [f.rule for f in pf.blocking(preparing)] == ["host.disk"]     # preparing writes files: disk counts
    warned = [f for f in preparing if f.rule in boot_checks and f.severity == pf.WARNING]
    assert sorted({f.rule for f in warned}) == sorted(boot_checks)
    assert all(f.message.endswith("-- needed before the stack starts (this run only prepares it: hyhome_start_stack "
                                  "is false)") for f in warned)


def test_read_only_host_paths_are_reported_not_left_to_data_dirs(tmp_path):
    present = tmp_path / "hostroot"
    present.mkdir()
    mounts = [Mount("bind", "/rootfs", True, str(present)),                      # the host's, present
              Mount("bind", "/dev/disk", True, "/nonexistent/hyhome-dev-disk"),  # the host's, missing here
              Mount("bind", "/data", False, str(tmp_path / "proj" / "data"))]    # the project's data
    (tmp_path / "proj").mkdir()
    proj = project([svc("cadvisor", mounts=mounts)], working_dir=str(tmp_path / "proj"))
    findings = pf.run_checks(proj, fake_facts())
    rows = {f.subject: f for f in by(findings, "project.bind_dirs")}
    assert set(rows) == {"/nonexistent/hyhome-dev-disk", "data"}
    host = rows["/nonexistent/hyhome-dev-disk"]
    assert (host.severity, host.fixed_by) == ("warning", None)
    assert host.message == "host path, not managed: missing on this host; bind-mounted read-only by cadvisor"
    assert "nothing for day0 to create" in host.hint
    assert rows["data"].fixed_by == "data_dirs"


# --------------------------------------------------------------------------------------------
# Locations: every project finding points at the compose file and line that causes it


LOCATED_FILES = {
    "compose.yaml": (
        "include:\n"
        "  - search/compose.yml\n"
        "services:\n"
        "  web:\n"
        "    extends: {file: base.yml, service: base}\n"
        "    image: nginx:1.25\n"
        "    environment:\n"
        "      SITE: ${SITE:?set SITE in .env}\n"
        "    networks: [default, edge]\n"
        "    secrets: [db_password]\n"
        "    volumes:\n"
        "      - ./data/shared:/srv/shared\n"
        "      - type: bind\n"
        "        source: ./conf/app.conf\n"
        "        target: /etc/app.conf\n"
        "        read_only: true\n"
        "  worker:\n"
        "    image: busybox:1.36\n"
        "    volumes:\n"
        "      - ./data/shared:/shared\n"
        "      - backups:/backups\n"
        "secrets:\n"
        "  db_password:\n"
        "    file: ./secrets/db_password\n"
        "networks:\n"
        "  edge:\n"
        "    external: true\n"
        "volumes:\n"
        "  backups:\n"
        "    external: true\n"
        "    name: site-backups\n"),
    "base.yml": (
        "services:\n"
        "  base:\n"
        "    image: busybox:1.36\n"
        "    volumes:\n"
        "      - ./data/base:/base\n"),
    # sorts before web by name, comes after compose.yaml in file order: data/shared is web's line
    "search/compose.yml": (
        "services:\n"
        "  opensearch:\n"
        "    image: opensearchproject/opensearch:2.13.0\n"
        "    volumes:\n"
        "      - ../data/search:/usr/share/opensearch/data\n"
        "      - ../data/shared:/shared\n"),
    "conf/app.conf.example": "listen 80\n",
}


def located_project(tmp_path):
    for rel, text in LOCATED_FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def line_of(root, rel, needle):
    """The 1-based line of ``rel`` holding ``needle`` (exactly one), so expectations read as text."""
    lines = [i for i, text in enumerate((root / rel).read_text().splitlines(), 1) if needle in text]
    assert len(lines) == 1, (rel, needle, lines)
    return lines[0]


def where(findings, check, subject, root):
    f = by(findings, check, subject)
    return (os.path.relpath(f.file, root) if f.file else None), f.line


def expected_locations(root):
    """(check, subject) -> (file relative to ``root``, line); the extends: base's mount included
    (compose merges a base's volumes into the service, and so does the raw fallback)."""
    base = {("project.bind_dirs", "data/base"): ("base.yml", line_of(root, "base.yml", "./data/base:/base"))}
    return {**base,
        ("project.secrets", "db_password"): ("compose.yaml", line_of(root, "compose.yaml", "  db_password:")),
        ("project.bind_dirs", "data/shared"): ("compose.yaml", line_of(root, "compose.yaml", "./data/shared:/srv")),
        ("project.bind_dirs", "data/search"): ("search/compose.yml", line_of(root, "search/compose.yml",
                                                                            "../data/search:")),
        ("project.bind_files", "conf/app.conf"): ("compose.yaml", line_of(root, "compose.yaml", "source: ./conf")),
        ("project.networks", "edge"): ("compose.yaml", line_of(root, "compose.yaml", "  edge:")),
        ("project.volumes", "site-backups"): ("compose.yaml", line_of(root, "compose.yaml", "  backups:")),
        ("host.vm_max_map_count", "vm.max_map_count"): ("search/compose.yml", line_of(root, "search/compose.yml",
                                                                                      "  opensearch:")),
    }


def unlocated(findings):
    """Problems of project checks that point nowhere."""
    return [f"{f.rule} {f.subject}" for f in findings
            if f.rule.startswith("project.") and f.severity != pf.INFO and not f.file]


def test_findings_point_at_their_compose_lines_when_config_fails(tmp_path):
    """From the raw files (compose stopped on a required variable): the failure points at the
    variable's reference, every other finding at the line that declares or mounts what it is about."""
    root = located_project(tmp_path)
    error = ('time="x" level=warning msg="The \\\\"OTHER\\\\" variable is not set. Defaulting to a blank string."\n'
             "error while interpolating services.web.environment.SITE: required variable SITE is missing a value: "
             "set SITE in .env\n")
    proj = project_from_raw(load_raw(str(root)), config_error=error)
    findings = pf.run_checks(proj, fake_facts(max_map_count=65530))
    site = ("compose.yaml", line_of(root, "compose.yaml", "${SITE:?"))
    assert where(findings, "project.compose_config", "docker compose config", root) == site
    assert where(findings, "project.env_vars", "SITE", root) == site
    for (check, subject), loc in expected_locations(root).items():
        assert where(findings, check, subject, root) == loc, (check, subject)
    assert where(findings, "project.env_file", ".env", root) == (".env", None)
    assert unlocated(findings) == []


@pytest.mark.docker
@pytest.mark.parametrize("with_env", [True, False], ids=["config-passes", "config-fails"])
def test_findings_point_at_their_compose_lines(tmp_path, with_env):
    root = located_project(tmp_path)
    if with_env:
        (root / ".env").write_text("SITE=example.org\n")
    proj = pf.load(str(root))
    assert proj.source == ("config" if with_env else "raw")
    findings = pf.run_checks(proj, fake_facts(max_map_count=65530))
    for (check, subject), loc in expected_locations(root).items():
        assert where(findings, check, subject, root) == loc, (check, subject)
    if not with_env:   # compose's real error: the reference of the variable it stopped on
        assert where(findings, "project.compose_config", "docker compose config", root) == (
            "compose.yaml", line_of(root, "compose.yaml", "${SITE:?"))
    assert unlocated(findings) == []
    # JSON: the file relative to the project, the line a number; the table's WHERE column
    report = pf.build_report(proj, findings)
    rows = {(f["rule"], f["subject"]): (f["file"], f["line"]) for f in report["findings"]}
    edge = ("compose.yaml", line_of(root, "compose.yaml", "  edge:"))
    assert rows[("project.networks", "edge")] == edge
    table = pf.render_table(proj, findings)
    assert table[1].split() == ["SEVERITY", "RULE", "SUBJECT", "WHERE", "MESSAGE"]
    row = next(line for line in table if "project.networks" in line)
    assert row.split()[:4] == ["error", "project.networks", "edge", f"compose.yaml:{edge[1]}"]


def test_mounts_carry_the_line_of_their_volumes_entry(tmp_path):
    root = located_project(tmp_path)
    (root / "compose.yaml").write_text(LOCATED_FILES["compose.yaml"].replace(
        "  worker:\n    image: busybox:1.36\n",
        "  worker:\n    image: busybox:1.36\n    tmpfs: /run/worker:size=1m\n"))
    raw = load_raw(str(root))
    proj = project_from_raw(raw)
    got = {(s.name, m.target): (os.path.relpath(m.location.file, root), m.location.line)
           for s in proj.services.values() for m in s.mounts}
    compose = lambda needle: ("compose.yaml", line_of(root, "compose.yaml", needle))  # noqa: E731
    assert got == {
        ("web", "/srv/shared"): compose("./data/shared:/srv/shared"),
        ("web", "/etc/app.conf"): compose("source: ./conf/app.conf"),          # a long entry: its source line
        ("web", "/base"): ("base.yml", line_of(root, "base.yml", "./data/base:/base")),   # from its extends: base
        ("worker", "/shared"): compose("./data/shared:/shared"),
        ("worker", "/backups"): compose("backups:/backups"),
        ("worker", "/run/worker"): compose("tmpfs: /run/worker"),
        ("opensearch", "/usr/share/opensearch/data"): ("search/compose.yml", 5),
        ("opensearch", "/shared"): ("search/compose.yml", 6),
    }
    decl = {section: {k: (os.path.relpath(v.file, root), v.line) for k, v in keys.items()}
            for section, keys in proj.declarations.items() if keys}
    assert decl == {
        "services": {"web": compose("  web:"), "worker": compose("  worker:"),
                     "opensearch": ("search/compose.yml", 2)},
        "networks": {"edge": compose("  edge:")},
        "volumes": {"backups": compose("  backups:")},
        "secrets": {"db_password": compose("  db_password:")},
    }


@pytest.mark.parametrize(("error", "expected"), [
    ('service "web" refers to undefined network nope: invalid compose project', ("/nonexistent/demo/compose.yaml", 4)),
    ("validating /nonexistent/demo/compose.yaml: services.web Additional property foo is not allowed",
     ("/nonexistent/demo/compose.yaml", 4)),
    ("decoding failed due to the following error(s):\n\nerror decoding 'services[web].mem_limit': invalid size: 'abc'",
     ("/nonexistent/demo/compose.yaml", 4)),
    ("validating /nonexistent/demo/other.yaml: additional properties 'x' not allowed",
     ("/nonexistent/demo/other.yaml", None)),                                   # the file, compose gives no line
    ('service "ghost" refers to undefined volume v: invalid compose project', (None, None)),
    ("something else entirely", (None, None)),
])
def test_compose_config_failure_points_at_what_it_names(error, expected):
    proj = project([svc("web", location=Location("/nonexistent/demo/compose.yaml", 4))], config_error=error)
    proj.files.append("/nonexistent/demo/other.yaml")
    f = by(pf.run_checks(proj, fake_facts()), "project.compose_config", "docker compose config")
    assert (f.file, f.line) == expected


def test_unreadable_compose_file_is_located():
    bad = Location("/nonexistent/demo/compose.yaml", 7)
    proj = project(file_errors=[FileError(bad, "YAML syntax error: mapping values are not allowed here")])
    f = by(pf.run_checks(proj, fake_facts()), "project.compose_config", "compose.yaml:7")
    assert (f.severity, f.file, f.line) == ("error", bad.file, 7)


def test_host_checks_point_at_the_services_that_need_them():
    compose, search = "/nonexistent/demo/compose.yaml", "/nonexistent/demo/search.yml"
    proj = project([svc("os-2", image="opensearchproject/opensearch:2.13.0", location=Location(search, 3)),
                    svc("os-1", image="opensearchproject/opensearch:2.13.0", location=Location(compose, 9)),
                    svc("web", ports=[Port(80, 8080, None)], location=Location(compose, 20))])
    proj.files.append(search)
    findings = pf.run_checks(proj, fake_facts(max_map_count=65530,
                                              bindings=[pf.Binding("other-1", "other", "tcp", ANY, 8080)]))
    vm = by(findings, "host.vm_max_map_count", "vm.max_map_count")
    assert (vm.file, vm.line) == (compose, 9)              # the first in file order, the others in the text
    assert "(service os-1 (compose.yaml:9), os-2 (search.yml:3))" in vm.message
    port = by(findings, "host.ports", "tcp/8080")
    assert (port.file, port.line) == (compose, 20)


# ---------------------------------------------------------------- unusable files: exit 2, one line, nothing written

@pytest.mark.parametrize(("content", "words"), [
    (bytes(range(256)), "contains a NUL byte"),
    ("services:\n  a:\n    image: caf\xe9\n".encode("latin-1"), "is not UTF-8 text"),
    (b"# only a comment\n", "empty compose file"),
    (b"just a string\n", "not a mapping"),
    (b"services:\n  a:\n    command: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested deeper than 100 levels"),
], ids=["binary", "latin1", "empty", "scalar", "deep"])
def test_cli_unusable_compose_file_exits_2_naming_it(tmp_path, capsys, content, words):
    (tmp_path / "compose.yaml").write_bytes(content)
    report = tmp_path / "report.json"
    assert pf.cli([str(tmp_path), "--json", str(report), "--no-ports"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"preflight: {tmp_path / 'compose.yaml'}: ") and words in err
    assert not report.exists()


def test_alias_bomb_in_the_secrets_registry_is_a_blocker(tmp_path):
    lines = ['x-a: &l0 ["lol"]'] + [f"x-{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    registry = tmp_path / "hyhome-secrets.yml"
    registry.write_text("\n".join(lines) + "\nsecrets: {a: *l8}\n")
    data, problem = pf.load_secrets_registry(str(registry))
    assert data == {} and re.fullmatch(r"YAML aliases expand to more than [\d,]+ nodes \(alias bomb\?\)", problem)
    registry.write_bytes(b"a: \0")
    assert pf.load_secrets_registry(str(registry))[1] == \
        "secrets registry contains a NUL byte (offset 3): a binary file, not YAML text"
