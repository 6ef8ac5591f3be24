"""Bad input corpus: hostile or broken module arguments, registries, inventories, `.env` files and compose projects.

Every case runs the way users run the modules: tasks in one ``ansible-playbook`` run on localhost (one
``block``/``rescue`` per case, so one playbook serves the whole corpus), each case in its own directory.
Each case must end in a failed task whose message says what is wrong in its first line (matching the case's
pattern; a few more lines may list details such as a findings table), with no traceback, and the case's
whole file tree unchanged: content hash, mode, owner, link count and link target of every entry, the
controller store and the files outside the project included (only the project's own state directory,
``.hyhome``, the cached ``docker compose config`` of the run, is not compared). Where the issue allows
skipping with a message instead (hard links inside data trees), the case asks for that warning and an
untouched linked file.

Unhandled cases stay bounded: TASK_TIMEOUT per task, MEMORY_LIMIT of heap for the whole run.

The scripts (validate-docker-compose.sh, preflight-compose.sh) get the unreadable-file cases too: a clear
error naming the file, an exit code of their own (not 0, not 1 = findings), no traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import fstree
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytestmark = [pytest.mark.docker, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
IMAGE = "hyhome/busybox:local"

# ------------------------------------------------------------------------------------------
# Building blocks of hostile inputs

# 9 levels x 9 aliases: about 1 KB of YAML that expands to 9**9 (387 million) leaves.
ALIAS_BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))
COMPOSE_ALIAS_BOMB = (
    "x-bomb:\n" + "".join("  " + line + "\n" for line in ALIAS_BOMB.splitlines())
    + f"services:\n  app:\n    image: {IMAGE}\n    environment:\n      BOMB: *a9\n")
BINARY = bytes(range(256)) * 8 + b"\xff\xfe\x00\x00garbage\x80\x81"
NUL_YAML = f"services:\n  app:\n    image: {IMAGE}\x00\n".encode()
INVALID_YAML = "services:\n  app:\n    image: [unclosed\n  - : : :\n"
# Shapes of vendor keys, built at run time so no scanner mistakes this file for a leak.
AWS_KEY = "AKIA" + "QW3RTY7UIOP4ASDF"
STRIPE_KEY = "sk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc"
GITHUB_TOKEN = "ghp_" + "16C7e42F292c6912E7710c838347Ae178B4a"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"
ENV_LINE_SECRET = "hunter2-in-a-broken-line"


def compose(services: dict | None = None, secrets: dict | None = None) -> str:
    doc = {"services": services or {"app": {"image": IMAGE}}}
    if secrets:
        doc["secrets"] = secrets
    return yaml.safe_dump(doc, sort_keys=False)


def write(path: Path, content: str | bytes, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    if mode is not None:
        path.chmod(mode)
    return path


# ------------------------------------------------------------------------------------------
# The cases


@dataclass
class Case:
    id: str
    expect: str                     # regex the failure message must match (case-insensitive)
    build: Callable[[Path], list[dict]]   # creates the case's files, returns its tasks
    must_not_show: list[str] = field(default_factory=list)  # text the message must not contain
    check_mode: bool = False
    # "fail": the task fails and nothing changes. "skip": where the issue allows skipping with a message
    # (hard links in data trees), the task succeeds, warns (expect), and the entries in `protect` are unchanged.
    outcome: str = "fail"
    protect: list[str] = field(default_factory=list)


class Dirs:
    """The layout of one case: a project two levels down, so `../../x` stays inside the case directory."""

    def __init__(self, root: Path):
        self.root = root
        self.project = root / "srv" / "stack" / "project"
        self.secrets = self.project / "secrets"
        self.outside = root / "srv" / "outside"
        self.store = root / "controller" / "store" / "stack"
        self.ca = root / "ca"
        self.project.mkdir(parents=True)
        self.outside.mkdir(parents=True)
        write(self.outside / "victim", "precious\n", 0o644)


CASES: list[Case] = []


def case(id_: str, expect: str, *, must_not_show=(), check_mode=False, outcome="fail", protect=()):
    def register(build):
        CASES.append(Case(id_, expect, build, list(must_not_show), check_mode, outcome, list(protect)))
        return build
    return register


def secret_files(d: Dirs, **args) -> list[dict]:
    base = {"project_dir": str(d.project), "derive_from_compose": False}
    return [{"hyhome.bootstrap.secret_files": {**base, **args}}]


# --- secret names and the registry (module arguments) ---------------------------------------

for _id, _name in [("secret-name-traversal", "../../x"), ("secret-name-dotdot", ".."), ("secret-name-dot", "."),
                   ("secret-name-slash", "db/password"), ("secret-name-absolute", "/etc/x"),
                   ("secret-name-empty", ""), ("secret-name-nul", "db\x00password"),
                   ("secret-name-newline", "db\npassword"), ("secret-name-too-long", "a" * 300)]:
    case(_id, r"name")(lambda d, n=_name: secret_files(d, registry={n: {"kind": "password"}}))

# A registry entry with a `file:` is managed even when no compose service reads it.
def managed(**entry) -> dict:
    return {"file": "managed", **entry}


case("registry-unknown-kind", r"kind")(lambda d: secret_files(d, registry={"db": managed(kind="bogus")}))
case("registry-unknown-kind-unused-entry", r"kind")(lambda d: secret_files(d, registry={"db": {"kind": "bogus"}}))
case("registry-unknown-field", r"bogus_field|unknown|unsupported")(
    lambda d: secret_files(d, registry={"db": managed(kind="password", bogus_field=1)}))
case("registry-entry-not-a-mapping", r"db")(lambda d: secret_files(d, registry={"db": [1, 2]}))
case("registry-huge-length", r"length")(
    lambda d: secret_files(d, registry={"db": managed(kind="password", length=100_000_000)}))
case("registry-negative-length", r"length")(
    lambda d: secret_files(d, registry={"db": managed(kind="password", length=-1)}))
case("registry-length-not-a-number", r"length")(
    lambda d: secret_files(d, registry={"db": managed(kind="password", length="lots")}))
case("registry-huge-rsa", r"size")(lambda d: secret_files(d, registry={"k": managed(kind="rsa", size=1_000_000)}))
case("registry-tiny-rsa", r"size")(lambda d: secret_files(d, registry={"k": managed(kind="rsa", size=512)}))
case("registry-file-traversal", r"file|outside|path")(
    lambda d: secret_files(d, registry={"db": {"kind": "password", "file": "../../x"}}))
case("registry-file-absolute", r"file|outside|path")(
    lambda d: secret_files(d, registry={"db": {"kind": "password", "file": "/etc/hyhome-x"}}))
case("registry-htpasswd-unknown-source", r"source")(
    lambda d: secret_files(d, registry={"web": managed(kind="htpasswd", source="nope", username="admin")}))
case("registry-bad-mode", r"mode")(
    lambda d: secret_files(d, registry={"db": managed(kind="password", mode="0999")}))
case("registry-rotate-unknown", r"nope")(
    lambda d: secret_files(d, registry={"db": {"kind": "password"}}, rotate=["nope"]))
case("secrets-negative-owner", r"owner|uid|-5")(
    lambda d: secret_files(d, registry={"db": {"kind": "password"}}, default_owner=-5))


# --- registry files (the project's hyhome-secrets.yml) -------------------------------------

def registry_file(content: str | bytes):
    def build(d: Dirs):
        write(d.project / "hyhome-secrets.yml", content, 0o644)
        return secret_files(d, registry_file=str(d.project / "hyhome-secrets.yml"))
    return build


case("registry-file-invalid-yaml", r"hyhome-secrets\.yml")(registry_file("db: {kind: password\n  - ]\n"))
case("registry-file-alias-bomb", r"hyhome-secrets\.yml")(registry_file(ALIAS_BOMB))
case("registry-file-binary", r"hyhome-secrets\.yml")(registry_file(BINARY))
case("registry-file-nul", r"hyhome-secrets\.yml")(registry_file(b"db: {kind: password}\x00\n"))
case("registry-file-not-a-mapping", r"hyhome-secrets\.yml")(registry_file("- db\n- api\n"))
case("registry-file-traversal-name", r"name")(registry_file("../../x: {kind: provided}\n"))


# --- the secrets directory and the files in it ----------------------------------------------

@case("secrets-dir-symlink-out", r"symlink")
def _(d: Dirs):
    (d.project / "secrets").symlink_to(d.outside)
    return secret_files(d, registry={"db": {"kind": "password"}})


@case("secrets-dir-is-a-file", r"secrets")
def _(d: Dirs):
    write(d.project / "secrets", "not a directory\n", 0o600)
    return secret_files(d, registry={"db": {"kind": "password"}})


@case("secrets-dir-root", r"/|refus")
def _(d: Dirs):
    return secret_files(d, secrets_dir="/", registry={"db": {"kind": "password"}})


@case("secret-file-symlink", r"symlink")
def _(d: Dirs):
    d.secrets.mkdir(mode=0o700)
    (d.secrets / "db").symlink_to(d.outside / "victim")
    return secret_files(d, registry={"db": {"kind": "password", "file": "db"}})


@case("secret-file-hard-link", r"hard link|link")
def _(d: Dirs):
    d.secrets.mkdir(mode=0o700)
    os.link(d.outside / "victim", d.secrets / "db")
    return secret_files(d, registry={"db": {"kind": "password", "file": "db"}}, default_owner=4242)


@case("secrets-compose-secret-dotdot", r"\.\.|name")
def _(d: Dirs):
    write(d.project / "compose.yaml", compose({"app": {"image": IMAGE, "secrets": [".."]}},
                                              {"..": {"file": "./secrets/x"}}))
    return secret_files(d, derive_from_compose=True)


@case("secrets-compose-alias-bomb", r"alias|expan|large")
def _(d: Dirs):
    write(d.project / "compose.yaml", COMPOSE_ALIAS_BOMB)
    return secret_files(d, derive_from_compose=True)


@case("secrets-compose-binary", r"compose\.yaml")
def _(d: Dirs):
    write(d.project / "compose.yaml", BINARY)
    return secret_files(d, derive_from_compose=True)


# --- the controller store, through the secrets role ------------------------------------------

def secrets_role(d: Dirs, registry: dict, **extra) -> list[dict]:
    return [{"ansible.builtin.include_role": {"name": "hyhome.bootstrap.secrets"},
             "vars": {"secrets_project_dir": str(d.project), "secrets_controller_dir": str(d.store),
                      "secrets_registry": registry, "secrets_derive_from_compose": False,
                      "secrets_registry_file": "", "secrets_show_summary": False, **extra}}]


@case("role-store-name-traversal", r"name")
def _(d: Dirs):
    d.store.mkdir(parents=True, mode=0o700)
    write(d.store / "db", "stored-value", 0o600)
    return secrets_role(d, {"../../x": {"kind": "provided"}, "db": {"kind": "password"}})


@case("role-store-name-dotdot", r"name")
def _(d: Dirs):
    return secrets_role(d, {"..": {"kind": "password"}})


@case("role-registry-not-a-mapping", r"secrets_registry")
def _(d: Dirs):
    return secrets_role(d, "db,api")  # type: ignore[arg-type]


# --- inventories (role variables, validated by meta/argument_specs.yml) ----------------------

@case("inventory-data-dirs-mode-not-a-string", r"data_dirs_recurse|data_dirs")
def _(d: Dirs):
    write(d.project / "compose.yaml", compose())
    return [{"ansible.builtin.include_role": {"name": "hyhome.bootstrap.data_dirs"},
             "vars": {"data_dirs_project_dir": str(d.project), "data_dirs_recurse": "maybe"}}]


@case("inventory-tls-names-not-a-list", r"tls_")
def _(d: Dirs):
    return [{"ansible.builtin.include_role": {"name": "hyhome.bootstrap.tls"},
             "vars": {"tls_project_dir": str(d.project), "tls_names": {"a": 1}}}]


@case("inventory-env-values-not-a-mapping", r"env_")
def _(d: Dirs):
    write(d.project / "compose.yaml", compose())
    return [{"ansible.builtin.include_role": {"name": "hyhome.bootstrap.env"},
             "vars": {"env_project_dir": str(d.project), "env_values": ["A=1"]}}]


# --- TLS: names, modes, symlinks, the CA ------------------------------------------------------

def make_ca(directory: Path, *, expired: bool = False, mismatched: bool = False) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corpus CA")])
    now = dt.datetime.now(dt.UTC)
    start, end = (now - dt.timedelta(days=800), now - dt.timedelta(days=1)) if expired else \
        (now - dt.timedelta(days=1), now + dt.timedelta(days=3650))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    if mismatched:
        key = ec.generate_private_key(ec.SECP256R1())
    directory.mkdir(mode=0o700)
    write(directory / "rootCA.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    write(directory / "rootCA-key.pem", key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()), 0o400)


def tls(d: Dirs, names=("app.home.arpa",), ca=True, **args) -> list[dict]:
    if ca and not d.ca.exists():
        make_ca(d.ca)
    base = {"project_dir": str(d.project), "ca_path": str(d.ca), "names": list(names), "key_type": "ecdsa"}
    return [{"hyhome.bootstrap.tls_certificate": {**base, **args}}]


case("tls-no-names", r"names")(lambda d: tls(d, names=[]))
case("tls-san-invalid-characters", r"bad name!")(lambda d: tls(d, names=["bad name!"]))
case("tls-san-wildcard-in-the-middle", r"a\.\*\.example")(lambda d: tls(d, names=["a.*.example.org"]))
case("tls-san-label-too-long", r"label|long|63")(lambda d: tls(d, names=["a" * 64 + ".example.org"]))
case("tls-san-name-too-long", r"long|253")(lambda d: tls(d, names=[".".join(["a" * 60] * 5)]))
case("tls-san-nul", r"name|invalid")(lambda d: tls(d, names=["app\x00.home.arpa"]))
case("tls-san-bare-wildcard", r"\*")(lambda d: tls(d, names=["*"]))
case("tls-san-url", r"https?://")(lambda d: tls(d, names=["https://app.home.arpa/"]))
case("tls-key-mode-0666", r"mode|0666")(lambda d: tls(d, mode="0666"))
case("tls-key-mode-garbage", r"mode")(lambda d: tls(d, mode="rwxrwxrwx-nope"))
case("tls-validity-negative", r"validity")(lambda d: tls(d, validity_days=-1))
case("tls-rsa-bits-not-a-choice", r"rsa_bits")(lambda d: tls(d, key_type="rsa", rsa_bits=1024))


@case("tls-key-path-symlink-to-ca-key", r"symlink")
def _(d: Dirs):
    make_ca(d.ca)
    certs = d.project / "secrets" / "certs"
    certs.mkdir(parents=True)
    (certs / "key.pem").symlink_to(d.ca / "rootCA-key.pem")
    return tls(d, key_path=str(certs / "key.pem"), cert_path=str(certs / "cert.pem"))


@case("tls-cert-path-symlink-out", r"symlink")
def _(d: Dirs):
    certs = d.project / "secrets" / "certs"
    certs.mkdir(parents=True)
    (certs / "cert.pem").symlink_to(d.outside / "victim")
    return tls(d, key_path=str(certs / "key.pem"), cert_path=str(certs / "cert.pem"))


@case("tls-leaf-key-is-the-ca-key", r"CA")
def _(d: Dirs):
    make_ca(d.ca)
    return tls(d, key_path=str(d.ca / "rootCA-key.pem"), cert_path=str(d.project / "cert.pem"))


@case("tls-key-hard-link", r"hard link|link")
def _(d: Dirs):
    make_ca(d.ca)
    certs = d.project / "secrets" / "certs"
    certs.mkdir(parents=True)
    os.link(d.ca / "rootCA-key.pem", certs / "key.pem")
    return tls(d, key_path=str(certs / "key.pem"), cert_path=str(certs / "cert.pem"))


@case("tls-ca-expired", r"expired")
def _(d: Dirs):
    make_ca(d.ca, expired=True)
    return tls(d)


@case("tls-ca-key-mismatched", r"does not belong|match")
def _(d: Dirs):
    make_ca(d.ca, mismatched=True)
    return tls(d)


@case("tls-ca-missing", r"CA|rootCA")
def _(d: Dirs):
    d.ca.mkdir()
    return tls(d, ca=False)


@case("tls-ca-cert-binary", r"rootCA\.pem")
def _(d: Dirs):
    make_ca(d.ca)
    (d.ca / "rootCA.pem").write_bytes(BINARY)
    return tls(d)


@case("local-ca-in-root", r"refusing")
def _(d: Dirs):
    return [{"hyhome.bootstrap.local_ca": {"path": "/", "key_type": "ecdsa"}}]


@case("local-ca-path-is-a-file", r"ca")
def _(d: Dirs):
    write(d.root / "ca", "not a directory\n", 0o644)
    return [{"hyhome.bootstrap.local_ca": {"path": str(d.root / "ca"), "key_type": "ecdsa"}}]


# --- data_dirs: bind mounts that must never be touched ---------------------------------------

def data_dirs(d: Dirs, services: dict, **args) -> list[dict]:
    write(d.project / "compose.yaml", compose(services))
    return [{"hyhome.bootstrap.data_dirs": {"project_dir": str(d.project), "missing_image": "warn", **args}}]


case("data-dirs-root-bind", r"'?/'?")(lambda d: data_dirs(d, {"app": {"image": IMAGE, "volumes": ["/:/host"]}}))
case("data-dirs-etc-bind", r"/etc")(lambda d: data_dirs(d, {"app": {"image": IMAGE, "volumes": ["/etc:/x"]}}))
case("data-dirs-traversal", r"outside|allowed")(
    lambda d: data_dirs(d, {"app": {"image": IMAGE, "volumes": ["../../escape:/data"]}}))
case("data-dirs-negative-uid", r"-1|uid|owner")(
    lambda d: data_dirs(d, {"app": {"image": IMAGE, "volumes": ["./data/app:/data"]}},
                        overrides={"app": {"owner": -1, "group": -1}}))
case("data-dirs-bad-mode", r"mode")(
    lambda d: data_dirs(d, {"app": {"image": IMAGE, "volumes": ["./data/app:/data"]}}, mode="9999"))
case("data-dirs-allowed-root-slash", r"'?/'?|allowed")(
    lambda d: data_dirs(d, {"app": {"image": IMAGE, "volumes": ["/:/host"]}}, allowed_roots=["/"]))


@case("data-dirs-symlinked-data-dir", r"symlink")
def _(d: Dirs):
    (d.project / "data").mkdir()
    (d.project / "data" / "app").symlink_to(d.outside)
    return data_dirs(d, {"app": {"image": IMAGE, "user": "4242:4242", "volumes": ["./data/app:/data"]}})


@case("data-dirs-hard-link-in-tree", r"hard.linked|hard link", outcome="skip",
      protect=["srv/outside", "srv/stack/project/data/app/db.sqlite"])
def _(d: Dirs):
    (d.project / "data" / "app").mkdir(parents=True)
    os.link(d.outside / "victim", d.project / "data" / "app" / "db.sqlite")
    return data_dirs(d, {"app": {"image": IMAGE, "user": "4242:4242", "volumes": ["./data/app:/data"]}},
                     recurse=True)


@case("data-dirs-hard-linked-bind-file", r"hard link")
def _(d: Dirs):
    os.link(d.outside / "victim", d.project / "app.conf")
    return data_dirs(d, {"app": {"image": IMAGE, "user": "4242:4242", "volumes": ["./app.conf:/etc/app.conf"]}})


# --- .env files ------------------------------------------------------------------------------

def env(d: Dirs, values=None, dotenv: str | bytes | None = None, **args) -> list[dict]:
    if not (d.project / "compose.yaml").exists():
        write(d.project / "compose.yaml", compose())
    if dotenv is not None:
        write(d.project / ".env", dotenv, 0o640)
    return [{"hyhome.bootstrap.env_file": {"project_dir": str(d.project), "values": values or {"A": "1"},
                                           "check_compose": False, **args}}]


case("env-existing-binary", r"\.env")(lambda d: env(d, dotenv=BINARY))
case("env-existing-nul", r"\.env")(lambda d: env(d, dotenv=b"A=1\nB=tw\x00o\n"))
case("env-existing-broken-line", r"\.env", must_not_show=[ENV_LINE_SECRET])(
    lambda d: env(d, dotenv=f"A=1\nthis line {ENV_LINE_SECRET} is not an assignment\n"))
case("env-value-aws-key", r"AWS_KEY_ID|secret", must_not_show=[AWS_KEY])(
    lambda d: env(d, values={"AWS_KEY_ID": AWS_KEY}))
case("env-value-neutral-name-aws-key", r"UPSTREAM_ID|secret", must_not_show=[AWS_KEY])(
    lambda d: env(d, values={"UPSTREAM_ID": AWS_KEY}))
case("env-value-stripe-key", r"PAYMENTS|secret", must_not_show=[STRIPE_KEY])(
    lambda d: env(d, values={"PAYMENTS": STRIPE_KEY}))
case("env-value-github-token", r"CI_HELPER|secret", must_not_show=[GITHUB_TOKEN])(
    lambda d: env(d, values={"CI_HELPER": GITHUB_TOKEN}))
case("env-value-pem", r"TLS_MATERIAL|secret|PEM", must_not_show=["MIGHAgEAMBMG"])(
    lambda d: env(d, values={"TLS_MATERIAL": PEM_KEY}))
case("env-value-url-password", r"DATABASE_URL|secret|password", must_not_show=["s3cr3t-pw"])(
    lambda d: env(d, values={"DATABASE_URL": "postgres://app:s3cr3t-pw@db:5432/app"}))
case("env-value-newline", r"NOTE")(lambda d: env(d, values={"NOTE": "one\ntwo"}))
case("env-value-nul", r"NOTE")(lambda d: env(d, values={"NOTE": "one\x00two"}))
case("env-bad-key", r"1BAD|key|name")(lambda d: env(d, values={"1BAD-KEY": "x"}))
case("env-bad-mode", r"mode")(lambda d: env(d, mode="rw-rw-rw-nope"))


@case("env-dest-symlink-out", r"symlink")
def _(d: Dirs):
    (d.project / ".env").symlink_to(d.outside / "victim")
    return env(d)


@case("env-compose-alias-bomb", r"alias|expan|large")
def _(d: Dirs):
    write(d.project / "compose.yaml", COMPOSE_ALIAS_BOMB)
    return env(d, check_compose=True)


# --- compose projects --------------------------------------------------------------------------

def validate(d: Dirs, content: str | bytes | None, **args) -> list[dict]:
    if content is not None:
        write(d.project / "compose.yaml", content)
    return [{"hyhome.bootstrap.compose_validate": {"project_dir": str(d.project), "yamllint": False, **args}}]


def preflight(d: Dirs, content: str | bytes | None, **args) -> list[dict]:
    if content is not None:
        write(d.project / "compose.yaml", content)
    return [{"hyhome.bootstrap.compose_preflight": {"project_dir": str(d.project), "check_ports": False,
                                                    "min_disk_free_gb": 0, "min_memory_available_mb": 0,
                                                    "vm_max_map_count": 0, **args}}]


@case("validate-invalid-yaml", r"compose\.yaml|YAML")
def _(d: Dirs):
    write(d.project / "compose.yaml", INVALID_YAML)
    return [{"ansible.builtin.include_role": {"name": "hyhome.bootstrap.validate"},
             "vars": {"validate_project_dir": str(d.project), "validate_yamllint": False,
                      "validate_show_table": False}}]
case("validate-alias-bomb", r"alias|expan|large")(lambda d: validate(d, COMPOSE_ALIAS_BOMB))
case("validate-binary", r"compose\.yaml")(lambda d: validate(d, BINARY))
case("validate-nul", r"compose\.yaml")(lambda d: validate(d, NUL_YAML))
case("validate-not-a-mapping", r"compose\.yaml|mapping")(lambda d: validate(d, "- app\n- db\n"))
case("validate-missing-project", r"no-such-dir|not found|does not exist|no compose")(
    lambda d: [{"hyhome.bootstrap.compose_validate": {"project_dir": str(d.project / "no-such-dir")}}])
case("validate-extra-file-traversal", r"\.\./\.\./|outside|not found|no such")(
    lambda d: validate(d, compose(), files=["compose.yaml", "../../../../etc/passwd"]))
case("preflight-alias-bomb", r"alias|expan|large")(lambda d: preflight(d, COMPOSE_ALIAS_BOMB))
case("preflight-binary", r"compose\.yaml")(lambda d: preflight(d, BINARY))
case("preflight-nul", r"compose\.yaml")(lambda d: preflight(d, NUL_YAML))


@case("preflight-registry-alias-bomb", r"hyhome-secrets\.yml")
def _(d: Dirs):
    write(d.project / "compose.yaml", compose())
    write(d.project / "hyhome-secrets.yml", ALIAS_BOMB)
    return [{"ansible.builtin.include_role": {"name": "hyhome.bootstrap.preflight"}, "vars": {
        "preflight_project_dir": str(d.project),
        "preflight_secrets_registry_file": str(d.project / "hyhome-secrets.yml"),
        "preflight_check_ports": False, "preflight_min_disk_free_gb": 0, "preflight_min_memory_available_mb": 0,
        "preflight_vm_max_map_count": 0, "preflight_show_table": False}}]





@case("compose-project-unknown-state", r"state")
def _(d: Dirs):
    write(d.project / "compose.yaml", compose())
    return [{"hyhome.bootstrap.compose_project": {"project_dir": str(d.project), "state": "exploded"}}]


# ------------------------------------------------------------------------------------------
# Running the corpus


# The run's own state directory in the project (the cached `docker compose config` that the next step
# reuses, see project_context): loading a project may write it before a later check refuses the input.
STATE_DIR = ".hyhome"


def snapshot(root: Path) -> dict[str, tuple]:
    """The tree under root (fstree.snapshot), without the projects' own state directory."""
    return fstree.snapshot(root, prune=lambda dirpath, name: name == STATE_DIR
                           and dirpath.endswith(os.sep + "project"))


# Bounds that keep a case which is not handled yet from taking the machine down: each task gets
# TASK_TIMEOUT seconds, and the run's processes MEMORY_LIMIT bytes of heap (an alias bomb then ends in a
# MemoryError, a crash the case reports, instead of eating every GB there is).
TASK_TIMEOUT = 30
MEMORY_LIMIT = 2 << 30


def limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_bounded(cmd: list[str], timeout: int, **kw) -> subprocess.CompletedProcess:
    """Run cmd in its own session under the memory limit; on timeout kill its whole process group."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                          preexec_fn=limit_memory, text=True, errors="replace", **kw) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            err += f"\n[corpus] killed after {timeout} s"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# What a failed result says: the message, and wherever a crash would show.
KEEP = ("{{ ansible_failed_result | dict2items | selectattr('key', 'in', ['msg', 'exception', 'module_stderr', "
        "'module_stdout', 'stderr', 'changed']) | items2dict }}")


def task_block(n: int, c: Case, tasks: list[dict]) -> dict:
    """The case's tasks in a block whose rescue keeps the failed result as case_<n>."""
    for t in tasks:
        t.setdefault("name", c.id)
        if any(k.startswith("hyhome.bootstrap.") for k in t):
            t.setdefault("timeout", TASK_TIMEOUT)
        if c.check_mode:
            t["check_mode"] = True
    tasks[-1]["register"] = f"case_{n}_ok"
    return {"name": f"case {c.id}", "block": tasks, "rescue": [
        {"name": f"{c.id}: keep the failure", "ansible.builtin.set_fact": {f"case_{n}": KEEP}},
    ]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("corpus")
    cases_dir = base / "cases"
    cases_dir.mkdir()
    blocks, dirs = [], {}
    for n, c in enumerate(CASES):
        d = Dirs(cases_dir / c.id)
        blocks.append(task_block(n, c, c.build(d)))
        dirs[c.id] = d.root
    before = {cid: snapshot(root) for cid, root in dirs.items()}
    before_all = sorted(os.listdir(cases_dir))
    out = base / "results.json"
    playbook = [{
        "hosts": "target", "gather_facts": False,
        "vars": {"hyhome_project_dir": str(base / "unused"), "hyhome_compose_files": [], "hyhome_profiles": [],
                 "hyhome_env_file": "", "hyhome_docker_cli": "docker"},
        "tasks": [*blocks, {"name": "results", "ansible.builtin.copy": {
            "content": "{" + ", ".join(
                f"{json.dumps(c.id)}: {{{{ {{'failed': case_{n} is defined, 'result': case_{n} | default({{}}), "
                f"'warnings': case_{n}_ok.warnings | default([])}} | to_json }}}}" for n, c in enumerate(CASES)) + "}",
            "dest": str(out), "mode": "0600"}}],
    }]
    (base / "corpus.yml").write_text(json.dumps(playbook, indent=1))
    (base / "hosts.yml").write_text(json.dumps({"all": {"hosts": {"target": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    proc = run_bounded([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(base / "hosts.yml"),
                        str(base / "corpus.yml")], timeout=600, cwd=base, env=env)
    (base / "ansible-playbook.log").write_text(proc.stdout + proc.stderr)
    assert out.exists(), proc.stdout[-6000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    after = {cid: snapshot(root) for cid, root in dirs.items()}
    return {"results": results, "before": before, "after": after, "log": proc.stdout + proc.stderr,
            "before_all": before_all, "after_all": sorted(os.listdir(cases_dir))}


MAX_LINES = 8


def test_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


def test_nothing_written_next_to_the_cases(corpus):
    assert corpus["after_all"] == corpus["before_all"]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_case(corpus, c: Case):
    res = corpus["results"].get(c.id)
    assert res is not None, f"case {c.id} did not run"
    before, after = corpus["before"][c.id], corpus["after"][c.id]
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if c.outcome == "skip":
        assert not res["failed"], f"{c.id}: failed: {res['result']}"
        warnings = [w.get("event", {}).get("msg", str(w)) if isinstance(w, dict) else str(w) for w in res["warnings"]]
        assert any(re.search(c.expect, w, re.IGNORECASE) for w in warnings), f"{c.id}: no warning: {warnings}"
        changed = [k for k in changed if any(k == p or k.startswith(p + "/") for p in c.protect)]
        assert not changed, f"{c.id}: a protected entry changed: " + "; ".join(
            f"{k}: {before.get(k)} -> {after.get(k)}" for k in changed[:10])
        return
    assert res["failed"], f"{c.id}: the task succeeded; expected an error matching {c.expect!r}"
    result = res["result"]
    msg = str(result.get("msg", ""))
    dump = json.dumps(result)
    assert "Traceback" not in dump and "MODULE FAILURE" not in msg and not result.get("module_stderr"), \
        f"{c.id}: crashed: {dump[:3000]}"
    # One line says what is wrong; a few more may list the details (a findings table, the refused keys).
    # "Validation of arguments failed:" is Ansible's own header for role variables its argument spec refuses.
    lines = msg.strip().removeprefix("Validation of arguments failed:\n").splitlines()
    assert lines and len(lines[0]) > 20, f"{c.id}: no clear message: {dump[:2000]}"
    assert len(lines) <= MAX_LINES, f"{c.id}: a message of {len(lines)} lines: {msg[:3000]}"
    assert re.search(c.expect, msg, re.IGNORECASE), f"{c.id}: unclear message (want {c.expect!r}): {msg}"
    for text in c.must_not_show:
        assert text not in dump, f"{c.id}: the result shows {text!r}"
    assert not changed, f"{c.id}: the file tree changed: " + "; ".join(
        f"{k}: {before.get(k)} -> {after.get(k)}" for k in changed[:10])


def test_a_failed_case_fails_the_run(tmp_path):
    """Without a rescue, a corpus case makes ansible-playbook exit non-zero, with no traceback."""
    d = Dirs(tmp_path / "case")
    tasks = secret_files(d, registry={"../../x": {"kind": "provided"}})
    playbook = [{"hosts": "target", "gather_facts": False, "tasks": tasks}]
    (tmp_path / "pb.yml").write_text(json.dumps(playbook))
    (tmp_path / "hosts.yml").write_text(json.dumps({"all": {"hosts": {"target": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    before = snapshot(d.root)
    proc = run_bounded([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
                        str(tmp_path / "pb.yml")], timeout=120, cwd=tmp_path,
                       env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"})
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "failed=1" in proc.stdout
    assert snapshot(d.root) == before


# ------------------------------------------------------------------------------------------
# The scripts

SCRIPTS = ["validate-docker-compose.sh", "preflight-compose.sh"]
UNREADABLE = {"binary": BINARY, "nul": NUL_YAML, "alias-bomb": COMPOSE_ALIAS_BOMB.encode()}


@pytest.mark.parametrize("content", UNREADABLE, ids=list(UNREADABLE))
@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_refuse_unreadable_compose_files(tmp_path, script, content):
    project = tmp_path / "project"
    write(project / "compose.yaml", UNREADABLE[content])
    before = snapshot(tmp_path)
    proc = run_bounded(["bash", str(REPO / "scripts" / script), str(project)], timeout=60, cwd=tmp_path,
                       env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    output = proc.stdout + proc.stderr
    assert proc.returncode not in (0, 1), f"{script} {content}: exit {proc.returncode}: {output[-2000:]}"
    assert "Traceback" not in output, output[-3000:]
    assert "compose.yaml" in output, output[-2000:]
    assert snapshot(tmp_path) == before

