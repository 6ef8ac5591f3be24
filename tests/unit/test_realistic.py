"""Acceptance on the realistic project (tests/fixtures/realistic, issue 9).

On a fresh clone of the project with the planted defects of ``tests/fixtures/realistic_defects``
applied, validate and preflight must name every row of ``tests/fixtures/realistic/DEFECTS.md``
(the single list of planted defects) with its file:line and a fix; without the overlay, every error
they report must be one of those rows; once prepared (.env, secrets, certificates, configs), the
project validates with no error but the accepted exceptions, and preflight finds nothing to block.

Uses the real ``docker compose`` CLI (``config`` needs no engine and pulls no image).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_collections.hyhome.bootstrap.plugins.module_utils import compose_validate, preflight

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PROJECT = FIXTURES / "realistic"
OVERLAY = FIXTURES / "realistic_defects"
DEFECTS = PROJECT / "DEFECTS.md"
KAFKA_CLUSTER_ID = "MkU3OEVBNTcwNTJENDM2Qk"
PROVIDED = ("smtp_password", "slack_webhook", "github_oauth_client_secret")


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0


pytestmark = pytest.mark.skipif(not _compose_available(), reason="needs the docker CLI with the compose plugin")


# --------------------------------------------------------------------------------------------
# DEFECTS.md, the one list
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    copy: str          # main | overlay
    tool: str          # validate | preflight
    check: str
    severity: str      # error | warning | -
    subject: str
    file: str
    line: int | None
    anchor: str | None
    also: str | None
    day0: str
    defect: str


def _cell(text: str) -> str:
    text = text.strip().replace("\\|", "|")
    if len(text) >= 2 and text[0] == text[-1] == "`":
        text = text[1:-1]
    return text


def parse_defects(path: Path = DEFECTS) -> list[Row]:
    """The rows of the table whose header starts with ``| id |``."""
    rows, header = [], None
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.startswith("|"):
            header = None if rows else header
            continue
        cells = [_cell(c) for c in re.split(r"(?<!\\)\|", raw.strip())[1:-1]]
        if header is None:
            if cells and cells[0] == "id":
                header = cells
            continue
        if set("".join(cells)) <= set("- "):
            continue  # the --- separator
        d = dict(zip(header, cells, strict=True))
        rows.append(Row(
            id=d["id"], copy=d["copy"], tool=d["tool"], check=d["check"], severity=d["severity"],
            subject=d["subject"], file=d["file"], line=None if d["line"] == "-" else int(d["line"]),
            anchor=None if d["anchor"] == "-" else d["anchor"], also=None if d["also"] == "-" else d["also"],
            day0=d["day0"], defect=d["defect"]))
    return rows


ROWS = parse_defects()


def test_defects_table_is_well_formed():
    assert len(ROWS) >= 60
    assert len({r.id for r in ROWS}) == len(ROWS), "row ids must be unique"
    rule_ids = set(compose_validate.RULES)
    check_ids = {cid for cid, _ in preflight.CHECKS}
    for r in ROWS:
        assert r.copy in ("main", "overlay"), r
        assert r.tool in ("validate", "preflight"), r
        assert r.check in (rule_ids if r.tool == "validate" else check_ids), f"{r.id}: unknown id {r.check}"
        assert r.severity in ("error", "warning", "-"), r
        assert r.day0 in ("env", "env_values", "secrets", "placeholder", "tls", "data_dirs", "compose", "no"), r
        assert (r.line is None) == (r.anchor is None), r
        if r.copy == "overlay":
            assert r.day0 == "no", f"{r.id}: overlay defects are the ones day0 must not fix"
    # Validation errors that day0 cannot fix live in the overlay only (day0 must succeed on the main copy).
    assert not [r.id for r in ROWS if r.copy == "main" and r.day0 == "no" and r.tool == "validate"]


# --------------------------------------------------------------------------------------------
# copies of the project
# --------------------------------------------------------------------------------------------

def _ignore_generated(directory: str, names: list[str]) -> set[str]:
    """What a clone would not have: host files left by a run in the fixture directory."""
    rel = os.path.relpath(directory, PROJECT)
    ignored = {n for n in names if n in ("__pycache__", ".hyhome")}
    if rel == ".":
        ignored |= {n for n in names if n in (".env", "data")}
    if rel == "secrets":
        ignored |= {n for n in names if n != ".gitignore"}
    return ignored


def apply_overlay(dest: Path, overlay: Path = OVERLAY) -> None:
    """``*.append`` files are appended to the file of the same path; every other file is copied in."""
    for src in sorted(overlay.rglob("*")):
        rel = src.relative_to(overlay)
        if src.is_dir() or rel == Path("README.md"):
            continue
        if src.name.endswith(".append"):
            target = dest / rel.parent / src.name[: -len(".append")]
            assert target.is_file(), f"{rel} appends to {target}, which the project does not have"
            with open(target, "a", encoding="utf-8") as fh:
                fh.write(src.read_text(encoding="utf-8"))
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def fresh_clone(dest: Path, overlay: bool = False) -> Path:
    """A copy of the project as a fresh clone has it: committed files only, a git repository."""
    shutil.copytree(PROJECT, dest, ignore=_ignore_generated)
    if overlay:
        apply_overlay(dest)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", "-c", "init.defaultBranch=main"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "fresh clone"]):
        subprocess.run([*git, *cmd], cwd=dest, check=True, capture_output=True)
    return dest


def write_env(project: Path) -> None:
    text = (project / ".env.example").read_text(encoding="utf-8")
    text, n = re.subn(r"(?m)^KAFKA_CLUSTER_ID=$", f"KAFKA_CLUSTER_ID={KAFKA_CLUSTER_ID}", text)
    assert n == 1
    (project / ".env").write_text(text, encoding="utf-8")


def prepare(project: Path) -> None:
    """What day0 leaves behind, made by hand: .env, every secret and certificate, the example-only
    configs copied, every data directory."""
    write_env(project)
    registry = yaml.safe_load((project / "docker-compose.yml").read_text(encoding="utf-8"))["secrets"]
    for name, spec in registry.items():
        path = project / spec["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"value-of-{name}\n", encoding="utf-8")
        path.chmod(0o400)
    certs = project / "secrets" / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    for name in ("rootCA.pem", "cert.pem", "key.pem"):
        (certs / name).write_text("-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n", encoding="utf-8")
    for example in project.rglob("*.example"):
        if example.name != ".env.example":
            shutil.copy2(example, example.with_suffix(""))
    for compose_file in project.rglob("docker-compose.yml"):
        for name in re.findall(r"\.\./(?:\.\./)?data/([a-z0-9-]+):", compose_file.read_text(encoding="utf-8")):
            (project / "data" / name).mkdir(parents=True, exist_ok=True)


def host_facts(project: Path, *, networks=("bridge", "host", "none"), max_map_count=65530) -> preflight.HostFacts:
    """A fixed host, so the findings are the project's, not this machine's: Docker 24, Compose 2.26,
    32 GiB, disk to spare, only the default networks, ``vm.max_map_count`` as given."""
    return preflight.HostFacts(
        docker_version="24.0.7", docker_api_version="1.43", docker_root_dir="/var/lib/docker",
        compose_version="2.26.1", max_map_count=max_map_count, mem_total=32 * 1024**3,
        mem_available=28 * 1024**3,
        disks=[preflight.Disk("project filesystem", str(project), 200 * 1024**3),
               preflight.Disk("Docker root", "/var/lib/docker", 200 * 1024**3)],
        listeners=[], bindings=[], networks=set(networks), volumes=set())


@dataclasses.dataclass(frozen=True)
class Seen:
    """A finding of either tool in one shape."""

    tool: str
    rule: str
    severity: str
    text: str          # service, subject and message
    hint: str
    file: str | None   # relative to the project when inside it
    line: int | None
    accepted: str | None = None

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else str(self.file)


def _seen(tool: str, finding, project: Path) -> Seen:
    d = finding.as_dict()
    file = d.get("file")
    if file and os.path.isabs(file):
        rel = os.path.relpath(file, project)
        file = file if rel.startswith("..") else rel
    severity = "error" if d["severity"] == "blocker" else d["severity"]
    text = " ".join(str(d.get(k) or "") for k in ("service", "subject", "message"))
    return Seen(tool, d.get("rule") or d.get("check"), severity, text, d.get("hint") or d.get("fix") or "",
                file, d.get("line"), d.get("accepted"))


def run_validate(project: Path) -> list[Seen]:
    _, findings, _ = compose_validate.run(str(project))
    return [_seen("validate", f, project) for f in findings]


def run_preflight(project: Path, **facts) -> list[Seen]:
    loaded = preflight.load(str(project))
    findings = preflight.run_checks(loaded, host_facts(project, **facts), preflight.Options())
    return [_seen("preflight", f, project) for f in findings]


@pytest.fixture(scope="module")
def defective(tmp_path_factory) -> dict:
    """The unprepared copy with the overlay: the project and both tools' findings."""
    project = fresh_clone(tmp_path_factory.mktemp("defective") / "homelab", overlay=True)
    return {"project": project, "validate": run_validate(project), "preflight": run_preflight(project)}


@pytest.fixture(scope="module")
def unprepared(tmp_path_factory) -> dict:
    """The unprepared copy as committed (no overlay)."""
    project = fresh_clone(tmp_path_factory.mktemp("unprepared") / "homelab")
    return {"project": project, "validate": run_validate(project), "preflight": run_preflight(project)}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    project = fresh_clone(tmp_path_factory.mktemp("prepared") / "homelab")
    prepare(project)
    return project


# --------------------------------------------------------------------------------------------
# the project's shape
# --------------------------------------------------------------------------------------------

def test_fixture_is_a_realistic_platform(prepared):
    root = yaml.safe_load((PROJECT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert len(root["include"]) >= 10
    assert root["networks"]["proxy"]["external"] is True
    out = subprocess.run(["docker", "compose", "--project-directory", str(prepared), "config", "--format", "json"],
                         capture_output=True, text=True, check=True).stdout
    config = json.loads(out)
    services = config["services"]
    assert len(services) >= 40
    without_user = [n for n, s in services.items() if not s.get("user")]
    assert len(without_user) > 0.75 * len(services), "most services run as their image's user"
    for name, svc in services.items():
        image = svc["image"]
        assert ":" in image.rsplit("/", 1)[-1], f"{name}: {image} has no tag"
    one_shot = {n for n, s in services.items() if s.get("restart") in ("no", "on-failure")}
    assert {"db-init", "minio-init", "kafka-init", "opensearch-init"} <= one_shot
    # The registry describes what compose declares and leaves the person-supplied credentials out.
    registry = yaml.safe_load((PROJECT / "hyhome-secrets.yml").read_text(encoding="utf-8"))["secrets"]
    for name in PROVIDED:
        assert name in root["secrets"] and name not in registry
    assert "minio_root_user" in root["secrets"] and "minio_root_user" not in registry
    # Nothing secret or generated is committed.
    assert sorted(os.listdir(PROJECT / "secrets")) == [".gitignore"]
    assert not (PROJECT / ".env").exists() and not (PROJECT / "data").exists()
    for example in ("observability/metrics/alertmanager.yml", "apps/ntfy/server.yml"):
        assert (PROJECT / f"{example}.example").is_file() and not (PROJECT / example).exists()
    assert re.search(r"(?m)^KAFKA_CLUSTER_ID=$", (PROJECT / ".env.example").read_text(encoding="utf-8"))


def test_compose_config_passes_once_env_is_set(tmp_path):
    project = fresh_clone(tmp_path / "homelab")
    write_env(project)
    done = subprocess.run(["docker", "compose", "--project-directory", str(project), "config", "-q"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_defects_table_matches_the_files(defective):
    project = defective["project"]
    for r in ROWS:
        if r.line is not None:
            lines = (project / r.file).read_text(encoding="utf-8").splitlines()
            assert r.anchor in lines[r.line - 1], f"{r.id}: {r.file}:{r.line} is {lines[r.line - 1]!r}"
        if r.also:
            file, line = r.also.rsplit(":", 1)
            text = (project / file).read_text(encoding="utf-8").splitlines()[int(line) - 1]
            assert r.subject in text, f"{r.id}: {r.also} is {text!r}"


# --------------------------------------------------------------------------------------------
# every planted defect named, with file:line and a fix
# --------------------------------------------------------------------------------------------

def _candidates(r: Row, seen: list[Seen]) -> list[Seen]:
    return [s for s in seen if s.rule == r.check and r.subject in s.text]


def _at(r: Row, s: Seen) -> bool:
    """The finding points at the row's file:line, as fields or in its text."""
    if r.line is None:
        return s.file == r.file or r.file in s.text
    return (s.file, s.line) == (r.file, r.line) or f"{r.file}:{r.line}" in f"{s.text} {s.hint}"


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_defect_is_named_with_a_fix(defective, row):
    found = _candidates(row, defective[row.tool])
    assert found, (f"{row.id}: {row.tool} has no {row.check} finding naming {row.subject!r} ({row.defect}); "
                   f"its {row.check} findings: {[s.text for s in defective[row.tool] if s.rule == row.check]}")
    if row.severity != "-":
        assert any(s.severity == row.severity for s in found), \
            f"{row.id}: expected {row.severity}, got {[s.severity for s in found]}"
    assert all(s.hint.strip() for s in found), f"{row.id}: a finding without a fix: {found}"


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_defect_is_located(defective, row):
    found = _candidates(row, defective[row.tool])
    if not found:
        pytest.fail(f"{row.id}: not named at all (see test_defect_is_named_with_a_fix)")
    located = [s for s in found if _at(row, s)]
    assert located, (f"{row.id}: {row.check} {row.subject} should point at {row.file}"
                     + (f":{row.line}" if row.line else "") + f"; it points at {[s.where() for s in found]}")
    if row.also:
        assert any(row.also in f"{s.text} {s.hint}" for s in located), \
            f"{row.id}: the finding should also name {row.also}: {[s.text for s in located]}"


def _unlisted_errors(tool: str, seen: list[Seen]) -> list[str]:
    rows = [r for r in ROWS if r.copy == "main" and r.tool == tool]
    bad = []
    for s in seen:
        if s.severity != "error" or s.accepted:
            continue
        # located when the finding has a location (test_defect_is_located demands one per row)
        if not any(r.check == s.rule and r.subject in s.text and (s.file is None or _at(r, s)) for r in rows):
            bad.append(f"{s.rule} {s.where()}: {s.text}")
    return bad


def test_validate_reports_no_error_that_is_not_planted(unprepared):
    assert _unlisted_errors("validate", unprepared["validate"]) == []


def test_preflight_reports_no_error_that_is_not_planted(unprepared):
    assert _unlisted_errors("preflight", unprepared["preflight"]) == []


# --------------------------------------------------------------------------------------------
# the prepared project
# --------------------------------------------------------------------------------------------

ACCEPTED = {
    ("cadvisor", "security-non-root"),
    ("alloy", "security-non-root"),
    ("node-exporter", "security-host-namespace"),
    ("redis-exporter", "security-healthcheck"),
    ("otel-collector", "security-healthcheck"),
    ("grafana", "security-writable-bind"),
}


def test_prepared_project_validates_without_errors(prepared):
    _, findings, report = compose_validate.run(str(prepared))
    errors = [f"{f.rule} {f.service or '-'} {f.file}:{f.line}: {f.message}"
              for f in findings if f.severity == "error" and not f.accepted]
    assert errors == []
    assert report["ok"] is True
    accepted = {(f.service, f.rule) for f in findings if f.accepted}
    assert accepted == ACCEPTED
    # every declared exception is valid and still needed (a stale one would be an info finding)
    assert [f.message for f in findings if f.rule == "x-hyhome"] == []


def test_prepared_project_passes_preflight(prepared):
    seen = run_preflight(prepared, networks=("bridge", "host", "none", "proxy"), max_map_count=262144)
    assert [f"{s.rule}: {s.text}" for s in seen if s.severity == "error"] == []
