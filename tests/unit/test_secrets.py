"""Pure logic of the secrets core: kinds, derivation from the compose model, access, idempotence,
rotation with history, restore, and every bad input (each must write nothing)."""

from __future__ import annotations

import base64
import copy
import os
import re
import shutil
import stat
import uuid
from pathlib import Path

import pytest
import yaml
from ansible_collections.hyhome.bootstrap.plugins.module_utils import secrets as core
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
    Mount,
    Project,
    SecretRef,
    Service,
    load_project,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import Secret as ComposeSecret
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.identity import (
    IdentityResolver,
    ImageMissing,
    parse_group,
    parse_passwd,
)
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "secrets"
REGISTRY = yaml.safe_load((FIXTURES / "registry.yml").read_text())


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def fixture_project(project_dir: Path) -> Project:
    """The fixture compose project built by hand (the same model load_project gives, see the
    docker-marked test below)."""
    d = str(project_dir)

    def svc(name, user, secrets, image="hyhome/busybox:local"):
        return Service(name=name, image=image, build=None, user=user,
                       secrets=[SecretRef(s, f"/run/secrets/{s}") for s in secrets])

    files = {
        "app_password": "secrets/app/password", "shared_token": "secrets/shared_token",
        "signing_key": "secrets/worker/signing_key", "db_password": "secrets/db/password",
        "gateway_htpasswd": "secrets/gateway/htpasswd", "smtp_password": "secrets/common/smtp_password",
        "legacy_key": "secrets/gateway/legacy_key",
    }
    project = Project(name="hyhome-secrets-fixture", working_dir=d, files=[f"{d}/compose.yaml"])
    project.services = {
        "app": svc("app", "1000:1000", ["app_password", "shared_token"]),
        "worker": svc("worker", "65534:65534", ["shared_token", "signing_key"]),
        "db": svc("db", None, ["db_password"], image="hyhome/secrets-image-user:local"),
        "gateway": svc("gateway", "1000:1000", ["gateway_htpasswd", "smtp_password", "legacy_key"]),
    }
    project.secrets = {n: ComposeSecret(n, os.path.join(d, f)) for n, f in files.items()}
    project.secrets["platform_ca"] = ComposeSecret("platform_ca", None, external=True)
    return project


@pytest.fixture
def proj(tmp_path):
    dest = tmp_path / "project"
    shutil.copytree(FIXTURES / "project", dest)
    return dest


def run(specs, secrets_dir, project=None, **kw):
    p = core.plan(specs, str(secrets_dir), project, **kw)
    core.apply(p)
    return p


def snapshot(root: Path) -> dict:
    """Every path under root with its bytes and mode: proves 'nothing written'."""
    out = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p)] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                           p.read_bytes() if p.is_file() and not p.is_symlink() else None)
    return out


def spec_for(tmp_path, name="s", **entry):
    entry.setdefault("file", name)
    return core.build_specs(None, {name: entry}, str(tmp_path / "secrets"))


def one(tmp_path, **entry):
    return spec_for(tmp_path, **entry)[0]


# --------------------------------------------------------------------------------------------
# kinds: format, length, entropy source
# --------------------------------------------------------------------------------------------

def test_password_default_is_32_alnum_characters(tmp_path):
    v = core.generate_value(one(tmp_path))
    assert len(v) == 32 and re.fullmatch(rb"[A-Za-z0-9]{32}", v)


def test_password_length_and_charset(tmp_path):
    v = core.generate_value(one(tmp_path, length=50, charset=["ascii_lowercase", "-_"]))
    assert len(v) == 50 and re.fullmatch(rb"[a-z_-]{50}", v)


def test_hex(tmp_path):
    assert re.fullmatch(rb"[0-9a-f]{64}", core.generate_value(one(tmp_path, kind="hex")))
    assert re.fullmatch(rb"[0-9a-f]{33}", core.generate_value(one(tmp_path, kind="hex", length=33)))


def test_base64_and_token_hold_the_requested_random_bytes(tmp_path):
    b = core.generate_value(one(tmp_path, kind="base64", length=48))
    assert len(base64.b64decode(b, validate=True)) == 48
    t = core.generate_value(one(tmp_path, kind="token"))
    assert re.fullmatch(rb"[A-Za-z0-9_-]+", t)
    assert len(base64.urlsafe_b64decode(t + b"=" * (-len(t) % 4))) == 32


def test_uuid_is_version_4(tmp_path):
    v = core.generate_value(one(tmp_path, kind="uuid"))
    u = uuid.UUID(v.decode())
    assert u.version == 4 and str(u) == v.decode()


def test_fernet_key_is_accepted_by_cryptography(tmp_path):
    key = core.generate_value(one(tmp_path, kind="fernet"))
    f = Fernet(key)
    assert f.decrypt(f.encrypt(b"x")) == b"x"


def test_rsa_key_default_3072_with_public_key(tmp_path):
    s = one(tmp_path, kind="rsa")
    pem = core.generate_value(s)
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    pub = core.public_key_bytes(pem)
    assert serialization.load_pem_public_key(pub).public_numbers() == key.public_key().public_numbers()


def test_ed25519_key_with_openssh_public_key(tmp_path):
    s = one(tmp_path, kind="ed25519", public_format="openssh")
    pem = core.generate_value(s)
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    run([s], tmp_path / "secrets")
    key = serialization.load_pem_private_key((tmp_path / "secrets" / "s").read_bytes(), None)
    pub = (tmp_path / "secrets" / "s.pub").read_bytes()
    assert pub.startswith(b"ssh-ed25519 ")
    assert serialization.load_ssh_public_key(pub).public_bytes_raw() == key.public_key().public_bytes_raw()
    assert stat.S_IMODE(os.stat(tmp_path / "secrets" / "s.pub").st_mode) == 0o444


@pytest.mark.parametrize("kind", ["password", "hex", "base64", "token", "uuid", "fernet"])
def test_every_random_kind_draws_from_the_csprng_hooks(tmp_path, monkeypatch, kind):
    import random
    import secrets as stdlib_secrets

    assert core._token_bytes is stdlib_secrets.token_bytes
    assert isinstance(core._rng, random.SystemRandom)
    calls = []

    class Fake:
        def choice(self, seq):
            calls.append("choice")
            return seq[0]

    monkeypatch.setattr(core, "_rng", Fake())
    monkeypatch.setattr(core, "_token_bytes", lambda n: calls.append("bytes") or b"\x00" * n)
    core.generate_value(one(tmp_path, kind=kind))
    assert calls


@pytest.mark.parametrize("kind", ["password", "hex", "base64", "token", "uuid", "fernet", "ed25519"])
def test_two_values_differ(tmp_path, kind):
    s = one(tmp_path, kind=kind)
    assert core.generate_value(s) != core.generate_value(s)


# --------------------------------------------------------------------------------------------
# htpasswd: derived, verified, never re-hashed while it matches
# --------------------------------------------------------------------------------------------

def htpasswd_specs(tmp_path, **entry):
    reg = {"pw": {"file": "pw"}, "ht": {"kind": "htpasswd", "source": "pw", "file": "ht", **entry}}
    return core.build_specs(None, reg, str(tmp_path / "secrets"))


@pytest.mark.parametrize(("scheme", "prefix"), [("bcrypt", "$2"), ("apr1", "$apr1$"), ("sha512_crypt", "$6$")])
def test_htpasswd_schemes_verify_against_the_source(tmp_path, scheme, prefix):
    specs = htpasswd_specs(tmp_path, scheme=scheme, username="alice")
    run(specs, tmp_path / "secrets")
    pw = (tmp_path / "secrets" / "pw").read_text()
    line = (tmp_path / "secrets" / "ht").read_text()
    user, hashed = line.rstrip("\n").split(":", 1)
    assert user == "alice" and hashed.startswith(prefix) and line.endswith("\n")
    assert core.verify_password(pw, hashed) and not core.verify_password(pw + "x", hashed)


def test_htpasswd_default_is_bcrypt_and_is_not_rehashed(tmp_path):
    specs = htpasswd_specs(tmp_path)
    run(specs, tmp_path / "secrets")
    first = (tmp_path / "secrets" / "ht").read_bytes()
    assert first.startswith(b"admin:$2")
    again = run(specs, tmp_path / "secrets")
    assert not again.changed and (tmp_path / "secrets" / "ht").read_bytes() == first


def test_htpasswd_follows_a_rotated_source_and_keeps_other_users(tmp_path):
    specs = htpasswd_specs(tmp_path, scheme="apr1")
    run(specs, tmp_path / "secrets")
    ht = tmp_path / "secrets" / "ht"
    os.chmod(ht, 0o600)
    ht.write_bytes(ht.read_bytes() + b"bob:$apr1$abcdefgh$0123456789abcdefghijkl\n")
    os.chmod(ht, 0o400)
    p = run(specs, tmp_path / "secrets", rotate=["pw"])
    actions = {i.spec.name: i.action for i in p.items}
    assert actions == {"pw": "rotated", "ht": "rederived"}
    lines = ht.read_text().splitlines()
    assert lines[1].startswith("bob:") and len(lines) == 2
    assert core.verify_password((tmp_path / "secrets" / "pw").read_text(), lines[0].split(":", 1)[1])


def test_htpasswd_scheme_change_rehashes(tmp_path):
    run(htpasswd_specs(tmp_path, scheme="apr1"), tmp_path / "secrets")
    p = run(htpasswd_specs(tmp_path, scheme="sha512_crypt"), tmp_path / "secrets")
    assert [i.action for i in p.items if i.spec.name == "ht"] == ["rederived"]
    assert (tmp_path / "secrets" / "ht").read_text().startswith("admin:$6$")


# --------------------------------------------------------------------------------------------
# derivation from the compose model, access
# --------------------------------------------------------------------------------------------

def fixture_specs(proj, **kw):
    return core.build_specs(fixture_project(proj), REGISTRY, str(proj / "secrets"), **kw)


def test_derivation_from_fixture_project(proj):
    specs = {s.name: s for s in fixture_specs(proj)}
    assert set(specs) == {"app_password", "shared_token", "signing_key", "db_password", "gateway_htpasswd",
                          "smtp_password", "legacy_key", "gateway_admin_password"}
    assert "platform_ca" not in specs  # external: not file-based
    assert specs["shared_token"].consumers == ("app", "worker")
    assert specs["gateway_admin_password"].origin == "registry"
    assert specs["gateway_admin_password"].path == str(proj / "secrets/gateway/admin_password")
    assert specs["app_password"].length == 40 and specs["legacy_key"].size == 2048
    assert specs["smtp_password"].kind == "provided" and not specs["smtp_password"].persistent


def test_unlisted_secret_gets_default_kind(proj):
    specs = {s.name: s for s in core.build_specs(fixture_project(proj), {}, str(proj / "secrets"))}
    assert specs["legacy_key"].kind == "password" and specs["legacy_key"].length == 32


def test_access_single_user_group_for_different_users_and_default(proj):
    p = run(fixture_specs(proj), proj / "secrets", fixture_project(proj))
    by = {i.spec.name: i for i in p.items}
    st = os.stat(proj / "secrets/app/password")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o400)
    shared = by["shared_token"]
    st = os.stat(proj / "secrets/shared_token")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o440)
    assert "different users" in shared.access.note and "group_add" in shared.access.note
    assert "different users" in " ".join(shared.report()["notes"])
    st = os.stat(proj / "secrets/db/password")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o400)
    assert stat.S_IMODE(os.stat(proj / "secrets").st_mode) & 0o007 == 0


def test_fixture_db_gets_the_user_its_image_declares(proj):
    images = FakeImages({"hyhome/secrets-image-user:local": ("4242:4242", "", ""),
                         "hyhome/busybox:local": ("", "", "")})
    p = run(fixture_specs(proj), proj / "secrets", fixture_project(proj), identities=IdentityResolver(images=images))
    st = os.stat(proj / "secrets/db/password")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4242, 4242, 0o400)
    db = next(i for i in p.items if i.spec.name == "db_password")
    assert [(r.service, r.source) for r in db.readers] == [("db", "image-config")]
    assert [w.split()[0] for w in p.warnings] == ["smtp_password"]      # the placeholder; nothing about users


def test_shared_gid_when_users_declare_one():
    s = core.SecretSpec("x", "/p/x", "x", "password", "compose", consumers=("a", "b"))
    readers = [core.Reader("a", 1000, 3000), core.Reader("b", 472, 3000)]
    a = core.resolve_access(s, readers, 0, 0, None)
    assert (a.uid, a.gid, a.mode) == (1000, 3000, 0o440) and "group_add" not in a.note
    b = core.resolve_access(s, [core.Reader("a", 1000, None), core.Reader("b", 472, None)], 0, 0, 5000)
    assert (b.gid, b.mode) == (5000, 0o440)


def test_a_consumer_with_group_add_needs_no_hint():
    s = core.SecretSpec("x", "/p/x", "x", "password", "compose", consumers=("a", "b"))
    a = core.resolve_access(s, [core.Reader("a", 1000, 1000), core.Reader("b", 999, 999, (1000,))], 0, 0, None)
    assert (a.uid, a.gid, a.mode) == (1000, 1000, 0o440) and "group_add" not in a.note
    b = core.resolve_access(s, [core.Reader("a", 1000, 1000), core.Reader("b", 999, 999)], 0, 0, None)
    assert "b must run with group_add: ['1000']" in b.note


def test_shared_group_is_the_gid_every_reader_holds_through_group_add():
    # A sidecar (999) that joins the database's group (103) through group_add: the file's group
    # is 103, so both read it, whichever reader is listed first.
    s = core.SecretSpec("x", "/p/x", "x", "password", "compose", consumers=("a", "b"))
    readers = [core.Reader("db-init", 999, 999, (0, 103, 1000)), core.Reader("spilo", 101, 103)]
    a = core.resolve_access(s, readers, 0, 0, None)
    assert (a.uid, a.gid, a.mode) == (999, 103, 0o440) and "group_add" not in a.note
    # gid 0 is common too but is chosen only when nothing else is shared
    b = core.resolve_access(s, [core.Reader("a", 1000, 0, (2000,)), core.Reader("b", 472, 0, (2000,))], 0, 0, None)
    assert b.gid == 2000
    c = core.resolve_access(s, [core.Reader("a", 1000, 0), core.Reader("b", 472, 0)], 0, 0, None)
    assert c.gid == 0


def test_readers_carry_group_add_from_the_model(tmp_path):
    project = _db_project(tmp_path, tmp_path)
    project.services["db"].group_add = ["1000", "audio"]
    readers = core.readers_for(one(tmp_path, consumers=["db"]), project, core.offline_resolver())
    assert readers == [core.Reader("db", 999, 999, (1000,))]


def test_registry_owner_and_mode_override(tmp_path):
    s = one(tmp_path, owner="root", group=0, mode="0440")
    p = run([s], tmp_path / "secrets")
    assert (p.items[0].access.uid, p.items[0].access.gid, p.items[0].access.mode) == (0, 0, 0o440)


class FakeImages:
    """The engine's view of images (Config.User and /etc/passwd, /etc/group); absent ones raise."""

    def __init__(self, images):
        self.images = images      # image -> (config_user, passwd text, group text)

    def config_user(self, image):
        if image not in self.images:
            raise ImageMissing(image)
        return self.images[image][0] or None

    def accounts(self, image):
        if image not in self.images:
            raise ImageMissing(image)
        _, passwd, group = self.images[image]
        return parse_passwd(passwd), parse_group(group)


def _consumers_project(tmp_path, services: dict) -> Project:
    """One secret ``s`` read by every service in ``services`` (name -> (image, user, group_add))."""
    project = Project(name="p", working_dir=str(tmp_path), files=[str(tmp_path / "compose.yaml")])
    project.services = {name: Service(name=name, image=image, build=None, user=user, group_add=list(groups),
                                      secrets=[SecretRef("s", "/run/secrets/s")])
                        for name, (image, user, groups) in services.items()}
    return project


def test_readers_come_from_the_identity_resolver(tmp_path):
    project = _consumers_project(tmp_path, {
        "numeric": ("hyhome/busybox:local", "1000:50", []),
        "by_name": ("example/app:1", "app", []),
        "configured": ("example/grafana-like:1", None, []),
        "table": ("postgres:16", None, ["1000"]),
        "overridden": ("example/app:1", None, []),
        "rooted": ("hyhome/busybox:local", "root", []),
    })
    images = FakeImages({
        "hyhome/busybox:local": ("", "root:x:0:0::/root:/bin/sh\n", "root:x:0:\n"),
        "example/app:1": ("", "root:x:0:0::/:/bin/sh\napp:x:1500:1600::/app:/bin/sh\n", ""),
        "example/grafana-like:1": ("472", "", ""),
    })
    resolver = IdentityResolver(overrides={"overridden": {"owner": 2000, "group": 2001}}, images=images)
    spec = one(tmp_path, consumers=list(project.services))
    got = {r.service: (r.uid, r.gid, r.groups, r.source) for r in core.readers_for(spec, project, resolver)}
    assert got == {
        "numeric": (1000, 50, (), "user"),
        "by_name": (1500, 1600, (), "user"),
        "configured": (472, 472, (), "image-config"),
        "table": (999, 999, (1000,), "image-table"),
        "overridden": (2000, 2001, (), "override"),
        "rooted": (0, 0, (), "user"),
    }
    assert not resolver.warnings


def test_single_reader_without_user_gets_the_uid_its_image_runs_as(tmp_path):
    """The realistic case: grafana (472) reads its admin password, no user: in compose."""
    project = _consumers_project(tmp_path, {"grafana": ("grafana/grafana:11.2.0", None, [])})
    s = one(tmp_path, consumers=["grafana"])
    p = run([s], tmp_path / "secrets", project)
    st = os.stat(tmp_path / "secrets/s")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (472, 0, 0o400)
    assert p.items[0].report()["readers"] == [{"service": "grafana", "uid": 472, "gid": 0, "source": "image-table"}]
    assert not p.warnings


def test_readers_with_different_image_users_share_a_group(tmp_path):
    project = _consumers_project(tmp_path, {"loki": ("grafana/loki:3.1.0", None, []),
                                            "prometheus": ("prom/prometheus:v2.54.0", None, ["10001"])})
    p = run([one(tmp_path, consumers=["loki", "prometheus"])], tmp_path / "secrets", project)
    st = os.stat(tmp_path / "secrets/s")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (10001, 10001, 0o440)
    assert "group_add" not in p.items[0].access.note     # prometheus already has group 10001


def test_unresolved_consumer_warns_with_the_fix_and_gets_the_default_owner(tmp_path):
    project = _consumers_project(tmp_path, {"mystery": ("example/unknown:1", None, [])})
    p = core.plan([one(tmp_path, consumers=["mystery"])], str(tmp_path / "secrets"), project,
                  default_owner=0, default_group=0)
    assert (p.items[0].access.uid, p.items[0].access.gid) == (0, 0)
    assert p.items[0].readers[0].source == "unresolved"
    text = " ".join(p.warnings)
    assert "mystery" in text and "image_users" in text and "override" in text
    # The same consumer with an image_users entry: resolved, no warning.
    resolver = IdentityResolver(image_users={"example/unknown": "1234:1234"}, images=FakeImages({}))
    p = core.plan([one(tmp_path, consumers=["mystery"])], str(tmp_path / "secrets"), project, identities=resolver)
    assert (p.items[0].access.uid, p.items[0].access.gid, p.items[0].access.mode) == (1234, 1234, 0o400)
    assert not p.warnings


@pytest.mark.docker
def test_load_project_gives_the_same_specs(proj):
    loaded = core.build_specs(load_project(str(proj)), REGISTRY, str(proj / "secrets"))
    assert [(s.name, s.path, s.consumers, s.kind) for s in loaded] == \
        [(s.name, s.path, s.consumers, s.kind) for s in fixture_specs(proj)]


# --------------------------------------------------------------------------------------------
# idempotence, check mode, never overwrite
# --------------------------------------------------------------------------------------------

def test_second_run_changes_nothing(proj):
    project = fixture_project(proj)
    first = run(fixture_specs(proj), proj / "secrets", project)
    assert first.changed
    before = snapshot(proj / "secrets")
    again = run(fixture_specs(proj), proj / "secrets", project)
    assert not again.changed and snapshot(proj / "secrets") == before
    assert all(i.action == "ok" for i in again.items)


def test_plan_alone_is_check_mode_and_writes_nothing(proj):
    before = snapshot(proj)
    p = core.plan(fixture_specs(proj), str(proj / "secrets"), fixture_project(proj))
    assert p.changed and snapshot(proj) == before
    diff = p.diff()
    assert "app_password: generated" in diff["after"]


def test_results_and_diff_never_carry_values(proj):
    p = run(fixture_specs(proj), proj / "secrets", fixture_project(proj), rotate=[])
    text = repr(p.results()) + repr(p.diff()) + repr(p.warnings)
    for dirpath, _, files in os.walk(proj / "secrets"):
        for f in files:
            value = (Path(dirpath) / f).read_text().strip()
            for line in value.splitlines():
                if len(line) >= 16:
                    assert line not in text


def test_existing_value_is_never_overwritten(tmp_path):
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "s").write_bytes(b"short-but-mine")
    p = run([one(tmp_path)], d)
    assert (d / "s").read_bytes() == b"short-but-mine"
    assert p.items[0].action == "ok"


def test_empty_file_and_docker_empty_dir_count_as_missing(tmp_path):
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "a").write_bytes(b"\n")
    (d / "b").mkdir()
    specs = core.build_specs(None, {"a": {"file": "a"}, "b": {"file": "b"}}, str(d))
    p = run(specs, d)
    assert [i.action for i in p.items] == ["generated", "generated"]
    assert len((d / "a").read_bytes()) == 32 and (d / "b").is_file()


def test_permission_drift_is_fixed_without_touching_content(tmp_path):
    d = tmp_path / "secrets"
    run([one(tmp_path)], d)
    value = (d / "s").read_bytes()
    os.chmod(d / "s", 0o644)
    os.chown(d / "s", 1234, 1234)
    os.chmod(d, 0o755)  # noqa: S103 - the drift under test
    p = run([one(tmp_path)], d)
    item = p.items[0]
    assert item.action == "ok" and item.permissions and p.changed
    st = os.stat(d / "s")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o400)
    assert (d / "s").read_bytes() == value
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o750


def test_missing_public_key_is_rewritten_from_the_private_key(tmp_path):
    s = one(tmp_path, kind="ed25519")
    run([s], tmp_path / "secrets")
    pub = (tmp_path / "secrets/s.pub").read_bytes()
    (tmp_path / "secrets/s.pub").unlink()
    p = run([s], tmp_path / "secrets")
    assert p.items[0].action == "ok" and p.items[0].public is not None
    assert (tmp_path / "secrets/s.pub").read_bytes() == pub


def test_stale_temp_files_of_a_crashed_writer_are_removed_and_reported(tmp_path):
    d = tmp_path / "secrets"
    run([one(tmp_path)], d)
    ours = d / ".s.tmp.hyhome-0123456789ab"     # the name fileops.atomic_write gives its temp files
    ours.write_bytes(b"partial")
    p = run([one(tmp_path)], d)
    assert p.changed and not ours.exists()
    assert f"{ours}: removed" in p.diff()["after"]


# --------------------------------------------------------------------------------------------
# rotation, history, restore
# --------------------------------------------------------------------------------------------

def test_rotation_keeps_history_and_reports_consumers(proj):
    project = fixture_project(proj)
    run(fixture_specs(proj), proj / "secrets", project)
    old = (proj / "secrets/shared_token").read_bytes()
    p = run(fixture_specs(proj), proj / "secrets", project, rotate=["shared_token"])
    new = (proj / "secrets/shared_token").read_bytes()
    assert new != old
    assert p.recreate_services() == ["app", "worker"]
    assert [i.spec.name for i in p.items if i.action == "rotated"] == ["shared_token"]
    hist = core.history_entries(str(proj / "secrets"), "shared_token")
    assert any(h.endswith("-rotated-out") and Path(h).read_bytes() == old for h in hist)
    for h in hist:
        assert stat.S_IMODE(os.stat(h).st_mode) == 0o400
        assert re.match(r"\d{8}T\d{6}\.\d{6}Z-\d+-", os.path.basename(h))
    assert stat.S_IMODE(os.stat(proj / "secrets/.history").st_mode) == 0o700
    # mode/owner of the new file are those of the old one
    st = os.stat(proj / "secrets/shared_token")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o440)
    assert not run(fixture_specs(proj), proj / "secrets", project).changed


def test_hosts_sharing_a_store_rotate_to_the_value_the_first_one_stored(tmp_path):
    """One stack on two hosts, one controller store: the first host rotates (a new value, stored), the
    second rotates to that stored value, not to a value of its own; both keep the old one in history."""
    first, second = tmp_path / "h1" / "secrets", tmp_path / "h2" / "secrets"
    s1, s2 = one(tmp_path / "h1", persistent=True), one(tmp_path / "h2", persistent=True)
    run([s1], first)
    old = (first / "s").read_bytes()
    run([s2], second, seed={"s": old.decode()})
    assert (second / "s").read_bytes() == old
    run([s1], first, rotate=["s"], seed={"s": old.decode()})           # the store still holds the old value
    new = (first / "s").read_bytes()
    assert new != old
    p = run([s2], second, rotate=["s"], seed={"s": new.decode()}, rotate_to_seed=True)
    assert p.items[0].action == "rotated" and (second / "s").read_bytes() == new
    assert "first host of the shared controller store moved to" in " ".join(p.items[0].notes)
    hist = core.history_entries(str(second), "s")
    assert any(h.endswith("-rotated-out") and Path(h).read_bytes() == old for h in hist)
    assert not run([s2], second, seed={"s": new.decode()}).changed


@pytest.mark.parametrize("store", ["same", "none"])
def test_rotate_to_seed_without_a_new_stored_value_changes_nothing(tmp_path, store):
    """The first host did not rotate (the store holds the current value, or nothing): refused, so the
    host never ends up with a value of its own."""
    d = tmp_path / "secrets"
    s = one(tmp_path, persistent=True)
    run([s], d)
    current = (d / "s").read_bytes()
    seed = {"s": current.decode()} if store == "same" else {}
    before = snapshot(tmp_path)
    with pytest.raises(HyHomeError, match="rotate: s: the controller store holds no new value to move to"):
        core.plan([s], str(d), rotate=["s"], seed=seed, rotate_to_seed=True)
    assert snapshot(tmp_path) == before


def test_a_rebuilt_host_without_history_rolls_back_to_the_stored_value(tmp_path):
    """The first host rolled back (from its history) and stored that value; a host rebuilt since has no
    history, and follows the store."""
    first, rebuilt = tmp_path / "h1" / "secrets", tmp_path / "h2" / "secrets"
    s1, s2 = one(tmp_path / "h1", persistent=True), one(tmp_path / "h2", persistent=True)
    run([s1], first)
    old = (first / "s").read_bytes()
    run([s1], first, rotate=["s"])
    new = (first / "s").read_bytes()
    run([s2], rebuilt, seed={"s": new.decode()})                   # rebuilt after the rotation
    assert not core.history_entries(str(rebuilt), "s")[:-1]         # only its own "current" record
    with pytest.raises(HyHomeError, match="no earlier value"):
        core.plan([s2], str(rebuilt), restore=["s"])
    run([s1], first, restore=["s"])
    assert (first / "s").read_bytes() == old
    p = run([s2], rebuilt, restore=["s"], seed={"s": old.decode()}, rotate_to_seed=True)
    assert p.items[0].action == "rolled-back" and (rebuilt / "s").read_bytes() == old
    with pytest.raises(HyHomeError, match="restore: s: the controller store holds no new value"):
        core.plan([s2], str(rebuilt), restore=["s"], seed={"s": old.decode()}, rotate_to_seed=True)


def test_rotation_without_rotate_to_seed_ignores_the_store(tmp_path):
    """A single host (or the first of a store) rotates to a new value even when the store holds another."""
    d = tmp_path / "secrets"
    s = one(tmp_path)
    run([s], d)
    old = (d / "s").read_bytes()
    run([s], d, rotate=["s"], seed={"s": "stale-value-from-the-store"})
    assert (d / "s").read_bytes() not in (old, b"stale-value-from-the-store")


def test_deleted_persistent_secret_is_restored_from_history_not_regenerated(tmp_path):
    d = tmp_path / "secrets"
    s = one(tmp_path, persistent=True)
    run([s], d)
    run([s], d, rotate=["s"])
    current = (d / "s").read_bytes()
    (d / "s").unlink()
    p = run([s], d)
    assert p.items[0].action == "restored" and (d / "s").read_bytes() == current
    assert any("restored" in w and "persistent" in w for w in p.warnings)
    # The consumers already use that value: nothing to recreate.
    assert p.changed and not p.items[0].content_changed


def test_restored_value_recreates_consumers_only_when_it_differs_from_the_one_in_use(tmp_path):
    d = tmp_path / "secrets"
    s = one(tmp_path, persistent=True, consumers=["db"])
    run([s], d)
    in_use = (d / "s").read_bytes()
    (d / "s").unlink()
    assert run([s], d, seed={"s": in_use.decode()}).recreate_services() == []
    (d / "s").unlink()
    assert run([s], d, seed={"s": "a-different-value-from-the-store-0123456789"}).recreate_services() == ["db"]


def _db_project(tmp_path, data_dir):
    project = Project(name="p", working_dir=str(tmp_path), files=[str(tmp_path / "compose.yaml")])
    project.services = {"db": Service(
        name="db", image="hyhome/busybox:local", build=None, user="999:999",
        mounts=[Mount(type="bind", target="/data", read_only=False, host_path=str(data_dir)),
                Mount(type="bind", target="/conf", read_only=True, host_path=str(tmp_path))],
        secrets=[SecretRef("s", "/run/secrets/s")])}
    return project


def test_lost_persistent_secret_without_history_is_refused_when_its_consumer_holds_data(tmp_path):
    d, data = tmp_path / "secrets", tmp_path / "data"
    data.mkdir()
    s = one(tmp_path, persistent=True, consumers=["db"])
    project = _db_project(tmp_path, data)
    # An empty data dir (first boot): generated as usual.
    run([s], d, project)
    (data / "PG_VERSION").write_text("15")
    # File and history both gone, database initialised: refused, nothing written, names the holder.
    shutil.rmtree(d)
    before = snapshot(tmp_path)
    with pytest.raises(HyHomeError) as err:
        run([s], d, project)
    assert "s is missing and has no history" in err.value.msg and f"db:{data}" in err.value.msg
    assert snapshot(tmp_path) == before
    # A non-persistent secret, or a read-only mount holding files, does not block.
    assert run([one(tmp_path, persistent=False, consumers=["db"])], d, project).items[0].action == "generated"


def test_pre_existing_persistent_value_is_recorded_once(tmp_path):
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "s").write_bytes(b"set-by-a-person-long-enough")
    p = run([one(tmp_path)], d)
    assert p.changed and p.items[0].action == "ok" and p.items[0].history
    assert not run([one(tmp_path)], d).changed
    (d / "s").unlink()
    run([one(tmp_path)], d)
    assert (d / "s").read_bytes() == b"set-by-a-person-long-enough"


def test_deleted_non_persistent_secret_is_regenerated_with_a_warning(tmp_path):
    d = tmp_path / "secrets"
    s = one(tmp_path, persistent=False)
    run([s], d)
    run([s], d, rotate=["s"])
    old = (d / "s").read_bytes()
    (d / "s").unlink()
    p = run([s], d)
    assert p.items[0].action == "generated" and (d / "s").read_bytes() != old
    assert any("history" in w for w in p.warnings)


def test_restore_rolls_back_to_the_previous_value(tmp_path):
    d = tmp_path / "secrets"
    s = one(tmp_path)
    run([s], d)
    first = (d / "s").read_bytes()
    run([s], d, rotate=["s"])
    p = run([s], d, restore=["s"])
    assert p.items[0].action == "rolled-back" and (d / "s").read_bytes() == first


def test_seed_from_controller_store_fills_missing_and_never_overwrites(tmp_path):
    d = tmp_path / "secrets"
    specs = core.build_specs(None, {"a": {"file": "a"}, "b": {"file": "b"}}, str(d))
    d.mkdir()
    (d / "b").write_bytes(b"host-value-long-enough")
    p = run(specs, d, seed={"a": "from-store-value-long", "b": "different-store-value"})
    assert (d / "a").read_bytes() == b"from-store-value-long" and p.items[0].action == "restored"
    assert (d / "b").read_bytes() == b"host-value-long-enough"
    assert any("differs from the controller store" in w for w in p.warnings)
    assert "different-store-value" not in repr(p.results()) + repr(p.warnings)


def test_value_restored_from_the_store_on_a_rebuilt_host_is_recorded_once(tmp_path):
    # A rebuilt host (empty secrets dir) takes a persistent secret from the controller store; the next run
    # must change nothing (before, it recorded the value in the history then: changed on every second run).
    d = tmp_path / "secrets"
    s = one(tmp_path, persistent=True, consumers=["db"])
    p = run([s], d, seed={"s": "value-from-the-controller-store"})
    assert p.items[0].action == "restored" and (d / "s").read_bytes() == b"value-from-the-controller-store"
    again = run([s], d, seed={"s": "value-from-the-controller-store"})
    assert not again.changed and again.items[0].action == "ok"


# --------------------------------------------------------------------------------------------
# provided secrets
# --------------------------------------------------------------------------------------------

def test_missing_provided_secrets_fail_first_listing_each_and_writing_nothing(proj):
    reg = {**REGISTRY, "smtp_password": {"kind": "provided", "hint": "SMTP relay app password"},
           "legacy_key": {"kind": "provided"}}
    specs = core.build_specs(fixture_project(proj), reg, str(proj / "secrets"))
    before = snapshot(proj)
    with pytest.raises(HyHomeError) as e:
        core.plan(specs, str(proj / "secrets"), fixture_project(proj))
    assert "2 provided secret(s) missing" in e.value.msg
    assert str(proj / "secrets/common/smtp_password") in e.value.msg
    assert str(proj / "secrets/gateway/legacy_key") in e.value.msg
    assert "SMTP relay app password" in e.value.msg and "read by gateway" in e.value.msg
    assert snapshot(proj) == before


def test_optional_provided_gets_a_placeholder_and_a_warning_each_run(tmp_path):
    d = tmp_path / "secrets"
    s = one(tmp_path, kind="provided", optional=True)
    p = run([s], d)
    assert p.items[0].action == "placeholder-written" and core.is_placeholder((d / "s").read_bytes())
    again = run([s], d)
    assert not again.changed and again.warnings
    (d / "s").chmod(0o600)
    (d / "s").write_bytes(b"the-real-one")
    assert not run([s], d).warnings and (d / "s").read_bytes() == b"the-real-one"


def test_provided_value_present_is_used(tmp_path):
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "s").write_bytes(b"given")
    p = run([one(tmp_path, kind="provided")], d)
    assert p.items[0].action == "ok" and not p.warnings


# --------------------------------------------------------------------------------------------
# bad input: clear error, nothing written
# --------------------------------------------------------------------------------------------

BAD_REGISTRY = [
    ({"s": {"kind": "nope", "file": "s"}}, "unknown kind 'nope'"),
    ({"s": {"length": 8, "file": "s"}}, "below the floor of 16"),
    ({"s": {"kind": "hex", "length": 16, "file": "s"}}, "below the floor of 32"),
    ({"s": {"kind": "token", "length": 8, "file": "s"}}, "below the floor of 16 random bytes"),
    ({"s": {"length": 20, "charset": "ab", "file": "s"}}, "bits of entropy"),
    ({"s": {"charset": "", "file": "s"}}, "charset is empty"),
    ({"s": {"charset": [], "file": "s"}}, "charset is empty"),
    ({"s": {"kind": "rsa", "size": 1024, "file": "s"}}, "below the floor of 2048"),
    ({"s": {"file": "../outside"}}, "outside"),
    ({"s": {"file": "/etc/passwd"}}, "outside"),
    ({"s": {"file": ".history/x"}}, "history"),
    ({"s": {"kind": "htpasswd", "source": "missing", "file": "s"}}, "source secret 'missing' is not declared"),
    ({"s": {"kind": "htpasswd", "file": "s"}}, "needs 'source'"),
    ({"s": {"kind": "htpasswd", "source": "s2", "scheme": "md5", "file": "s"}, "s2": {"file": "s2"}},
     "unknown htpasswd scheme"),
    ({"s": {"kind": "htpasswd", "source": "s2", "rounds": 4, "file": "s"}, "s2": {"file": "s2"}},
     "below the floor of 10"),
    ({"s": {"mode": "0644", "file": "s"}}, "every user"),
    ({"s": {"mode": "0600", "file": "s"}}, "writable"),
    ({"s": {"mode": "rw", "file": "s"}}, "not an octal file mode"),
    ({"s": {"lenght": 40, "file": "s"}}, "unknown key(s) lenght"),
    ({"s": {"optional": True, "file": "s"}}, "optional applies to kind provided only"),
    ({"s": "password"}, "must be a mapping"),
    ({"a": {"file": "x"}, "b": {"file": "x"}}, "both use the file"),
]


@pytest.mark.parametrize(("registry", "message"), BAD_REGISTRY)
def test_bad_registry_is_refused(tmp_path, registry, message):
    before = snapshot(tmp_path)
    with pytest.raises(HyHomeError) as e:
        specs = core.build_specs(None, registry, str(tmp_path / "secrets"))
        core.plan(specs, str(tmp_path / "secrets"))
    assert message in e.value.msg
    assert snapshot(tmp_path) == before


def test_compose_secret_outside_the_secrets_tree_is_refused(proj):
    project = fixture_project(proj)
    project.secrets["app_password"] = ComposeSecret("app_password", str(proj / "secrets/../app_password"))
    with pytest.raises(HyHomeError, match="outside"):
        core.build_specs(project, {}, str(proj / "secrets"))


def test_symlinked_secret_file_pointing_elsewhere_is_refused(tmp_path):
    d = tmp_path / "secrets"
    d.mkdir()
    target = tmp_path / "elsewhere"
    target.write_bytes(b"not yours")
    (d / "s").symlink_to(target)
    before = snapshot(tmp_path)
    with pytest.raises(HyHomeError, match="symlink"):
        core.plan(core.build_specs(None, {"s": {"file": "s"}}, str(d)), str(d))
    assert snapshot(tmp_path) == before and target.read_bytes() == b"not yours"


def test_symlinked_directory_escaping_the_tree_is_refused(tmp_path):
    d = tmp_path / "secrets"
    d.mkdir()
    (tmp_path / "other").mkdir()
    (d / "sub").symlink_to(tmp_path / "other")
    with pytest.raises(HyHomeError, match="symlink"):
        core.build_specs(None, {"s": {"file": "sub/s"}}, str(d))


def test_unknown_owner_is_refused_before_writing(tmp_path):
    before = snapshot(tmp_path)
    with pytest.raises(HyHomeError, match="unknown owner 'no-such-user-hyhome'"):
        core.plan([one(tmp_path, owner="no-such-user-hyhome")], str(tmp_path / "secrets"))
    with pytest.raises(HyHomeError, match="unknown group"):
        core.plan([one(tmp_path, group="no-such-group-hyhome")], str(tmp_path / "secrets"))
    assert snapshot(tmp_path) == before


def test_user_name_the_image_does_not_know_is_refused(proj):
    project = fixture_project(proj)
    project.services["db"].user = "postgres"
    images = FakeImages({"hyhome/secrets-image-user:local": ("", "root:x:0:0::/root:/bin/sh\n", "")})
    before = snapshot(proj)
    with pytest.raises(HyHomeError, match=r"user 'postgres' is not in /etc/passwd of image hyhome/secrets-image-user"):
        core.plan(fixture_specs(proj), str(proj / "secrets"), project, identities=IdentityResolver(images=images))
    assert snapshot(proj) == before


def test_derived_secret_whose_source_has_no_value_is_refused(tmp_path):
    reg = {"src": {"kind": "provided", "optional": True, "file": "src"},
           "ht": {"kind": "htpasswd", "source": "src", "file": "ht"}}
    before = snapshot(tmp_path)
    with pytest.raises(HyHomeError, match="source src has no value"):
        core.plan(core.build_specs(None, reg, str(tmp_path / "secrets")), str(tmp_path / "secrets"))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("kw", "message"), [
    ({"rotate": ["nope"]}, "not a managed secret"),
    ({"restore": ["nope"]}, "not a managed secret"),
    ({"rotate": ["smtp_password"]}, "provided secret"),
    ({"rotate": ["gateway_htpasswd"]}, "rotate gateway_admin_password instead"),
    ({"rotate": ["app_password"], "restore": ["app_password"]}, "cannot rotate and restore"),
    ({"restore": ["app_password"]}, "no earlier value"),
])
def test_bad_rotation_requests(proj, kw, message):
    project = fixture_project(proj)
    if "no earlier value" in message:
        run(fixture_specs(proj), proj / "secrets", project)
    before = snapshot(proj)
    with pytest.raises(HyHomeError, match=message):
        core.plan(fixture_specs(proj), str(proj / "secrets"), project, **kw)
    assert snapshot(proj) == before


def test_dangerous_secrets_dir_is_refused():
    with pytest.raises(HyHomeError, match="system"):
        core.plan([], "/etc")


def test_non_empty_directory_at_a_secret_path_is_refused(tmp_path):
    d = tmp_path / "secrets" / "s"
    d.mkdir(parents=True)
    (d / "x").write_text("x")
    with pytest.raises(HyHomeError, match="non-empty directory"):
        core.plan([one(tmp_path)], str(tmp_path / "secrets"))


def test_unknown_consumer_override_is_refused(proj):
    reg = {**REGISTRY, "db_password": {"consumers": ["nosuchservice"]}}
    with pytest.raises(HyHomeError, match="nosuchservice"):
        core.plan(core.build_specs(fixture_project(proj), reg, str(proj / "secrets")), str(proj / "secrets"),
                  fixture_project(proj))


def test_unused_registry_entries_are_reported(proj):
    reg = {**REGISTRY, "typo_secret": {"kind": "hex"}}
    specs = core.build_specs(fixture_project(proj), reg, str(proj / "secrets"))
    assert core.unused_registry_entries(specs, reg) == ["typo_secret"]


def test_deleted_htpasswd_comes_back_identical_from_history_or_seed(tmp_path):
    d = tmp_path / "secrets"
    specs = htpasswd_specs(tmp_path, scheme="apr1")
    run(specs, d)
    line = (d / "ht").read_bytes()
    (d / "ht").unlink()
    p = run(specs, d)
    assert [i.action for i in p.items if i.spec.name == "ht"] == ["restored"]
    assert (d / "ht").read_bytes() == line
    shutil.rmtree(d)
    p = run(specs, d, seed={"pw": "source-password-long", "ht": core.htpasswd_update(
        None, "admin", "source-password-long", "apr1", None).decode()})
    assert [i.action for i in p.items] == ["restored", "restored"]


def test_files_owned_by_another_job_are_excluded(proj):
    project = fixture_project(proj)
    project.secrets["tls_key"] = ComposeSecret("tls_key", str(proj / "secrets/certs/key.pem"))
    specs = core.build_specs(project, REGISTRY, str(proj / "secrets"), exclude=["certs/*"])
    assert "tls_key" not in {s.name for s in specs}
    assert core.excluded_secrets(project, str(proj / "secrets"), ["certs/*"]) == ["tls_key"]
    run(specs, proj / "secrets", project)
    assert not (proj / "secrets/certs/key.pem").exists()


class FakeModule:
    """Just what secret_files.run() uses of AnsibleModule. Its parameters are the defaults of the
    module's own argument spec (so every test sees the options the module really has), then ``params``."""

    def __init__(self, check_mode=False, diff=True, **params):
        from ansible_collections.hyhome.bootstrap.plugins.modules import secret_files

        self.params = {name: copy.deepcopy(option.get("default"))
                       for name, option in secret_files.argument_spec().items()}
        self.params.update({"profiles": ["*"], **params})
        self.check_mode = check_mode
        self._diff = diff
        self.warnings = []

    def warn(self, msg):
        self.warnings.append(msg)


def test_module_adapter_check_mode_then_real_then_idempotent(tmp_path):
    from ansible_collections.hyhome.bootstrap.plugins.modules import secret_files

    d = tmp_path / "secrets"
    reg = {"a": {"file": "a"}, "k": {"kind": "ed25519", "file": "k"}}
    (tmp_path / "reg.yml").write_text("secrets:\n  b: {kind: uuid, file: b}\n  a: {length: 20}\n")
    params = {"secrets_dir": str(d), "registry": reg, "registry_file": str(tmp_path / "reg.yml")}
    check = secret_files.run(FakeModule(check_mode=True, **params))
    assert check["changed"] and not d.exists()
    assert check["changed_secrets"] == ["a", "b", "k"] and "a: generated" in check["diff"]["after"]
    real = secret_files.run(FakeModule(**params))
    assert real["changed"] and len((d / "a").read_bytes()) == 20      # file entry merged, registry wins
    assert set(real["store_paths"]) == {"a", "b", "k"}
    values = [(d / n).read_text() for n in ("a", "b", "k")]
    assert not any(v.strip() in repr(real) for v in values)
    again = secret_files.run(FakeModule(**params))
    assert not again["changed"] and again["changed_secrets"] == []
    with pytest.raises(HyHomeError, match="give project_dir"):
        secret_files.run(FakeModule())
