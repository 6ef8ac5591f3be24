"""compose_up: planning, fingerprints, health evaluation, change detection (pure, injected state),
plus Docker-backed runs of the busybox fixture project (``@pytest.mark.docker``)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
import subprocess
import uuid

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import compose_up as cu
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
    Mount,
    Network,
    Project,
    Secret,
    SecretRef,
    Service,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from test_procs import _gone_soon  # same directory: the process-state helper

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "compose_up")
_ids = itertools.count(1)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def inspect(service, status="running", health=None, exit_code=0, started="2026-11-22T02:00:00.123456789Z",
            created="2026-11-22T01:59:59.000000000Z", config_hash="hash-" + "x", cid=None, restart="unless-stopped",
            health_log=(), image="sha256:img", project="p", oneoff=False):
    """A ``docker inspect`` dict as the engine returns it (only the fields the core reads)."""
    cid = cid or f"{service}-{next(_ids):04d}" + "0" * 52
    state = {"Status": status, "Running": status == "running", "ExitCode": exit_code, "StartedAt": started}
    if health:
        state["Health"] = {"Status": health, "FailingStreak": 0,
                           "Log": [{"ExitCode": c, "Output": o} for c, o in health_log]}
    return {
        "Id": cid, "Name": f"/{project}-{service}-1", "Created": created, "Image": image,
        "State": state,
        "Config": {"Labels": {cu.PROJECT_LABEL: project, cu.SERVICE_LABEL: service,
                              cu.CONFIG_HASH_LABEL: config_hash, cu.ONEOFF_LABEL: str(oneoff)}},
        "HostConfig": {"RestartPolicy": {"Name": restart}},
    }


def project(tmp_path, with_files=True) -> Project:
    """db <- init (completed_successfully) ; api -> db healthy ; web -> api ; proxy shares web's netns."""
    secrets_dir = tmp_path / "secrets"
    conf = tmp_path / "conf"
    data = tmp_path / "data"
    if with_files:
        secrets_dir.mkdir()
        conf.mkdir()
        data.mkdir()
        (secrets_dir / "db.txt").write_text("s3cret\n")
        (secrets_dir / "api.txt").write_text("api-token\n")
        (conf / "app.conf").write_text("listen 80;\n")
        (conf / "nested").mkdir()
        (conf / "nested" / "x.conf").write_text("x\n")
        (data / "pgdata.bin").write_bytes(b"\0" * 10)
    svc = {
        "db": Service("db", "postgres", None, "999", secrets=[SecretRef("db_password", "/run/secrets/db_password")],
                      mounts=[Mount("bind", "/var/lib/postgresql/data", False, str(data))],
                      healthcheck={"test": ["CMD", "true"]}, restart="unless-stopped"),
        "init": Service("init", "postgres", None, "999", secrets=[SecretRef("db_password", "/run/secrets/db_password")],
                        depends_on={"db": {"condition": "service_healthy"}}),
        "api": Service("api", "api", None, "1000", secrets=[SecretRef("api_token", "/run/secrets/api_token")],
                       mounts=[Mount("bind", "/etc/app", True, str(conf))],
                       depends_on={"db": {"condition": "service_healthy"},
                                   "init": {"condition": "service_completed_successfully"}},
                       healthcheck={"test": ["CMD", "true"]}),
        "web": Service("web", "web", None, "1000", depends_on={"api": {"condition": "service_started"}}),
        "proxy": Service("proxy", "proxy", None, "1000", network_mode="service:web",
                         depends_on={"web": {"condition": "service_started"}}),
    }
    return Project(
        name="p", working_dir=str(tmp_path), files=[str(tmp_path / "compose.yaml")], services=svc,
        secrets={"db_password": Secret("db_password", str(secrets_dir / "db.txt")),
                 "api_token": Secret("api_token", str(secrets_dir / "api.txt"))},
    )


HASHES = {"db": "h-db", "init": "h-init", "api": "h-api", "web": "h-web", "proxy": "h-proxy"}


def steady(proj):
    """A converged snapshot: everything running/healthy, init exited 0, hashes as expected."""
    return cu.by_service([
        inspect("db", health="healthy", config_hash=HASHES["db"]),
        inspect("init", status="exited", exit_code=0, restart="no", config_hash=HASHES["init"]),
        inspect("api", health="healthy", config_hash=HASHES["api"]),
        inspect("web", config_hash=HASHES["web"]),
        inspect("proxy", config_hash=HASHES["proxy"]),
    ])


def fingerprints(proj, salt=b"salt"):
    return {n: cu.fingerprint_service(proj, s, HASHES[n], salt) for n, s in proj.services.items()}


def recorded_from(fps):
    return cu.recorded_fingerprints(cu.updated_state({}, "p", fps), "p")


# ---------------------------------------------------------------------------------------------
# container state
# ---------------------------------------------------------------------------------------------

def test_parse_ts_handles_nanoseconds_and_zero():
    assert cu.parse_ts("2026-11-22T02:14:25.331894105Z") == pytest.approx(cu.parse_ts("2026-11-22T02:14:25.331894Z"))
    assert cu.parse_ts("0001-01-01T00:00:00Z") is None
    assert cu.parse_ts("") is None
    assert cu.parse_ts("not a time") is None


def test_container_info_from_inspect_and_oneoff_ignored():
    c = cu.ContainerInfo.from_inspect(inspect("db", health="unhealthy", health_log=[(1, "refused")]))
    assert (c.service, c.status, c.health, c.health_log) == ("db", "running", "unhealthy", ((1, "refused"),))
    assert c.describe() == "running (unhealthy)"
    grouped = cu.by_service([inspect("db"), inspect("db", oneoff=True), {"Id": "x", "Config": {"Labels": {}}}])
    assert list(grouped) == ["db"] and len(grouped["db"]) == 1


# ---------------------------------------------------------------------------------------------
# roles and ordering
# ---------------------------------------------------------------------------------------------

def test_init_services_and_order(tmp_path):
    proj = project(tmp_path)
    assert cu.init_services(proj) == {"init"}
    proj.services["web"].restart = "no"
    proj.services["db"].extensions = {"x-hyhome": {"init": True}}
    assert cu.init_services(proj) == {"init", "web", "db"}
    assert cu.topo_order(proj, proj.services) == ["db", "init", "api", "web", "proxy"]
    assert cu.dependency_closure(proj, ["web"]) == {"web", "api", "db", "init"}
    assert cu.dependency_closure(proj, ["proxy"]) == {"proxy", "web", "api", "db", "init"}


def test_unknown_service_is_explained(tmp_path):
    with pytest.raises(HyHomeError, match=r"unknown service\(s\) nope .*known services are api, db"):
        cu.dependency_closure(project(tmp_path), ["nope"])


# ---------------------------------------------------------------------------------------------
# fingerprints
# ---------------------------------------------------------------------------------------------

def test_inputs_cover_secrets_ro_dirs_and_skip_rw_data_dirs(tmp_path):
    proj = project(tmp_path)
    assert cu.service_inputs(proj, proj.services["db"]) == [("secret", str(tmp_path / "secrets" / "db.txt"))]
    assert cu.service_inputs(proj, proj.services["api"]) == [
        ("dir", str(tmp_path / "conf")), ("secret", str(tmp_path / "secrets" / "api.txt"))]


def test_inputs_skip_sockets_and_honour_exclusions(tmp_path):
    proj = project(tmp_path)
    sock = tmp_path / "fifo"
    os.mkfifo(sock)   # reading a fifo would block forever
    api = proj.services["api"]
    api.mounts.append(Mount("bind", "/run/fifo", True, str(sock)))
    api.extensions = {"x-hyhome": {"fingerprint_exclude": ["/etc/app"]}}
    assert cu.service_inputs(proj, api) == [("secret", str(tmp_path / "secrets" / "api.txt"))]


def test_fingerprint_changes_on_secret_content_only(tmp_path):
    proj = project(tmp_path)
    before = fingerprints(proj)
    again = fingerprints(proj)
    assert {n: f.value for n, f in before.items()} == {n: f.value for n, f in again.items()}
    os.chmod(tmp_path / "secrets" / "db.txt", 0o644)   # mode drift is not content drift
    assert cu.fingerprint_service(proj, proj.services["db"], HASHES["db"], b"salt").value == before["db"].value
    (tmp_path / "secrets" / "db.txt").write_text("rotated\n")
    after = fingerprints(proj)
    changed = {n for n in before if before[n].value != after[n].value}
    assert changed == {"db", "init"}


def test_fingerprint_covers_nested_config_and_config_hash(tmp_path):
    proj = project(tmp_path)
    base = cu.fingerprint_service(proj, proj.services["api"], "h1", b"s")
    (tmp_path / "conf" / "nested" / "x.conf").write_text("y\n")
    edited = cu.fingerprint_service(proj, proj.services["api"], "h1", b"s")
    assert edited.value != base.value
    assert cu.fingerprint_service(proj, proj.services["api"], "h2", b"s").value != edited.value
    (tmp_path / "data" / "pgdata.bin").write_bytes(b"\1" * 10)   # data dir: not an input
    assert cu.fingerprint_service(proj, proj.services["db"], "h", b"s").value == \
        cu.fingerprint_service(proj, proj.services["db"], "h", b"s").value


def test_missing_input_and_salt(tmp_path):
    proj = project(tmp_path)
    os.unlink(tmp_path / "secrets" / "db.txt")
    fp = cu.fingerprint_service(proj, proj.services["db"], "h", b"s")
    assert fp.inputs[str(tmp_path / "secrets" / "db.txt")] == "missing"
    (tmp_path / "secrets" / "db.txt").write_text("x")
    d1 = cu.digest_path(str(tmp_path / "secrets" / "db.txt"), "secret", salt=b"a")[0]
    d2 = cu.digest_path(str(tmp_path / "secrets" / "db.txt"), "secret", salt=b"b")[0]
    assert d1 != d2 and len(d1) == 64


def test_directory_hash_is_bounded(tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    for i in range(5):
        (d / f"f{i}").write_text(str(i) * 100)
    digest, _, truncated = cu.digest_path(str(d), "dir", budget=[10 ** 6], max_files=3)
    assert truncated and len(digest) == 64
    _, _, truncated = cu.digest_path(str(d), "dir", budget=[150])
    assert truncated
    assert cu.digest_path(str(d), "dir")[2] is False


def test_short_digest_never_shows_the_stored_digest():
    full = "a" * 64
    assert cu.short_digest(full) != full[:12] and len(cu.short_digest(full)) == 12
    assert cu.short_digest("missing") == "missing"


def test_state_roundtrip_atomic_0600(tmp_path):
    proj = project(tmp_path)
    fps = fingerprints(proj)
    doc = cu.updated_state({"other": {"kept": True}}, "p", fps, salt="abc")
    cu.write_state(str(tmp_path), doc)
    path = cu.state_path(str(tmp_path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    back = cu.read_state(str(tmp_path))
    assert back["other"] == {"kept": True}
    assert cu.state_salt(back, "p") == "abc"
    assert cu.recorded_fingerprints(back, "p")["db"]["fingerprint"] == fps["db"].value
    with open(path) as fh:
        assert "s3cret" not in fh.read()
    removed = cu.updated_state(back, "p", {}, remove={"db"})
    assert "db" not in cu.recorded_fingerprints(removed, "p")


def test_corrupt_state_is_an_error_not_a_reset(tmp_path):
    os.makedirs(tmp_path / ".hyhome")
    (tmp_path / ".hyhome" / "state.json").write_text("{not json")
    with pytest.raises(HyHomeError, match="fix or delete it"):
        cu.read_state(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------------

def test_plan_converged_is_a_noop_and_keeps_completed_init(tmp_path):
    proj = project(tmp_path)
    fps = fingerprints(proj)
    plan = cu.plan_present(proj, proj.services, steady(proj), HASHES, fps, recorded_from(fps))
    assert not plan.has_changes, plan.as_dict()


def test_plan_fresh_creates_everything(tmp_path):
    proj = project(tmp_path)
    plan = cu.plan_present(proj, proj.services, {}, HASHES, fingerprints(proj), {})
    assert set(plan.with_action("create")) == set(proj.services)


def test_plan_rotated_secret_recreates_exactly_its_consumers(tmp_path):
    proj = project(tmp_path)
    fps = fingerprints(proj)
    rec = recorded_from(fps)
    (tmp_path / "secrets" / "api.txt").write_text("rotated\n")
    plan = cu.plan_present(proj, proj.services, steady(proj), HASHES, fingerprints(proj), rec)
    assert plan.with_action("recreate") == ["api"]
    assert plan.services["api"].reasons == [f"mounted content changed: {tmp_path / 'secrets' / 'api.txt'}"]
    assert plan.with_action("create", "start", "restart") == []


def test_plan_dependants_recreated_only_when_needed(tmp_path):
    proj = project(tmp_path)
    fps = fingerprints(proj)
    # proxy shares web's network namespace: recreating web must recreate proxy, nothing else
    plan = cu.plan_present(proj, proj.services, steady(proj), HASHES, fps, recorded_from(fps), force={"web"})
    assert plan.with_action("recreate") == ["web", "proxy"]
    assert "network namespace" in plan.services["proxy"].reasons[0]
    proj.services["web"].depends_on["api"]["restart"] = True
    plan = cu.plan_present(proj, proj.services, steady(proj), HASHES, fps, recorded_from(fps), force={"api"})
    assert plan.with_action("recreate") == ["api", "web", "proxy"]


def test_plan_config_hash_and_image_changes(tmp_path):
    proj = project(tmp_path)
    fps = fingerprints(proj)
    hashes = dict(HASHES, db="h-db-new")
    plan = cu.plan_present(proj, proj.services, steady(proj), hashes, fps, recorded_from(fps),
                           image_ids={"web": "sha256:new"})
    assert plan.with_action("recreate") == ["db", "web", "proxy"]
    assert plan.services["db"].reasons == ["compose configuration changed"]
    assert plan.services["web"].reasons == ["image changed"]


def test_plan_without_record_uses_mtime_against_started_at(tmp_path):
    proj = project(tmp_path)
    snap = steady(proj)   # containers started 2026-11-22; files written now (earlier) -> no change
    os.utime(tmp_path / "secrets" / "db.txt", (1.0, 1.0))
    os.utime(tmp_path / "secrets" / "api.txt", (1.0, 1.0))
    for f in (tmp_path / "conf").rglob("*"):
        os.utime(f, (1.0, 1.0))
    plan = cu.plan_present(proj, proj.services, snap, HASHES, fingerprints(proj), {})
    assert not plan.has_changes
    future = cu.parse_ts("2026-11-22T03:00:00Z")
    os.utime(tmp_path / "secrets" / "api.txt", (future, future))
    plan = cu.plan_present(proj, proj.services, snap, HASHES, fingerprints(proj), {})
    assert plan.with_action("recreate") == ["api"]
    assert "no recorded fingerprint" in plan.services["api"].reasons[0]


def test_plan_starts_stopped_and_failed_init_but_not_completed_init(tmp_path):
    proj = project(tmp_path)
    fps = fingerprints(proj)
    snap = steady(proj)
    snap["web"] = [cu.ContainerInfo.from_inspect(inspect("web", status="exited", exit_code=137, config_hash="h-web"))]
    snap["init"] = [cu.ContainerInfo.from_inspect(inspect("init", status="exited", exit_code=1, restart="no",
                                                          config_hash="h-init"))]
    plan = cu.plan_present(proj, proj.services, snap, HASHES, fps, recorded_from(fps))
    assert plan.with_action("start") == ["init", "web"]
    assert "exited 1: run it again" in plan.services["init"].reasons[0]


def test_plan_restart_skips_one_shots(tmp_path):
    proj = project(tmp_path)
    fps = fingerprints(proj)
    plan = cu.plan_present(proj, proj.services, steady(proj), HASHES, fps, recorded_from(fps), restart=True)
    assert plan.with_action("restart") == ["db", "api", "web", "proxy"]


def test_plan_stop_absent_and_orphans(tmp_path):
    proj = project(tmp_path)
    snap = steady(proj)
    snap["old"] = [cu.ContainerInfo.from_inspect(inspect("old"))]
    assert cu.plan_stop(proj, ["db", "init"], snap).with_action("stop") == ["db"]
    absent = cu.plan_absent(proj, set(proj.services), snap)
    assert set(absent.with_action("remove")) == set(proj.services) | {"old"}
    assert cu.find_orphans(proj, snap) == ["p-old-1"]


# ---------------------------------------------------------------------------------------------
# change detection
# ---------------------------------------------------------------------------------------------

def test_detect_changes_from_ids_and_started_at():
    a = inspect("a", cid="a" * 64)
    b = inspect("b", cid="b" * 64)
    c = inspect("c", cid="c" * 64)
    d = inspect("d", cid="d" * 64)
    before = cu.by_service([a, b, c, d])
    b2 = json.loads(json.dumps(b))
    b2["State"]["StartedAt"] = "2026-11-22T03:00:00Z"
    c2 = json.loads(json.dumps(c))
    c2["State"]["Status"] = "exited"
    after = cu.by_service([inspect("a", cid="e" * 64), b2, c2, inspect("new", cid="f" * 64)])
    assert cu.detect_changes(before, after) == {
        "a": ["recreated"], "b": ["started"], "c": ["stopped"], "d": ["removed"], "new": ["created"]}
    assert cu.detect_changes(before, before) == {}


# ---------------------------------------------------------------------------------------------
# health evaluation and waiting (fake clock)
# ---------------------------------------------------------------------------------------------

def test_evaluate_rules(tmp_path):
    proj = project(tmp_path)
    snap = steady(proj)
    r = cu.evaluate(proj, proj.services, snap)
    assert r.ok and r.ready["init"] == "completed"
    snap["init"] = [cu.ContainerInfo.from_inspect(inspect("init", status="exited", exit_code=1, restart="no"))]
    snap["api"] = [cu.ContainerInfo.from_inspect(inspect("api", health="unhealthy"))]
    snap["web"] = [cu.ContainerInfo.from_inspect(inspect("web", status="restarting", exit_code=2))]
    r = cu.evaluate(proj, proj.services, snap)
    assert r.failed == {"init": "p-init-1 exited with code 1"}
    assert r.pending["api"] == "p-api-1 is unhealthy"   # not failed: it may still recover
    assert "restarting" in r.pending["web"]
    assert cu.evaluate(proj, ["api"], snap, started_ok={"api"}).ok


def test_evaluate_exited_long_running(tmp_path):
    proj = project(tmp_path)
    snap = {"web": [cu.ContainerInfo.from_inspect(inspect("web", status="exited", exit_code=3, restart="no"))],
            "db": [cu.ContainerInfo.from_inspect(inspect("db", status="exited", exit_code=3, restart="always"))]}
    r = cu.evaluate(proj, ["web", "db"], snap)
    assert "web" in r.failed and "db" in r.pending
    assert cu.evaluate(proj, ["api"], {}).pending == {"api": "no container"}


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s


def test_wait_ready_becomes_ready(tmp_path):
    proj = project(tmp_path)
    clock = FakeClock()
    states = iter([{"api": [cu.ContainerInfo.from_inspect(inspect("api", health="starting"))]}] * 3
                  + [{"api": [cu.ContainerInfo.from_inspect(inspect("api", health="healthy"))]}])
    r = cu.wait_ready(proj, ["api"], lambda: next(states), timeout=30, clock=clock, sleep=clock.sleep, interval=1)
    assert r.ok and clock.now == 3.0


def test_wait_ready_times_out_with_health_log_and_logs(tmp_path):
    proj = project(tmp_path)
    clock = FakeClock()
    sick = cu.ContainerInfo.from_inspect(inspect("api", health="unhealthy",
                                                 health_log=[(1, "connection refused\n"), (1, "db down")]))
    with pytest.raises(HyHomeError) as err:
        cu.wait_ready(proj, ["api"], lambda: {"api": [sick]}, timeout=10, clock=clock, sleep=clock.sleep,
                      logs=lambda cid: "boot\nFATAL: cannot reach db\n", interval=2)
    msg = err.value.msg
    assert msg.startswith("timed out after 10s waiting for: api")
    assert "exit 1: connection refused" in msg and "exit 1: db down" in msg
    assert "FATAL: cannot reach db" in msg
    assert clock.now == 10.0 and err.value.details["pending"] == ["api"]


def test_wait_ready_fails_fast_on_init_exit_1(tmp_path):
    proj = project(tmp_path)
    clock = FakeClock()
    bad = cu.ContainerInfo.from_inspect(inspect("init", status="exited", exit_code=1, restart="no"))

    def broken_logs(cid):
        raise RuntimeError("engine gone")

    with pytest.raises(HyHomeError) as err:
        cu.wait_ready(proj, ["init"], lambda: {"init": [bad]}, timeout=300, clock=clock, sleep=clock.sleep,
                      logs=broken_logs)
    assert clock.now == 0.0   # definitive failure: no waiting
    assert "services failed: init" in err.value.msg and "exited with code 1" in err.value.msg
    assert "could not read logs: engine gone" in err.value.msg


# ---------------------------------------------------------------------------------------------
# orchestration against a fake engine
# ---------------------------------------------------------------------------------------------

class FakeEngine:
    """Just enough engine: compose ``create`` and SDK start update an in-memory container list."""

    def __init__(self, proj, containers=(), hashes=HASHES, engine_networks=("bridge", "host", "none")):
        self.proj = proj
        self.items = {c["Id"]: c for c in containers}
        self.hashes = dict(hashes)
        self.commands = []
        self.started = []
        self.engine_networks = set(engine_networks)

    def containers(self):
        return cu.by_service(self.items.values())

    def networks(self):
        return []

    def network_names(self):
        return set(self.engine_networks)

    def create_network(self, name):
        self.commands.append(["network", "create", name])
        self.engine_networks.add(name)

    def image_id(self, name):
        return "sha256:img"

    def logs(self, cid, tail=20):
        return "log line\n"

    def config_hashes(self):
        return dict(self.hashes)

    def remove_container(self, cid):
        self.items.pop(cid)

    def start_container(self, cid):
        c = self.items[cid]
        svc = c["Config"]["Labels"][cu.SERVICE_LABEL]
        c["State"]["StartedAt"] = f"2026-11-22T04:00:{len(self.started):02d}Z"
        if svc in cu.init_services(self.proj):
            c["State"].update(Status="exited", ExitCode=0)
        else:
            c["State"]["Status"] = "running"
            if c["State"].get("Health"):
                c["State"]["Health"]["Status"] = "healthy"
        self.started.append(svc)

    def run(self, args, record=True):
        self.commands.append(args)
        if args[0] == "create":
            names = [a for a in args[1:] if not a.startswith("--") and a not in ("missing", "never")]
            for name in names:
                existing = [i for i, c in self.items.items() if c["Config"]["Labels"][cu.SERVICE_LABEL] == name]
                if existing and "--no-recreate" in args:
                    continue
                for i in existing:
                    self.items.pop(i)
                health = "starting" if self.proj.services[name].healthcheck else None
                c = inspect(name, status="created", health=health, config_hash=self.hashes[name],
                            started="0001-01-01T00:00:00Z")
                self.items[c["Id"]] = c
        return subprocess.CompletedProcess(args, 0, "", "")


def test_apply_check_mode_touches_nothing(tmp_path):
    proj = project(tmp_path)
    eng = FakeEngine(proj)
    res = cu.apply(eng, proj, cu.Options(check_mode=True, diff=True))
    assert res["changed"] and eng.commands == [] and eng.items == {}
    assert res["plan"]["db"] == {"action": "create", "reasons": ["no container"]}
    assert res["diff"]["after"]["db"]["action"] == "create"
    assert not os.path.exists(cu.state_path(str(tmp_path)))


def test_apply_up_then_noop_then_rotation(tmp_path):
    proj = project(tmp_path)
    eng = FakeEngine(proj)
    res = cu.apply(eng, proj, cu.Options(wait_timeout=5))
    assert res["changed"] and set(res["actions"]) == set(proj.services)
    assert eng.started == ["db", "init", "api", "web", "proxy"]   # dependency order
    assert [c[:2] for c in eng.commands if c[0] == "create"] == [["create", "--no-recreate"]]
    eng.commands.clear()
    res = cu.apply(eng, proj, cu.Options(wait_timeout=5, diff=True))
    assert not res["changed"] and res["actions"] == {} and eng.commands == []
    assert res["diff"]["before"] == res["diff"]["after"]
    (tmp_path / "secrets" / "api.txt").write_text("rotated\n")
    res = cu.apply(eng, proj, cu.Options(wait_timeout=5, check_mode=True, diff=True))
    assert res["changed"] and res["plan"]["api"]["action"] == "recreate" and eng.commands == []
    assert res["diff"]["before"]["api"]["fingerprint"] != res["diff"]["after"]["api"]["fingerprint"]
    assert "rotated" not in json.dumps(res)
    res = cu.apply(eng, proj, cu.Options(wait_timeout=5))
    assert res["actions"] == {"api": ["recreated"]}
    assert next(c for c in eng.commands if c[0] == "create")[:2] == ["create", "--force-recreate"]
    assert not cu.apply(eng, proj, cu.Options(wait_timeout=5))["changed"]


def test_apply_reports_unknown_recreate_names_and_forces_known_ones(tmp_path):
    proj = project(tmp_path)
    eng = FakeEngine(proj)
    cu.apply(eng, proj, cu.Options(wait_timeout=5))
    res = cu.apply(eng, proj, cu.Options(recreate=["ghost", "web"], check_mode=True))
    assert res["recreate_ignored"] == ["ghost"]
    assert res["plan"]["web"] == {"action": "recreate", "reasons": ["recreate requested"]}
    assert res["plan"]["proxy"]["action"] == "recreate"   # shares web's network namespace


def test_apply_removes_orphans_only_when_asked(tmp_path):
    proj = project(tmp_path)
    eng = FakeEngine(proj)
    cu.apply(eng, proj, cu.Options(wait_timeout=5))
    old = inspect("retired", config_hash="h")
    eng.items[old["Id"]] = old
    res = cu.apply(eng, proj, cu.Options(wait_timeout=5))
    assert res["orphans"] == [] and old["Id"] in eng.items and not res["changed"]
    res = cu.apply(eng, proj, cu.Options(wait_timeout=5, remove_orphans=True, check_mode=True))
    assert res["orphans"] == ["p-retired-1"] and res["changed"] and old["Id"] in eng.items
    res = cu.apply(eng, proj, cu.Options(wait_timeout=5, remove_orphans=True))
    assert res["actions"] == {"retired": ["removed"]} and old["Id"] not in eng.items


def test_apply_stop_and_absent(tmp_path):
    proj = project(tmp_path)
    eng = FakeEngine(proj)
    cu.apply(eng, proj, cu.Options(wait_timeout=5))
    res = cu.apply(eng, proj, cu.Options(state="stopped", check_mode=True))
    assert res["changed"] and res["plan"]["db"]["action"] == "stop" and res["plan"]["init"]["action"] == "none"
    eng.commands.clear()
    cu.apply(eng, proj, cu.Options(state="absent", services=["web"]))
    assert eng.commands == [["rm", "--stop", "--force", "web"]]
    eng.commands.clear()
    cu.apply(eng, proj, cu.Options(state="absent"))
    assert eng.commands == [["down", "--remove-orphans"]]   # never --volumes unless asked
    eng.commands.clear()
    cu.apply(eng, proj, cu.Options(state="absent", remove_volumes=True))
    assert eng.commands == [["down", "--volumes", "--remove-orphans"]]


def with_external_networks(proj):
    """web joins the external network proxy-net (key "front"); every other service the default
    network, declared external as shared_default; proxy shares web's namespace (no network)."""
    proj.networks = {"default": Network("default", "shared_default", True),
                     "front": Network("front", "proxy-net", True),
                     "back": Network("back", "p_back", False)}
    proj.services["web"].networks = ["front", "back"]
    return proj


def test_external_networks_of_the_targets_only(tmp_path):
    proj = with_external_networks(project(tmp_path))
    assert cu.external_networks(proj, set(proj.services)) == ["proxy-net", "shared_default"]
    assert cu.external_networks(proj, {"web", "proxy"}) == ["proxy-net"]     # network_mode: no networks
    proj.networks["default"] = Network("default", "p_default", False)
    assert cu.external_networks(proj, {"db"}) == []


def test_missing_external_networks_are_created_once_and_reported(tmp_path):
    proj = with_external_networks(project(tmp_path))
    eng = FakeEngine(proj, engine_networks={"bridge", "shared_default"})
    check = cu.apply(eng, proj, cu.Options(check_mode=True, diff=True, wait_timeout=5))
    assert check["networks_created"] == ["proxy-net"] and eng.commands == []
    assert check["diff"]["before"]["external networks"] == {"proxy-net": "absent", "shared_default": "present"}
    assert check["diff"]["after"]["external networks"] == {"proxy-net": "present", "shared_default": "present"}
    first = cu.apply(eng, proj, cu.Options(wait_timeout=5))
    assert first["changed"] and first["networks_created"] == ["proxy-net"]
    assert eng.commands[0] == ["network", "create", "proxy-net"]    # before any container is created
    second = cu.apply(eng, proj, cu.Options(wait_timeout=5, diff=True))
    assert not second["changed"] and second["networks_created"] == []
    assert second["diff"]["before"]["external networks"] == second["diff"]["after"]["external networks"]


def test_a_created_network_alone_is_a_change(tmp_path):
    proj = with_external_networks(project(tmp_path))
    eng = FakeEngine(proj, engine_networks={"shared_default", "proxy-net"})
    cu.apply(eng, proj, cu.Options(wait_timeout=5))
    eng.engine_networks.discard("proxy-net")     # removed by hand while the stack stays up
    eng.commands.clear()
    check = cu.apply(eng, proj, cu.Options(check_mode=True, wait_timeout=5))
    assert check["changed"] and check["actions"] == {} and check["networks_created"] == ["proxy-net"]
    res = cu.apply(eng, proj, cu.Options(wait_timeout=5))
    assert res["changed"] and res["actions"] == {} and eng.commands == [["network", "create", "proxy-net"]]


def test_create_networks_off_fails_naming_the_command(tmp_path):
    proj = with_external_networks(project(tmp_path))
    eng = FakeEngine(proj, engine_networks={"bridge"})
    with pytest.raises(HyHomeError) as err:
        cu.apply(eng, proj, cu.Options(create_networks=False, check_mode=True))
    msg = err.value.msg
    assert "proxy-net, shared_default do not exist" in msg
    assert "docker network create proxy-net; docker network create shared_default" in msg
    assert eng.commands == [] and eng.items == {}
    # nothing missing: no failure, no network work
    eng.engine_networks |= {"proxy-net", "shared_default"}
    assert cu.apply(eng, proj, cu.Options(create_networks=False, wait_timeout=5))["networks_created"] == []


def test_stop_and_absent_never_create_networks(tmp_path):
    proj = with_external_networks(project(tmp_path))
    eng = FakeEngine(proj, engine_networks=set())
    for state in ("stopped", "absent"):
        res = cu.apply(eng, proj, cu.Options(state=state, create_networks=False))
        assert res["networks_created"] == [] and not any(c[0] == "network" for c in eng.commands)


# ---------------------------------------------------------------------------------------------
# Docker-backed: the busybox fixture on the real engine
# ---------------------------------------------------------------------------------------------

def _started(name):
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={cu.PROJECT_LABEL}={name}"],
                         capture_output=True, text=True, check=True).stdout.split()
    fmt = '{{index .Config.Labels "com.docker.compose.service"}} {{.Id}} {{.State.StartedAt}}'
    lines = subprocess.run(["docker", "inspect", "-f", fmt, *out], capture_output=True, text=True,
                           check=True).stdout.splitlines() if out else []
    return {ln.split()[0]: tuple(ln.split()[1:]) for ln in lines}


@pytest.fixture
def live(tmp_path):
    """A copy of the fixture with generated test secrets and a unique project name; removed after."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import load_project

    d = tmp_path / "proj"
    shutil.copytree(FIXTURE, d)
    (d / "secrets").mkdir()
    for name in ("web_token", "worker_token"):
        (d / "secrets" / f"{name}.txt").write_text(uuid.uuid4().hex + "\n")
        os.chmod(d / "secrets" / f"{name}.txt", 0o644)   # the services run as uid 1000
    name = f"hyhome-cu-pytest-{uuid.uuid4().hex[:8]}"

    def run(files=None, **opts):
        proj = load_project(str(d), files=files)
        assert proj.config_error is None, proj.config_error
        proj.name = name
        eng = cu.Engine(str(d), name, files=files)
        return cu.apply(eng, proj, cu.Options(**{"wait_timeout": 60, "pull": "never", **opts}))

    run.dir, run.name = d, name
    yield run
    subprocess.run(["docker", "compose", "--project-directory", str(d), "-p", name, "-f", "docker-compose.yml",
                    "-f", "unhealthy.yml", "down", "--volumes", "--remove-orphans", "-t", "1"],
                   capture_output=True, check=False, cwd=d)


@pytest.mark.docker
def test_docker_up_noop_and_rotation(live):
    check = live(check_mode=True)
    assert check["changed"] and _started(live.name) == {}
    first = live()
    assert first["changed"]
    assert set(first["actions"]) == {"init", "web", "worker"}
    assert first["services"]["init"]["status"] == "exited (0)"
    assert first["services"]["web"]["status"] == "running (healthy)"
    state = cu.state_path(str(live.dir))
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    before = _started(live.name)
    second = live()
    assert not second["changed"] and second["actions"] == {} and second["commands"] == []
    assert _started(live.name) == before
    (live.dir / "secrets" / "worker_token.txt").write_text("rotated-" + uuid.uuid4().hex + "\n")
    third = live()
    assert third["actions"] == {"worker": ["recreated"]}
    after = _started(live.name)
    assert after["web"] == before["web"] and after["init"] == before["init"]
    assert after["worker"] != before["worker"]
    (live.dir / "config" / "www" / "index.html").write_text("edited\n")
    fourth = live()
    assert fourth["actions"] == {"web": ["recreated"]}
    assert not live()["changed"]
    # compose's own view agrees: a plain `up` finds nothing to recreate (labels carry full-project hashes)
    hashes = subprocess.run(["docker", "compose", "-p", live.name, "config", "--hash", "*"], cwd=live.dir,
                            capture_output=True, text=True, check=True).stdout.split()
    labels = subprocess.run(["docker", "inspect", "-f", '{{index .Config.Labels "com.docker.compose.config-hash"}}',
                             *[v[0] for v in _started(live.name).values()]], capture_output=True, text=True,
                            check=True).stdout.split()
    assert set(labels) <= set(hashes[1::2])


@pytest.mark.docker
def test_docker_unhealthy_service_is_named_with_its_health_log(live):
    with pytest.raises(HyHomeError) as err:
        live(files=["docker-compose.yml", "unhealthy.yml"], wait_timeout=8)
    msg = err.value.msg
    assert "waiting for: sick" in msg
    assert "service 'sick'" in msg and "exit 1: backend not reachable on 5432" in msg
    assert "web" not in err.value.details["pending"]


@pytest.mark.docker
def test_docker_init_exit_1_fails(live):
    with pytest.raises(HyHomeError) as err:
        live(files=["docker-compose.yml", "initfail.yml"])
    msg = err.value.msg
    assert "init" in msg and "exited with code 1" in msg
    assert "cannot create role app" in msg   # its last log lines


@pytest.mark.docker
def test_docker_missing_external_network_is_created_then_left_alone(live):
    net = f"{live.name}-edge"
    (live.dir / "edge.yml").write_text(
        "services:\n  worker:\n    networks: [edge]\n"
        f"networks:\n  edge:\n    external: true\n    name: {net}\n")
    files = ["docker-compose.yml", "edge.yml"]
    try:
        check = live(files=files, check_mode=True)
        assert check["networks_created"] == [net] and check["changed"]
        assert subprocess.run(["docker", "network", "inspect", net], capture_output=True, check=False).returncode
        first = live(files=files)
        assert first["networks_created"] == [net] and first["services"]["worker"]["status"] == "running (healthy)"
        labels = subprocess.run(["docker", "network", "inspect", "-f", "{{json .Labels}}", net],
                                capture_output=True, text=True, check=True).stdout
        assert json.loads(labels) == {cu.CREATED_BY_LABEL: "compose_project"}
        second = live(files=files)
        assert not second["changed"] and second["networks_created"] == []
    finally:
        subprocess.run(["docker", "compose", "--project-directory", str(live.dir), "-p", live.name,
                        "-f", "docker-compose.yml", "-f", "edge.yml", "down", "-t", "1"],
                       capture_output=True, check=False, cwd=live.dir)
        subprocess.run(["docker", "network", "rm", net], capture_output=True, check=False)


def test_prepare_images_builds_first_and_never_pulls_a_built_image(tmp_path):
    proj = project(tmp_path)
    proj.services["api"].build = {"context": "."}
    proj.services["api"].image = "hy/app:local"
    proj.services["web"].image = "hy/app:local"      # shares the image api builds
    eng = FakeEngine(proj)
    eng.image_id = lambda name: None if name in ("hy/app:local", "web", "postgres") else "sha256:x"
    built, pulled = cu._prepare_images(eng, proj, set(proj.services), cu.Options(), plan_only=True)
    assert built == ["api"] and pulled == ["db", "init"] and eng.commands == []
    cu._prepare_images(eng, proj, set(proj.services), cu.Options(), plan_only=False)
    assert eng.commands == [["build", "api"], ["pull", "--ignore-buildable", "db", "init"]]
    assert cu._prepare_images(eng, proj, set(proj.services), cu.Options(pull="never", build="never"),
                              plan_only=True) == ([], [])
    eng.image_id = lambda name: "sha256:x"
    assert cu._prepare_images(eng, proj, set(proj.services), cu.Options(build="always"), plan_only=True)[0] == ["api"]


@pytest.mark.docker
def test_docker_stop_restart_absent_keep_volumes(live):
    live()
    stopped = live(state="stopped")
    assert stopped["actions"] == {"web": ["stopped"], "worker": ["stopped"]}
    assert not live(state="stopped")["changed"]
    assert live(check_mode=True)["plan"]["web"]["action"] == "start"
    up = live()
    assert up["actions"] == {"web": ["started"], "worker": ["started"]}   # the completed init is not re-run
    restarted = live(state="restarted")
    assert restarted["actions"] == {"web": ["started"], "worker": ["started"]}
    gone = live(state="absent")
    assert set(gone["actions"]) == {"init", "web", "worker"} and _started(live.name) == {}
    assert gone["commands"][-1][-2:] == ["down", "--remove-orphans"]
    assert not live(state="absent")["changed"]


def test_unwritable_state_is_a_domain_error(tmp_path):
    (tmp_path / ".hyhome").write_text("a file where the state directory should be")
    with pytest.raises(HyHomeError, match="cannot write the fingerprint state"):
        cu.write_state(str(tmp_path), {"version": 1})


def _run_module(tmp_path, args, env=None):
    """Run the module the way Ansible does (args file, JSON on stdout)."""
    import sys

    path = tmp_path / "args.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run([sys.executable, "-m", "ansible_collections.hyhome.bootstrap.plugins.modules.compose_project",
                           str(path)], capture_output=True, text=True, env=env, check=False, timeout=60)
    return json.loads(proc.stdout), proc.stderr


def test_module_domain_errors_are_messages_not_tracebacks(tmp_path):
    out, err = _run_module(tmp_path, {"project_dir": str(tmp_path / "missing")})
    assert out["failed"] and "does not exist" in out["msg"] and "Traceback" not in err
    out, _ = _run_module(tmp_path, {"project_dir": "/etc"})
    assert out["failed"] and "refusing project_dir /etc" in out["msg"]
    out, _ = _run_module(tmp_path, {"project_dir": str(tmp_path), "state": "sideways"})
    assert out["failed"] and "value of state must be one of" in out["msg"]


def test_module_check_mode_on_a_machine_without_docker(tmp_path):
    import sys

    env = dict(os.environ, PATH=os.path.dirname(sys.executable))   # no docker on PATH
    out, _ = _run_module(tmp_path, {"project_dir": FIXTURE, "_ansible_check_mode": True}, env=env)
    assert out["changed"] is True and "failed" not in out
    assert any("not installed yet" in str(w) for w in out.get("warnings", []))
    out, _ = _run_module(tmp_path, {"project_dir": FIXTURE}, env=env)
    assert out["failed"] and "docker" in out["msg"]


def test_module_check_mode_without_engine_reports_ignored_recreate_names(tmp_path):
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
    out, _ = _run_module(tmp_path, {"project_dir": FIXTURE, "recreate": ["ghost", "web"],
                                    "_ansible_check_mode": True}, env=env)
    assert "failed" not in out, out.get("msg")
    assert out["recreate_ignored"] == ["ghost"]
    assert out["plan"]["web"]["action"] == "create"
    assert any("ignored: ghost" in str(w) for w in out["warnings"])


@pytest.mark.docker
def test_module_check_mode_reports_ignored_recreate_names(live, tmp_path):
    out, _ = _run_module(tmp_path, {"project_dir": str(live.dir), "project_name": live.name,
                                    "recreate": ["web", "zz-ghost", "a-ghost"], "_ansible_check_mode": True})
    assert "failed" not in out, out.get("msg")
    assert out["recreate_ignored"] == ["a-ghost", "zz-ghost"]
    assert any("ignored: a-ghost, zz-ghost" in str(w) for w in out["warnings"])
    assert out["commands"] == [] and _started(live.name) == {}


class _Timeout(cu.Engine):
    """The real Engine.run with a stand-in `docker` that hangs the way a stuck compose plugin does."""

    def __init__(self, tmp_path):   # no SDK, no engine: only what run() needs
        docker = tmp_path / "docker"
        self.pidfile = tmp_path / "plugin.pid"
        docker.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {self.pidfile}\nwait\n")
        docker.chmod(0o755)
        self.base = [str(docker), "compose"]
        self.env = dict(os.environ)
        self.project_dir = str(tmp_path)
        self.commands = []
        self._image_ids = {}


def test_engine_command_timeout_stops_the_compose_plugin_too(tmp_path):
    eng = _Timeout(tmp_path)
    with pytest.raises(HyHomeError, match=r"did not finish within 1s; it and its child processes were stopped"):
        eng.run(["create", "web"], timeout=1)
    plugin = int(eng.pidfile.read_text())
    gone = _gone_soon(plugin)
    if not gone:
        os.kill(plugin, 9)
    assert gone, "the compose plugin outlived the timeout"


def test_module_shows_only_compose_error_lines_on_one_line(tmp_path):
    proj = tmp_path / "bad"
    proj.mkdir()
    (proj / "compose.yaml").write_text("version: '3'\nservices:\n  s:\n    image: ${HYHOME_UNSET_VAR}busybox\n"
                                       "    bogus: 1\n")
    env = {k: v for k, v in os.environ.items() if k != "HYHOME_UNSET_VAR"}
    out, err = _run_module(tmp_path, {"project_dir": str(proj)}, env=env)
    assert out["failed"] and "Traceback" not in err
    assert out["msg"].startswith(f"docker compose rejects the project in {proj}: ")
    assert "Additional property bogus is not allowed" in out["msg"]
    assert "\n" not in out["msg"] and "HYHOME_UNSET_VAR" not in out["msg"] and "level=" not in out["msg"]
