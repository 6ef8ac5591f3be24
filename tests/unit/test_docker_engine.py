"""Docker Engine set-up: daemon.json merge and validation, version parsing, the host's Debian mirror,
and the two modules' contracts (docker_daemon_config writes nothing on error or in check mode)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import docker_engine as de
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from test_module_wrappers import run  # main() in this process, its JSON result

# --------------------------------------------------------------------------------------------
# versions

@pytest.mark.parametrize(("text", "want"), [
    ("Docker version 20.10.24+dfsg1, build 5d6db84", (20, 10, 24)),
    ("20.10.24+dfsg1", (20, 10, 24)),
    ("26.1.5+dfsg1", (26, 1, 5)),
    ("Docker version 26.1.5+dfsg1, build a72d7cd", (26, 1, 5)),
    ("v2.26.1", (2, 26, 1)),
    ("2.26.1-4", (2, 26, 1)),
    ("Docker Compose version 2.26.1-4", (2, 26, 1)),
    ("Docker Compose version v2.29.7", (2, 29, 7)),
    ("docker-compose version 1.29.2, build unknown", (1, 29, 2)),
    ("27.3", (27, 3)),
    ("1.2.3.4", (1, 2, 3, 4)),
])
def test_parse_version(text, want):
    assert de.parse_version(text) == want


@pytest.mark.parametrize("garbage", [None, "", "unknown", "2", "build 5", "v", "..", "1..2", 20.10, b"20.10",
                                     ["20.10"], "x" * 5000 + " 20.10", "abc1.2"])
def test_parse_version_garbage_is_none(garbage):
    assert de.parse_version(garbage) is None


def test_at_least_and_check_minimum():
    assert de.at_least("Docker version 20.10.24+dfsg1, build 5d6db84", "20.10")
    assert de.at_least("26.1.5+dfsg1", "20.10")
    assert not de.at_least("19.03.15", "20.10")
    assert de.at_least("2.26.1-4", "2.17")
    assert not de.at_least("1.29.2", "2.17")
    assert de.at_least("20.10", "20.10.0")            # padded: equal
    assert not de.at_least("garbage", "20.10")        # unreadable installed version: not enough
    assert de.check_minimum("Docker Engine", "26.1.5+dfsg1", "20.10") is None
    assert de.check_minimum("Docker Engine", "19.03.15", "20.10") == \
        "Docker Engine 19.03.15 is older than the supported minimum 20.10"
    assert "cannot read a version" in de.check_minimum("Compose", "nonsense", "2.17")


@pytest.mark.parametrize("minimum", ["", "latest", "2", None])
def test_unreadable_minimum_is_an_error(minimum):
    with pytest.raises(HyHomeError, match="is not a version"):
        de.at_least("20.10.24", minimum)


# --------------------------------------------------------------------------------------------
# daemon.json: parse

def test_parse_empty_and_missing():
    assert de.parse(None) == {}
    assert de.parse("") == {}
    assert de.parse(b"  \n") == {}
    assert de.parse(b"\xef\xbb\xbf{\"debug\": true}") == {"debug": True}   # a BOM is tolerated


@pytest.mark.parametrize(("text", "match"), [
    ('{"debug": true,}', r"not valid JSON \(line 1, column 16"),
    ('{\n  "debug": tru\n}', r"line 2"),
    ("[1, 2]", "JSON object.*not a JSON array"),
    ('"text"', "not a JSON string"),
    ("42", "not a JSON number"),
    ("null", "not a JSON null"),
    ('{"debug": true, "debug": false}', "appears twice"),
    (b"\xff\xfe{}", "not UTF-8"),
    ("[" * 100000, "nests too deeply|not valid JSON"),
])
def test_parse_malformed(text, match):
    with pytest.raises(de.DaemonConfigError, match=match):
        de.parse(text, "daemon.json")


def test_parse_refuses_huge_file():
    with pytest.raises(de.DaemonConfigError, match="larger than"):
        de.parse(b" " * (de.MAX_BYTES + 1))


# --------------------------------------------------------------------------------------------
# daemon.json: merge

WANTED = de.wanted_config(default_address_pools=[{"base": "172.16.0.0/12", "size": 24}])


def test_wanted_config_defaults_and_unmanaged():
    assert WANTED == {"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"},
                      "live-restore": True, "default-address-pools": [{"base": "172.16.0.0/12", "size": 24}]}
    bare = de.wanted_config(log_driver="", live_restore=None)
    assert bare == {}
    with_mirror = de.wanted_config(registry_mirrors=["https://mirror.example"], settings={"mtu": 1400})
    assert with_mirror["registry-mirrors"] == ["https://mirror.example"] and with_mirror["mtu"] == 1400


def test_merge_keeps_user_keys_and_order_and_merges_log_opts():
    existing = {"data-root": "/srv/docker", "log-opts": {"tag": "{{.Name}}", "max-size": "1m"}, "debug": True}
    merged = de.merge(existing, WANTED)
    assert list(merged)[:3] == ["data-root", "log-opts", "debug"]
    assert merged["data-root"] == "/srv/docker" and merged["debug"] is True
    assert merged["log-opts"] == {"tag": "{{.Name}}", "max-size": "10m", "max-file": "3"}
    assert existing["log-opts"]["max-size"] == "1m"          # input untouched


def test_merge_drops_other_drivers_log_opts():
    existing = {"log-driver": "syslog", "log-opts": {"syslog-address": "udp://1.2.3.4:514"}}
    merged = de.merge(existing, WANTED)
    assert merged["log-driver"] == "json-file"
    assert merged["log-opts"] == {"max-size": "10m", "max-file": "3"}
    only_driver = de.merge(existing, {"log-driver": "json-file"})
    assert "log-opts" not in only_driver


def test_merge_replaces_lists_and_scalars():
    existing = {"default-address-pools": [{"base": "10.0.0.0/8", "size": 16}], "live-restore": False,
                "registry-mirrors": ["https://old.example"]}
    merged = de.merge(existing, de.wanted_config(default_address_pools=[{"base": "172.16.0.0/12", "size": 24}],
                                                 registry_mirrors=["https://new.example"]))
    assert merged["default-address-pools"] == [{"base": "172.16.0.0/12", "size": 24}]
    assert merged["registry-mirrors"] == ["https://new.example"] and merged["live-restore"] is True


# --------------------------------------------------------------------------------------------
# daemon.json: validate

def test_validate_accepts_the_wanted_config_and_unknown_keys():
    assert de.validate(de.merge({"some-future-key": [1]}, WANTED)) == []
    assert de.unchecked_keys({"some-future-key": 1, "debug": True}) == ["some-future-key"]


@pytest.mark.parametrize(("config", "match"), [
    ({"live-restore": "yes"}, "live-restore must be a JSON boolean, not a string"),
    ({"debug": 1}, "debug must be a JSON boolean, not a number"),
    ({"mtu": "1500"}, "mtu must be a JSON integer"),
    ({"mtu": True}, "mtu must be a JSON integer, not a boolean"),
    ({"log-opts": ["max-size=10m"]}, "log-opts must be a JSON object"),
    ({"log-opts": {"max-file": 3}}, "log-opts.max-file must be a string"),
    ({"log-opts": {"max-size": "10 MB"}}, "max-size '10 MB' must be a size"),
    ({"log-opts": {"max-file": "0"}}, "max-file '0' must be a positive"),
    ({"log-driver": "json file"}, "not a driver name"),
    ({"default-address-pools": {"base": "10.0.0.0/8"}}, "must be a JSON list"),
    ({"default-address-pools": ["10.0.0.0/8"]}, r"\[0\] must be an object"),
    ({"default-address-pools": [{"base": "10.0.0.0/33", "size": 24}]}, "not a valid CIDR"),
    ({"default-address-pools": [{"base": "not-an-ip", "size": 24}]}, "not a valid CIDR"),
    ({"default-address-pools": [{"base": "10.0.0.0", "size": 24}]}, "needs a prefix length"),
    ({"default-address-pools": [{"base": "10.0.0.0/8"}]}, "size must be an integer"),
    ({"default-address-pools": [{"base": "10.0.0.0/8", "size": "24"}]}, "size must be an integer"),
    ({"default-address-pools": [{"base": "10.0.0.0/16", "size": 8}]}, "between the base's prefix length 16 and 32"),
    ({"default-address-pools": [{"base": "10.0.0.0/16", "size": 33}]}, "between"),
    ({"default-address-pools": [{"base": 10, "size": 24}]}, "base must be a CIDR string"),
    ({"default-address-pools": [{"base": "10.0.0.0/8", "size": 24, "gw": "x"}]}, "unknown keys gw"),
    ({"registry-mirrors": "https://m.example"}, "must be a JSON list"),
    ({"registry-mirrors": ["ftp://m.example"]}, r"must be an http:// or https:// URL"),
    ({"registry-mirrors": ["m.example"]}, "must be an http"),
    ({"registry-mirrors": ["https://user:pw@m.example"]}, "must not carry credentials"),
    ({"registry-mirrors": [5]}, "must be a URL string"),
])
def test_validate_rejects(config, match):
    problems = de.validate(config)
    assert problems, config
    assert any(__import__("re").search(match, p) for p in problems), problems


def test_validate_ipv6_pool_and_host_bits_like_dockerd():
    assert de.validate({"default-address-pools": [{"base": "fd00:dead:beef::/48", "size": 64}]}) == []
    assert de.validate({"default-address-pools": [{"base": "172.17.0.0/12", "size": 24}]}) == []


# --------------------------------------------------------------------------------------------
# plan

def test_plan_new_file_then_no_change():
    first = de.plan(None, WANTED)
    assert first.changed and first.restart_needed and json.loads(first.text) == WANTED
    again = de.plan(first.text, WANTED)
    assert not again.changed and again.changed_keys == []


def test_plan_ignores_formatting_and_keeps_user_key():
    text = '{"log-driver":"json-file","log-opts":{"max-size":"10m","max-file":"3"},"live-restore":true,' \
           '"default-address-pools":[{"base":"172.16.0.0/12","size":24}],"dns":["10.0.0.53"]}'
    p = de.plan(text, WANTED)
    assert not p.changed and p.after["dns"] == ["10.0.0.53"]


def test_plan_reload_only_when_every_changed_key_is_reloadable():
    text = de.render(de.merge({}, WANTED))
    p = de.plan(text, {**WANTED, "live-restore": False, "registry-mirrors": ["https://m.example"]})
    assert p.changed_keys == ["live-restore", "registry-mirrors"]
    assert p.reload_needed and not p.restart_needed
    q = de.plan(text, {**WANTED, "log-opts": {"max-size": "20m"}})
    assert q.restart_needed and not q.reload_needed


def test_plan_refuses_invalid_wanted_and_invalid_result():
    with pytest.raises(de.DaemonConfigError, match="wanted daemon settings are invalid"):
        de.plan(None, {"default-address-pools": [{"base": "300.0.0.0/8", "size": 24}]})
    with pytest.raises(de.DaemonConfigError, match=r"result would be invalid.*left untouched"):
        de.plan('{"registry-mirrors": "oops", "live-restore": "yes"}', {"log-driver": "json-file"})


# --------------------------------------------------------------------------------------------
# the host's Debian mirror

def test_debian_mirror_one_line_and_deb822():
    one_line = ("/etc/apt/sources.list",
                "# comment\ndeb http://security.example/debian-security bookworm-security main\n"
                "deb [signed-by=/usr/share/keyrings/x.gpg arch=amd64] http://mirror.example/debian/ bookworm "
                "main contrib\n")
    assert de.debian_mirror([one_line], "bookworm") == "http://mirror.example/debian"
    deb822 = ("/etc/apt/sources.list.d/debian.sources",
              "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
              "Components: main\n\n"
              "Types: deb deb-src\nURIs: https://m2.example/debian\nSuites: bookworm bookworm-updates\n"
              "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    assert de.debian_mirror([deb822], "bookworm") == "https://m2.example/debian"


def test_debian_mirror_none():
    others = [("/etc/apt/sources.list.d/node.sources",
               "Types: deb\nURIs: https://deb.nodesource.example/node_20.x\nSuites: nodistro\nComponents: main\n"),
              ("/etc/apt/sources.list.d/off.sources",
               "Enabled: no\nTypes: deb\nURIs: http://m.example/debian\nSuites: bookworm\nComponents: main\n"),
              ("/etc/apt/sources.list", "deb-src http://m.example/debian bookworm main\n"
                                        "deb cdrom:[Debian]/ bookworm main\n"
                                        "deb http://m.example/debian bookworm contrib\n")]
    assert de.debian_mirror(others, "bookworm") is None
    assert de.debian_mirror([], "bookworm") is None


# --------------------------------------------------------------------------------------------
# the modules' contracts

def daemon_args(path: Path, **kw) -> dict:
    return {"path": str(path), "default_address_pools": [{"base": "172.16.0.0/12", "size": 24}],
            "validate_with_dockerd": False, **kw}


def test_module_writes_atomically_then_is_idempotent(tmp_path):
    path = tmp_path / "docker" / "daemon.json"
    checked = run("docker_daemon_config", daemon_args(path), check=True, diff=True)
    assert checked["changed"] and not path.exists() and '"live-restore": true' in checked["diff"]["after"]
    first = run("docker_daemon_config", daemon_args(path))
    assert first["changed"] and first["restart_needed"] and first["dockerd_validation"] == "skipped"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert json.loads(path.read_text())["log-opts"] == {"max-size": "10m", "max-file": "3"}
    assert os.listdir(path.parent) == ["daemon.json"]          # no temp file left behind
    second = run("docker_daemon_config", daemon_args(path))
    assert not second["changed"] and not second["restart_needed"]


def test_module_keeps_user_key(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text('{"data-root": "/srv/docker", "log-opts": {"tag": "x"}}')
    res = run("docker_daemon_config", daemon_args(path))
    data = json.loads(path.read_text())
    assert res["changed"] and data["data-root"] == "/srv/docker" and data["log-opts"]["tag"] == "x"


@pytest.mark.parametrize("content", ['{"debug": true,', "[]", '{"registry-mirrors": "oops"}', "\x00\x01"])
def test_module_leaves_a_bad_file_untouched(tmp_path, content):
    path = tmp_path / "daemon.json"
    path.write_text(content)
    before = path.stat().st_mtime_ns
    res = run("docker_daemon_config", daemon_args(path))
    assert res["failed"] and str(path) in res["msg"]
    assert path.read_text() == content and path.stat().st_mtime_ns == before
    assert os.listdir(tmp_path) == ["daemon.json"]


def test_module_refuses_bad_options(tmp_path):
    path = tmp_path / "daemon.json"
    res = run("docker_daemon_config", daemon_args(path, default_address_pools=[{"base": "10.0.0.0/40", "size": 24}]))
    assert res["failed"] and "not a valid CIDR" in res["msg"] and not path.exists()
    res = run("docker_daemon_config", daemon_args(path, registry_mirrors=["https://u:secret@m.example"]))
    assert res["failed"] and "credentials" in res["msg"] and "secret" not in res["msg"]


def test_module_reports_dockerd_without_validate(tmp_path):
    fake = tmp_path / "dockerd"
    fake.write_text("#!/bin/sh\necho 'unknown flag: --validate' >&2\nexit 125\n")
    fake.chmod(0o755)
    res = run("docker_daemon_config", daemon_args(tmp_path / "daemon.json", validate_with_dockerd=True,
                                                 dockerd=str(fake)))
    assert res["dockerd_validation"] == "unsupported" and res["changed"]


def test_module_stops_when_dockerd_rejects(tmp_path):
    fake = tmp_path / "dockerd"
    fake.write_text('#!/bin/sh\necho "unable to configure the Docker daemon with file $3: bad key" >&2\nexit 1\n')
    fake.chmod(0o755)
    path = tmp_path / "daemon.json"
    res = run("docker_daemon_config", daemon_args(path, validate_with_dockerd=True, dockerd=str(fake)))
    assert res["failed"] and "dockerd rejects" in res["msg"] and "bad key" in res["msg"] and not path.exists()
    ok = tmp_path / "dockerd-ok"
    ok.write_text("#!/bin/sh\nexit 0\n")
    ok.chmod(0o755)
    assert run("docker_daemon_config", daemon_args(path, validate_with_dockerd=True,
                                                   dockerd=str(ok)))["dockerd_validation"] == "passed"


def test_info_module_finds_search_engines_without_docker(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "compose.yaml").write_text(
        "services:\n"
        "  search:\n    image: ${SEARCH_IMAGE:-opensearchproject/opensearch:2.11.0}\n"
        "  es:\n    image: docker.elastic.co/elasticsearch/elasticsearch:8.1@sha256:" + "a" * 64 + "\n"
        "  web:\n    image: nginx:1.25\n")
    res = run("docker_engine_info", {"project_dir": str(proj), "docker_cli": str(tmp_path / "no-docker"),
                                     "dockerd": str(tmp_path / "no-dockerd")})
    assert res["search_services"] == ["es", "search"]
    assert res["engine"]["answers"] is False and res["ready"] is False and not res["changed"]
    assert res["compose"] == {"version": None, "v2": False}
    assert any("does not answer" in p for p in res["version_problems"])
    missing = run("docker_engine_info", {"project_dir": str(tmp_path / "nope"),
                                         "docker_cli": str(tmp_path / "no-docker")})
    assert missing["search_services"] == [] and missing["project_error"]
