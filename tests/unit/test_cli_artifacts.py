"""No secret value in hyhome's runner artifacts: every generated value (the first password, its
rotation, the local CA's private key) and an inline ``-e`` secret are searched for in every file
under ``<root>/.hyhome/runner`` after day0, check and rotate; 0 hits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "cli" / "project"
INLINE = "inline-S3cret-7f1c9a2b4d6e"

pytestmark = pytest.mark.slow


def hyhome(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTEST_"))}
    env.update({"HYHOME_ROOT": str(root), "MY_API_TOKEN": INLINE})   # a secret in the caller's environment too
    return subprocess.run([sys.executable, "-m", "hyhome_cli", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def secret_values(fx: Path) -> set[bytes]:
    values = set()
    for path in (fx / "secrets").rglob("*"):
        if path.is_file() and "smtp_password" not in path.parts and path.name != "smtp_password":
            values.add(path.read_bytes().strip())   # db_password and every history record of it
    key = (fx / "ca" / "rootCA-key.pem").read_bytes()
    values.update(line for line in key.splitlines() if line and not line.startswith(b"-----"))
    return {v for v in values if len(v) >= 16}


def test_no_secret_value_in_runner_artifacts(tmp_path):
    root = tmp_path / "project"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns(".hyhome"))
    fx = tmp_path / "fx"
    fx.mkdir()
    extra = ["-e", f"fx_dir={fx}", "-e", json.dumps({"fx_inline_secret": INLINE}), "--json"]
    for args in (["day0"], ["check"], ["rotate", "db_password"], ["day0", "-vvv", "--tags", "secrets,tls"]):
        proc = hyhome(root, *args, *extra)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    values = secret_values(fx) | {INLINE.encode()}
    assert len(values) >= 4   # two passwords (generated, rotated) + the CA key body + the inline value

    runner = root / ".hyhome" / "runner"
    files = [p for p in runner.rglob("*") if p.is_file()]
    events = [p for p in files if p.parent.name == "job_events"]
    assert len(events) > 40 and any(p.name == "stdout" for p in files)   # the scan is not vacuous
    hits = [(str(p.relative_to(runner)), v[:4]) for p in files for v in values if v in p.read_bytes()]
    assert hits == []
    # no env/extravars, env/envvars or env/cmdline: only the settings file hyhome writes
    assert sorted(p.name for p in (runner / "env").iterdir()) == ["settings"]
    for command in runner.glob("artifacts/*/command"):
        doc = json.loads(command.read_text())
        assert isinstance(doc["env"], list) and "MY_API_TOKEN" in doc["env"], (command, doc)
        assert oct(command.stat().st_mode & 0o777) == "0o600"
