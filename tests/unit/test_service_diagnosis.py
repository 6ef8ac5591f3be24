"""service_diagnosis: the cause and the recovery of a service, from docker-inspect-shaped data."""

from __future__ import annotations

import itertools
import json
import os

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import compose_up as cu
from ansible_collections.hyhome.bootstrap.plugins.module_utils import service_diagnosis as sd
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import Project, Secret, SecretRef, Service
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "service_diagnosis")
_ids = itertools.count(1)
T0 = "2026-11-26T03:00:00.000000000Z"


def inspect(service, status="running", health="healthy", exit_code=0, oom=False, health_log=(), restarts=0,
            finished="0001-01-01T00:00:00Z", memory=64 * 1048576, oneoff=False):
    """A ``docker inspect`` dict with the fields the engine returns for a compose container."""
    state = {"Status": status, "Running": status == "running", "Paused": status == "paused",
             "Restarting": status == "restarting", "OOMKilled": oom, "Dead": status == "dead", "Pid": 4242,
             "ExitCode": exit_code, "Error": "", "StartedAt": T0, "FinishedAt": finished}
    if health:
        state["Health"] = {"Status": health, "FailingStreak": sum(1 for c, _o, _s in health_log if c != 0),
                           "Log": [{"Start": s, "End": s, "ExitCode": c, "Output": o} for c, o, s in health_log]}
    return {
        "Id": f"{service}{next(_ids):04d}".ljust(64, "0"), "Name": f"/hyhome-{service}-1", "Created": T0,
        "RestartCount": restarts, "Image": "sha256:img", "State": state,
        "Config": {"Labels": {cu.PROJECT_LABEL: "hyhome", cu.SERVICE_LABEL: service,
                              cu.ONEOFF_LABEL: str(oneoff)}},
        "HostConfig": {"RestartPolicy": {"Name": "no" if service == "postgres-init" else "unless-stopped"},
                       "Memory": memory},
    }


def project(tmp_path) -> Project:
    """The embedded stack's shape: postgres <- postgres-init ; api -> both ; gateway -> api ; exporter -> postgres."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("postgres_password", "app_db_password"):
        (secrets / name).write_text("x\n")
    pg = SecretRef("postgres_password", "/run/secrets/postgres_password")
    app = SecretRef("app_db_password", "/run/secrets/app_db_password")
    healthy = {"condition": "service_healthy"}
    svc = {
        "postgres": Service("postgres", "hyhome/postgres", None, "999:999", secrets=[pg],
                            healthcheck={"test": ["CMD", "pg_isready"]}, restart="unless-stopped"),
        "postgres-init": Service("postgres-init", "hyhome/postgres", None, "999:999", secrets=[pg, app],
                                 depends_on={"postgres": healthy}, restart="no"),
        "postgres-exporter": Service("postgres-exporter", "hyhome/obs", None, "999:999", secrets=[pg],
                                     depends_on={"postgres": healthy}, healthcheck={"test": ["CMD", "true"]}),
        "api": Service("api", "hyhome/api", None, "1000:1000", secrets=[app],
                       depends_on={"postgres": healthy,
                                   "postgres-init": {"condition": "service_completed_successfully"}},
                       healthcheck={"test": ["CMD", "true"]}),
        "gateway": Service("gateway", "hyhome/gateway", None, "101:101", depends_on={"api": healthy},
                           healthcheck={"test": ["CMD", "true"]}),
    }
    return Project(name="hyhome", working_dir=str(tmp_path), files=[str(tmp_path / "compose.yaml")], services=svc,
                   secrets={"postgres_password": Secret("postgres_password", str(secrets / "postgres_password")),
                            "app_db_password": Secret("app_db_password", str(secrets / "app_db_password"))})


def files(proj, missing=()):
    return {s.file: name not in missing for name, s in proj.secrets.items()}


def steady(**override):
    """Every service healthy (init completed), with per-service replacements."""
    base = {"postgres": inspect("postgres"), "postgres-init": inspect("postgres-init", "exited", None),
            "postgres-exporter": inspect("postgres-exporter"), "api": inspect("api"), "gateway": inspect("gateway")}
    base.update(override)
    return [c for c in base.values() if c is not None]


def logs_of(text):
    return lambda cid: text


def test_healthy_service_needs_nothing(tmp_path):
    proj = project(tmp_path)
    d = sd.diagnose(proj, "api", steady(), files(proj))
    assert d.state.cause == "healthy" and d.state.action == "none" and d.recover == []
    assert d.finding == "api is healthy: nothing to recover"
    assert [f.rule for f in d.findings] == ["recover-healthy"]


def test_completed_init_is_healthy(tmp_path):
    proj = project(tmp_path)
    assert sd.diagnose(proj, "postgres-init", steady(), files(proj)).state.healthy


def test_sigkill_is_killed_not_oom_and_starts_again(tmp_path):
    proj = project(tmp_path)
    api = inspect("api", "exited", None, exit_code=137, finished="2026-11-26T03:01:00.5Z")
    d = sd.diagnose(proj, "api", steady(api=api), files(proj), logs=logs_of("line1\nline2\n"))
    assert (d.state.cause, d.state.action, d.state.exit_code) == ("killed", "start", 137)
    assert d.state.down_since == "2026-11-26T03:01:00.5Z" and d.state.log_tail == ["line1", "line2"]
    assert [s.service for s in d.recover] == ["api"]
    assert "SIGKILL" in d.finding and d.findings[0].rule == "recover-killed"


def test_oom_wins_and_names_the_limit(tmp_path):
    proj = project(tmp_path)
    api = inspect("api", "exited", None, exit_code=137, oom=True, memory=64 * 1048576)
    d = sd.diagnose(proj, "api", steady(api=api), files(proj))
    assert (d.state.cause, d.state.action) == ("oom", "recreate") and d.state.oom_killed
    assert "mem_limit 64 MiB" in d.state.message
    # even when a dependency is down too: the OOM kill is the service's own
    pg = inspect("postgres", health="unhealthy", health_log=[(1, "no response", T0)] * 3)
    assert sd.diagnose(proj, "api", steady(api=api, postgres=pg), files(proj)).state.cause == "oom"


def test_missing_secret_file_is_named_never_its_value(tmp_path):
    proj = project(tmp_path)
    api = inspect("api", "restarting", None, exit_code=1, restarts=7)
    d = sd.diagnose(proj, "api", steady(api=api), files(proj, missing=["app_db_password"]))
    assert (d.state.cause, d.state.action) == ("missing-secret", "secrets")
    assert d.state.missing_secrets == ["app_db_password"] and "app_db_password" in d.finding
    assert "x\n" not in json.dumps(d.as_dict())
    # no container at all and the file gone: still the secret
    d = sd.diagnose(proj, "api", steady(api=None), files(proj, missing=["app_db_password"]))
    assert d.state.cause == "missing-secret"


def test_hung_dependency_is_the_root_cause(tmp_path):
    proj = project(tmp_path)
    timeouts = [(-1, "Health check exceeded timeout (3s)", f"2026-11-26T03:0{i}:00Z") for i in range(5)]
    pg = inspect("postgres", health="unhealthy", health_log=[(0, "", "2026-11-26T02:59:00Z"), *timeouts])
    api = inspect("api", health="unhealthy", health_log=[(1, "wget: server returned error: HTTP/1.0 503", T0)] * 3)
    d = sd.diagnose(proj, "api", steady(postgres=pg, api=api), files(proj))
    assert d.state.cause == "dependency-down" and d.state.action == "start"
    assert d.state.dependencies_down == ["postgres"]
    assert "postgres is hung" in d.state.message and "itself: running but its health check fails" in d.state.message
    # postgres first (killed: it does not answer), then api; init completed and stays out
    assert [(s.service, s.cause, s.action) for s in d.recover] == [("postgres", "hung", "kill"),
                                                                     ("api", "dependency-down", "start")]
    assert d.recover[0].down_since == "2026-11-26T03:00:00Z"   # the first of the failing streak
    assert "root cause postgres: hung" in d.finding
    assert [f.severity for f in d.findings] == ["warning", "error"]


def test_failing_but_answering_healthcheck_recreates(tmp_path):
    proj = project(tmp_path)
    pg = inspect("postgres", health="unhealthy", health_log=[(2, "127.0.0.1:5432 - no response", T0)] * 5)
    d = sd.diagnose(proj, "postgres", steady(postgres=pg), files(proj))
    assert (d.state.cause, d.state.action) == ("failed-healthcheck", "recreate")
    assert d.state.health_log[-1] == "exit 2: 127.0.0.1:5432 - no response"


def test_transitive_dependency_down(tmp_path):
    proj = project(tmp_path)
    pg = inspect("postgres", "exited", None, exit_code=1)
    d = sd.diagnose(proj, "gateway", steady(postgres=pg), files(proj))
    assert [(s.service, s.cause) for s in d.recover] == [("postgres", "crashed"), ("api", "dependency-down"),
                                                          ("gateway", "dependency-down")]
    assert d.state.message == "api is dependency-down"


@pytest.mark.parametrize("status,code,cause,action", [
    ("exited", 0, "stopped", "start"), ("exited", 143, "stopped", "start"), ("exited", 2, "crashed", "recreate"),
    ("restarting", 1, "restarting", "recreate"), ("paused", 0, "paused", "recreate"),
    ("created", 0, "created", "recreate"), ("dead", 0, "dead", "recreate"),
])
def test_container_states(tmp_path, status, code, cause, action):
    proj = project(tmp_path)
    web = inspect("gateway", status, None, exit_code=code)
    st = sd.diagnose(proj, "gateway", steady(gateway=web), files(proj)).state
    assert (st.cause, st.action) == (cause, action)
    assert cause in sd.CAUSES and action in sd.ACTIONS


def test_absent_and_failed_init(tmp_path):
    proj = project(tmp_path)
    d = sd.diagnose(proj, "gateway", steady(gateway=None), files(proj))
    assert (d.state.cause, d.state.action) == ("absent", "start")
    init = inspect("postgres-init", "exited", None, exit_code=1)
    d = sd.diagnose(proj, "api", steady(**{"postgres-init": init}), files(proj))
    assert [(s.service, s.cause) for s in d.recover] == [("postgres-init", "crashed"), ("api", "dependency-down")]


def test_oneoff_run_containers_are_ignored(tmp_path):
    proj = project(tmp_path)
    extra = inspect("api", "exited", None, exit_code=1, oneoff=True)
    assert sd.diagnose(proj, "api", [*steady(), extra], files(proj)).state.healthy


def test_logs_failure_does_not_hide_the_diagnosis(tmp_path):
    proj = project(tmp_path)

    def broken(cid):
        raise OSError("engine gone")

    d = sd.diagnose(proj, "api", steady(api=inspect("api", "exited", None, exit_code=3)), files(proj), logs=broken)
    assert d.state.cause == "crashed" and d.state.log_tail == ["(could not read logs: engine gone)"]


@pytest.mark.parametrize("bad", ["nope", "", None, 3, "../api"])
def test_unknown_service_is_a_clear_error(tmp_path, bad):
    proj = project(tmp_path)
    with pytest.raises(HyHomeError, match=r"unknown service .* in project hyhome: known services are api, gateway"):
        sd.diagnose(proj, bad, steady(), files(proj))


def test_real_inspect_of_a_killed_api(tmp_path):
    """A ``docker inspect`` captured from the embedded stack after `docker kill -s KILL` of the API."""
    with open(os.path.join(FIXTURES, "api-killed.json"), encoding="utf-8") as fh:
        api = json.load(fh)[0]
    proj = project(tmp_path)
    d = sd.diagnose(proj, "api", steady(api=api), files(proj))
    assert (d.state.cause, d.state.action, d.state.exit_code) == ("killed", "start", 137)
    assert sd.seconds_between(d.state.down_since, cu.parse_ts(d.state.down_since) + 12.5) == 12.5


def test_seconds_between_ignores_zero_times():
    assert sd.seconds_between("0001-01-01T00:00:00Z", 100.0) is None
    assert sd.seconds_between(None, 100.0) is None


def test_report_shows_evidence_without_secrets(tmp_path):
    proj = project(tmp_path)
    api = inspect("api", "exited", None, exit_code=137, oom=True)
    d = sd.diagnose(proj, "api", steady(api=api), files(proj), logs=logs_of("Killed\n"))
    assert d.report()[0] == "api: oom -> recreate [exited (137), exit code 137, OOM-killed]"
    assert d.report()[1] == "  log: Killed"
    assert sd.diagnose(proj, "api", steady(), files(proj)).report() == []
