"""rollout: release arithmetic, input checks, upstream lines, the release file, and the orchestration
against a fake engine/gateway (success, already there, check mode, automatic rollback)."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import rollout as ro
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import Port, Project, Service
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_up import ContainerInfo
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

DIGEST = "sha256:" + "ab" * 32
HC = {"test": ["CMD", "true"]}


def svc(name, healthcheck=HC, ports=(), build=None, image=None):
    return Service(name=name, image=image or f"hyhome/{name}:local",
                   build=build if build is not None else {"context": "."},
                   user=None, healthcheck=healthcheck, ports=list(ports))


def project(*services):
    services = services or (svc("api"), svc("web"), svc("gateway"))
    return Project(name="p", working_dir="/nonexistent", files=[], services={s.name: s for s in services})


# ---------------------------------------------------------------------------------------------
# pure helpers


def test_release_keys_and_upstream_var():
    assert ro.release_keys("api") == ("HYHOME_API_IMAGE", "HYHOME_API_VERSION")
    assert ro.release_keys("my-web.x") == ("HYHOME_MY_WEB_X_IMAGE", "HYHOME_MY_WEB_X_VERSION")
    assert ro.upstream_var("my-web") == "upstream_my_web"


@pytest.mark.parametrize("ref, want", [
    ("hyhome/api:2", ("hyhome/api", "2", None)),
    ("127.0.0.1:5000/hyhome/api@" + DIGEST, ("127.0.0.1:5000/hyhome/api", None, DIGEST)),
    ("registry.lan:5000/a/b:v1.2@" + DIGEST, ("registry.lan:5000/a/b", "v1.2", DIGEST)),
    ("api", ("api", None, None)),
])
def test_parse_image_ref(ref, want):
    r = ro.parse_image_ref(ref)
    assert (r.repository, r.tag, r.digest) == want


@pytest.mark.parametrize("ref", ["", "Hyhome/API:2", "api:2\nX=1", "api@sha256:short", "api:-x", "a b", "api:2;rm",
                                 None, 5])
def test_parse_image_ref_refuses(ref):
    with pytest.raises(HyHomeError):
        ro.parse_image_ref(ref)


def test_target_release_from_tag_keeps_repository():
    r = ro.target_release(svc("api"), "127.0.0.1:5000/hyhome/api:1", tag="2")
    assert r == ro.Release(image="127.0.0.1:5000/hyhome/api:2", version="2", build=False)


def test_target_release_from_digest_names_the_version_after_it():
    r = ro.target_release(svc("api"), "hyhome/api:1", image="reg:5000/hyhome/api@" + DIGEST)
    assert r.image == "reg:5000/hyhome/api@" + DIGEST and r.version == "sha256-" + "ab" * 6
    assert ro.target_release(svc("api"), None, image="reg/api@" + DIGEST, version="2.1").version == "2.1"


def test_target_release_build_without_tag_gets_a_timestamp_tag():
    r = ro.target_release(svc("api"), "hyhome/api:local", build=True, now=lambda: (2026, 11, 26, 4, 5, 6, 0, 0, 0))
    assert r == ro.Release(image="hyhome/api:build-20261126T040506Z", version="build-20261126T040506Z", build=True)


@pytest.mark.parametrize("kwargs, words", [
    ({}, "nothing to roll out"),
    ({"tag": "2", "image": "hyhome/api:2"}, "not both"),
    ({"image": "x", "build": True}, "not both"),
    ({"tag": "../../etc"}, "tag '../../etc' is not valid"),
    ({"tag": "2", "version": "2\nHYHOME_X=1"}, "version"),
    ({"image": "not a ref"}, "not an image reference"),
])
def test_target_release_bad_input(kwargs, words):
    with pytest.raises(HyHomeError, match=words):
        ro.target_release(svc("api"), "hyhome/api:1", **kwargs)


def test_target_release_build_needs_a_build_section():
    with pytest.raises(HyHomeError, match="has no build: section"):
        ro.target_release(svc("api", build={}), "hyhome/api:1", build=True)


def test_check_service_accepts_a_health_checked_service_behind_the_gateway():
    assert ro.check_service(project(), "api", "gateway").name == "api"


@pytest.mark.parametrize("services, name, gateway, words", [
    ((svc("api"), svc("gateway")), "nope", "gateway",
     "unknown service 'nope': the project's services are api, gateway"),
    ((svc("api"), svc("gateway")), "gateway", "gateway", "is the gateway itself"),
    ((svc("api"),), "api", "gateway", "gateway service 'gateway' is not in the project"),
    ((svc("api", healthcheck=None), svc("gateway")), "api", "gateway", "has no healthcheck"),
    ((svc("api", healthcheck={"disable": True}), svc("gateway")), "api", "gateway", "has no healthcheck"),
    ((svc("api", ports=[Port(8000, 8000, None)]), svc("gateway")), "api", "gateway", "publishes host port"),
    ((svc("api"), svc("gateway")), ["api"], "gateway", "unknown service"),
])
def test_check_service_refuses(services, name, gateway, words):
    with pytest.raises(HyHomeError, match=words):
        ro.check_service(project(*services), name, gateway)


def test_upstream_line_round_trip():
    line = ro.upstream_line("api", "hyhome-api-2", 8000)
    assert line == "set $upstream_api http://hyhome-api-2:8000;\n"
    assert ro.parse_upstream(line, "api") == ("hyhome-api-2", 8000)


@pytest.mark.parametrize("host", ["a;b", "x y", "", "evil\nset $x 1", "-lead"])
def test_upstream_line_refuses_bad_hosts(host):
    with pytest.raises(HyHomeError):
        ro.upstream_line("api", host, 8000)


@pytest.mark.parametrize("text", ["", "set $upstream_web http://web:8080;", "set $upstream_api http://api:8000;\nmore",
                                  "proxy_pass http://api:8000;"])
def test_parse_upstream_refuses_other_lines(text):
    with pytest.raises(HyHomeError, match="not one"):
        ro.parse_upstream(text, "api")


def test_render_release_keeps_comments_and_other_keys():
    text = "# pinned releases\nHYHOME_WEB_IMAGE=hyhome/web:3\nHYHOME_API_IMAGE=hyhome/api:1\n"
    out = ro.render_release(text, {"HYHOME_API_IMAGE": "hyhome/api:2", "HYHOME_API_VERSION": "2"})
    assert out == ("# pinned releases\nHYHOME_WEB_IMAGE=hyhome/web:3\nHYHOME_API_IMAGE=hyhome/api:2\n\n"
                   "HYHOME_API_VERSION=2\n")
    assert ro.release_values(out)["HYHOME_API_VERSION"] == "2"


def test_health_verdict_and_worker_pids():
    def c(status, health=None):
        return ContainerInfo("i", "n", "api", status, 0, "", "", health)
    assert [ro.health_verdict(x) for x in (c("running", "healthy"), c("running", "unhealthy"), c("running", "starting"),
                                           c("created"), c("exited"), None)] == \
        ["healthy", "unhealthy", "starting", "starting", "gone", "gone"]
    assert ro.worker_pids("12\n 13\nnoise\n") == {12, 13}


# ---------------------------------------------------------------------------------------------
# orchestration against a fake


class FakeOps:
    """Containers, Compose and the gateway in memory; ``new_health`` is what the new container reports."""

    def __init__(self, new_health="healthy", image="hyhome/api:1", release="# releases\n", present=True):
        self.project = project()
        self.new_health = new_health
        self.present = present
        self.release = release
        self.calls: list[tuple] = []
        self.upstream = {"api": "set $upstream_api http://api:8000;\n"}
        self.c = {"api": [self._c("api-1", "api", "h-old")], "gateway": [self._c("gw-1", "gateway", "h-gw")]}
        self.images = {"api-1": image}
        self.env = {"api-1": {"HYHOME_APP_VERSION": "1"}}

    @staticmethod
    def _c(cid, service, config_hash, status="running", health="healthy"):
        return ContainerInfo(cid, f"p-{cid}", service, status, 0, "t", "t", health, (), config_hash)

    def containers(self, service):
        return list(self.c.get(service, []))

    def container_env(self, cid):
        return self.env.get(cid, {})

    def container_image(self, cid):
        return self.images.get(cid)

    def gateway_read(self, cid, service):
        return self.upstream[service]

    def gateway_point(self, cid, service, line, drain_timeout):
        self.calls.append(("point", line.strip()))
        self.upstream[service] = line
        return 0

    def read_release(self):
        return self.release

    def update_release(self, values):
        self.calls.append(("write_release",))
        self.release = ro.render_release(self.release, values)

    def expected_hash(self, service, env):
        return "h-old" if env["HYHOME_API_IMAGE"] == self.images["api-1"] else "h-new"

    def image_present(self, ref):
        return self.present

    def pull(self, ref):
        self.calls.append(("pull", ref))

    def build(self, service, env):
        self.calls.append(("build", env["HYHOME_API_IMAGE"]))

    def create_beside(self, service, env):
        self.calls.append(("create", env["HYHOME_API_IMAGE"], env["HYHOME_API_VERSION"]))
        self.c[service].append(self._c("api-2", service, "h-new", status="created", health=None))

    def start(self, cid):
        self.calls.append(("start", cid))
        self.c["api"] = [self._c(c.id, c.service, c.config_hash, "running", self.new_health) if c.id == cid else c
                         for c in self.c["api"]]

    def stop(self, cid, timeout):
        self.calls.append(("stop", cid))

    def remove(self, cid):
        self.calls.append(("remove", cid))
        self.c["api"] = [c for c in self.c["api"] if c.id != cid]

    def explain(self, service, why, container):
        return f"service '{service}': {why}"


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += max(s, 0.01)


def run(ops, check_mode=False, **kw):
    clock = Clock()
    req = ro.Request(service="api", **kw)
    return ro.run(ops, req, check_mode=check_mode, clock=clock, sleep=clock.sleep)


def test_rollout_moves_traffic_only_to_a_healthy_new_container_then_removes_the_old():
    ops = FakeOps()
    out = run(ops, tag="2")
    assert out.changed and not out.rolled_back
    assert ops.calls == [
        ("point", "set $upstream_api http://p-api-1:8000;"),   # pinned to the old one before the new starts
        ("create", "hyhome/api:2", "2"),
        ("start", "api-2"),
        ("point", "set $upstream_api http://p-api-2:8000;"),   # only once it is healthy
        ("write_release",),
        ("stop", "api-1"),
        ("remove", "api-1"),
        ("point", "set $upstream_api http://api:8000;"),        # back to the service name
    ]
    assert "HYHOME_API_IMAGE=hyhome/api:2" in ops.release and "HYHOME_API_VERSION=2" in ops.release
    assert ops.release.startswith("# releases\n")
    assert out.previous["version"] == "1"
    assert out.current == {"container": "p-api-2", "image": "hyhome/api:2", "version": "2"}
    assert [s["step"].split(" ")[0] for s in out.steps] == ["use", "gateway", "start", "gateway", "stop", "gateway"]


def test_unhealthy_new_release_is_rolled_back_and_the_old_keeps_serving():
    ops = FakeOps(new_health="unhealthy")
    with pytest.raises(HyHomeError, match=r"rolled back: p-api-1 keeps serving version 1; .*api-2 is unhealthy") as ei:
        run(ops, tag="broken")
    result = ei.value.details["result"]
    assert result["rolled_back"] is True and result["current"]["container"] == "p-api-1"
    assert ("remove", "api-2") in ops.calls
    assert ("stop", "api-1") not in ops.calls and ("remove", "api-1") not in ops.calls
    assert ops.upstream["api"] == "set $upstream_api http://api:8000;\n"    # never pointed at api-2
    assert not any(c == ("point", "set $upstream_api http://p-api-2:8000;") for c in ops.calls)
    assert ops.release == "# releases\n"                                    # release file untouched
    assert [c.id for c in ops.c["api"]] == ["api-1"]


def test_new_release_never_healthy_is_rolled_back_at_the_timeout():
    ops = FakeOps(new_health="starting")
    with pytest.raises(HyHomeError, match="not healthy after 5s"):
        run(ops, tag="slow", health_timeout=5.0)
    assert [c.id for c in ops.c["api"]] == ["api-1"] and ops.release == "# releases\n"


def test_rolling_out_the_running_release_changes_nothing():
    ops = FakeOps(release="HYHOME_API_IMAGE=hyhome/api:1\nHYHOME_API_VERSION=1\n")
    out = run(ops, tag="1")
    assert not out.changed and ops.calls == []
    assert "already runs" in out.plan[0]


def test_running_release_not_yet_recorded_is_recorded_only():
    ops = FakeOps()
    out = run(ops, tag="1")
    assert out.changed and ops.calls == [("write_release",)]


def test_check_mode_plans_and_touches_nothing():
    ops = FakeOps(present=False)
    out = run(ops, check_mode=True, image="reg:5000/hyhome/api@" + DIGEST)
    assert out.changed and ops.calls == []
    assert out.plan[0] == "pull reg:5000/hyhome/api@" + DIGEST
    assert any("else remove it and keep p-api-1 (rollback)" in step for step in out.plan)


def test_missing_local_tag_is_built_and_a_digest_pulled():
    ops = FakeOps(present=False)
    run(ops, tag="3")
    assert ops.calls[0] == ("build", "hyhome/api:3")
    ops = FakeOps(present=False)
    run(ops, image="reg:5000/hyhome/api@" + DIGEST)
    assert ops.calls[0] == ("pull", "reg:5000/hyhome/api@" + DIGEST)


def test_refuses_when_the_service_does_not_have_exactly_one_running_container():
    ops = FakeOps()
    ops.c["api"].append(ops._c("api-9", "api", "h-new"))
    with pytest.raises(HyHomeError, match=r"exactly one running container.*p-api-9"):
        run(ops, tag="2")
    assert ops.calls == []


def test_refuses_a_gateway_without_an_upstream_line_for_the_service():
    ops = FakeOps()
    ops.upstream["api"] = "proxy_pass http://api:8000;"
    with pytest.raises(HyHomeError, match="not one 'set \\$upstream_api"):
        run(ops, tag="2")
    assert ops.calls == []


# ---------------------------------------------------------------------------------------------
# the release file (Ops' file side, no engine needed)


def _file_ops(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "release.env").write_text("# releases\n")
    ns = SimpleNamespace(project=SimpleNamespace(working_dir=str(tmp_path)),
                         release_path=str(tmp_path / "app" / "release.env"))
    ns.read_release = lambda: ro.Ops.read_release(ns)
    return ns


def test_concurrent_release_updates_keep_each_others_lines(tmp_path):
    ns = _file_ops(tmp_path)

    def bump(service):
        for i in range(30):
            image_key, version_key = ro.release_keys(service)
            ro.Ops.update_release(ns, {image_key: f"hyhome/{service}:{i}", version_key: str(i)})

    threads = [threading.Thread(target=bump, args=(s,)) for s in ("api", "web")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    values = ro.release_values((tmp_path / "app" / "release.env").read_text())
    assert values == {"HYHOME_API_IMAGE": "hyhome/api:29", "HYHOME_API_VERSION": "29",
                      "HYHOME_WEB_IMAGE": "hyhome/web:29", "HYHOME_WEB_VERSION": "29"}
    assert oct((tmp_path / ".hyhome").stat().st_mode & 0o777) == "0o700"


def test_release_file_must_be_a_regular_file(tmp_path):
    ns = _file_ops(tmp_path)
    target = tmp_path / "elsewhere.env"
    target.write_text("")
    os.remove(ns.release_path)
    os.symlink(target, ns.release_path)
    with pytest.raises(HyHomeError, match="not a regular file"):
        ro.Ops.read_release(ns)
    os.remove(ns.release_path)
    with pytest.raises(HyHomeError, match="does not exist"):
        ro.Ops.read_release(ns)
