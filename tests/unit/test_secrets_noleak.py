"""No generated value ever appears in playbook output, even at -vvv: check mode (which must write
nothing), first run (with the controller store, so seeds and fetches are exercised), check+diff run,
rotation, and a rebuilt host seeded from the store. Every value, history record and stored copy is
searched for in the combined output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PLAYBOOK = """
- name: Secrets, verbosely
  hosts: all
  gather_facts: false
  tasks:
    - name: Secrets role
      ansible.builtin.include_role:
        name: hyhome.bootstrap.secrets
"""

REGISTRY = """
secrets_registry:
  db_password: {kind: password, file: db/password}
  api_token: {kind: token, file: api/token}
  api_hex: {kind: hex, file: api/hex}
  api_b64: {kind: base64, file: api/b64}
  api_uuid: {kind: uuid, file: api/uuid}
  api_fernet: {kind: fernet, file: api/fernet}
  signing_key: {kind: ed25519, file: keys/signing}
  admin_password: {kind: password, file: web/admin_password}
  web_htpasswd: {kind: htpasswd, source: admin_password, scheme: apr1, file: web/htpasswd}
"""


def ansible_playbook(tmp_path: Path, *extra: str) -> str:
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "false", "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    cmd = [os.path.join(bindir, "ansible-playbook"), "-vvv", "-i", "localhost,", "-c", "local",
           "-e", f"ansible_python_interpreter={sys.executable}",
           "-e", f"@{tmp_path / 'vars.yml'}",
           "-e", f"secrets_project_dir={tmp_path / 'project'}",
           "-e", "secrets_derive_from_compose=false",
           "-e", f"secrets_controller_dir={tmp_path / 'store'}",
           *extra, str(tmp_path / "play.yml")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def values_under(*roots: Path) -> set[str]:
    found = set()
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                text = (Path(dirpath) / name).read_text()
                if name.endswith(".pub"):
                    continue
                found.add(text.strip())
                found.update(line.strip() for line in text.splitlines() if len(line.strip()) >= 16)
                # htpasswd: the hash alone, too
                found.update(line.split(":", 1)[1] for line in text.splitlines() if ":" in line)
    return {v for v in found if len(v) >= 16 and not v.startswith("-----")}


def current_files(secrets_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(secrets_dir)): p.read_bytes() for p in secrets_dir.rglob("*")
            if p.is_file() and ".history" not in p.parts}


@pytest.mark.slow
def test_no_value_in_vvv_output(tmp_path):
    (tmp_path / "project").mkdir()
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "vars.yml").write_text(REGISTRY)
    secrets_dir = tmp_path / "project" / "secrets"

    out = ansible_playbook(tmp_path, "--check", "--diff")
    assert "db_password: generated" in out
    assert not secrets_dir.exists() and not (tmp_path / "store").exists(), "check mode wrote something"
    out += ansible_playbook(tmp_path)
    assert "generated" in out and "db_password" in out
    out += ansible_playbook(tmp_path, "--check", "--diff")
    out += ansible_playbook(tmp_path, "-e", "secrets_rotate=db_password,admin_password", "--diff")
    current = current_files(secrets_dir)
    before_rebuild = values_under(secrets_dir)      # history included: rotated-out values too
    # A rebuilt host: the tree is gone, the store brings the values back through the no_log seed.
    for dirpath, dirnames, files in os.walk(secrets_dir, topdown=False):
        for name in files:
            os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            os.rmdir(os.path.join(dirpath, name))
    out += ansible_playbook(tmp_path)
    assert current_files(secrets_dir) == current

    values = before_rebuild | values_under(secrets_dir, tmp_path / "store")
    assert len(values) >= 12
    leaked = [v[:4] + "..." for v in values if v in out]
    assert leaked == [], f"{len(leaked)} value(s) appear in the -vvv output"
    # The PEM body of the private key, line by line
    pem = (secrets_dir / "keys" / "signing").read_text().splitlines()[1]
    assert pem not in out
