"""Tests for plugins/module_utils/identity.py: which uid:gid a service runs as."""

from __future__ import annotations

import subprocess

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import identity as ident_mod
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import Service
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.identity import (
    DEFAULT_IMAGE_USERS,
    DockerImages,
    Identity,
    IdentityResolver,
    ImageMissing,
    LocalImages,
    image_repository,
    image_tag,
    override_identity,
    parse_group,
    parse_passwd,
    table_lookup,
)

BUSYBOX = "hyhome/busybox:local"


class FakeImages:
    """Stands in for DockerImages: records lookups, serves canned Config.User and /etc/passwd."""

    def __init__(self, images=None):
        self.images = images or {}
        self.calls = []

    def config_user(self, image):
        self.calls.append(("config_user", image))
        if image not in self.images:
            raise ImageMissing(image)
        return self.images[image].get("user")

    def accounts(self, image):
        self.calls.append(("accounts", image))
        if image not in self.images:
            raise ImageMissing(image)
        img = self.images[image]
        return parse_passwd(img.get("passwd", "")), parse_group(img.get("group", ""))


BUSYBOX_FAKE = {BUSYBOX: {"user": None, "passwd": "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
                          "group": "root:x:0:\napp:x:1000:\nstaff:x:50:\n"}}


def svc(name="s", image=BUSYBOX, user=None, group_add=None):
    return Service(name, image, None, user, group_add=list(group_add or []))


def resolver(images=None, **kwargs):
    return IdentityResolver(images=FakeImages(images if images is not None else BUSYBOX_FAKE), **kwargs)


# ---------------------------------------------------------------------------------------------
# Image references and the built-in table


@pytest.mark.parametrize("image,repo,tag", [
    ("postgres", "postgres", "latest"),
    ("postgres:16-alpine", "postgres", "16-alpine"),
    ("library/postgres:16", "postgres", "16"),
    ("docker.io/library/postgres@sha256:" + "a" * 64, "postgres", "latest"),
    ("docker.io/library/postgres:16.3@sha256:" + "a" * 64, "postgres", "16.3"),
    ("registry.local:5000/grafana/loki:3.0", "grafana/loki", "3.0"),
    ("registry.local:5000/grafana/loki", "grafana/loki", "latest"),
    ("localhost/app:1", "app", "1"),
    ("quay.io/keycloak/keycloak:25.0", "keycloak/keycloak", "25.0"),
])
def test_image_repository_and_tag(image, repo, tag):
    assert (image_repository(image), image_tag(image)) == (repo, tag)


@pytest.mark.parametrize("image,expected", [
    ("postgres:16", "999:999"),
    ("docker.io/library/postgres:16", "999:999"),
    ("mirror.example:5000/dockerhub/library/postgres:16", "999:999"),
    ("postgres:16-alpine", "70:70"),           # Alpine variant: its own ids, picked by tag
    ("postgres:16.3-alpine3.20", "70:70"),
    ("grafana/grafana:11.0.0", "472:0"),
    ("docker.io/grafana/grafana", "472:0"),
    ("grafana/loki:3.0.0", "10001:10001"),
    ("grafana/tempo", "10001:10001"),
    ("grafana/alloy:v1.2.0", "0:0"),
    ("prom/prometheus:v2.53.0", "65534:65534"),
    ("quay.io/prometheus/node-exporter:v1.8.1", "65534:65534"),
    ("prom/blackbox-exporter:v0.25.0", "65534:65534"),
    ("quay.io/prometheuscommunity/postgres-exporter:v0.15.0", "65534:65534"),
    ("oliver006/redis_exporter:v1.61.0", "59000:59000"),
    ("danielqsj/kafka-exporter:v1.7.0", "65534:65534"),
    ("opensearchproject/opensearch:2", "1000:1000"),
    ("quay.io/keycloak/keycloak:25.0", "1000:0"),
    ("ghcr.io/zalando/spilo-16:3.2-p3", "101:103"),   # glob over the versioned repository name
    ("ghcr.io/zalando/spilo-17:4.0-p2", "101:103"),
    ("quay.io/coreos/etcd:v3.5.14", "0:0"),
    ("apache/kafka:3.7.0", "1000:1000"),
    ("gcr.io/cadvisor/cadvisor:v0.49.1", "0:0"),
    ("traefik:v3.0", "0:0"),
    ("redis:7-alpine", "999:1000"),             # Alpine has a gid 999 already: the image uses 1000
    ("redis:7.2", "999:999"),
    ("valkey/valkey:8", "999:999"),
    ("quay.io/minio/minio:RELEASE.2024-06-13T22-53-53Z", "0:0"),
    ("haproxy:2.9-alpine", "99:99"),
    ("gitea/gitea:1.22-rootless", "1000:1000"),
    ("gitea/gitea:1.22", None),                 # the root variant: its entrypoint decides
    ("n8nio/n8n:1.55.3", "1000:1000"),
    ("curlimages/curl:8.9.1", "100:101"),
    ("bitnami/postgresql:16", None),     # bitnami runs as 1001: its Config.User says so, not the table
    ("someone/postgres", None),          # a single name matches only the official image
    ("someone/spilo-16", None),          # a glob still needs its namespace
    ("hyhome/busybox:local", None),
    ("", None),
])
def test_table_lookup(image, expected):
    hit = table_lookup(image, DEFAULT_IMAGE_USERS)
    assert (hit[1] if hit else None) == expected


def test_table_values_are_all_numeric():
    for key, value in DEFAULT_IMAGE_USERS.items():
        uid, gid = ident_mod.owner_spec(value, key)
        assert uid >= 0 and gid is not None


def test_table_tag_variant_wins_over_plain_key_whatever_the_order():
    table = {"app": "1:1", "app:*-slim": "2:2"}
    assert table_lookup("app:1-slim", table) == ("app:*-slim", "2:2")
    assert table_lookup("app:1", table) == ("app", "1:1")


def test_parse_passwd_and_group_ignore_bad_lines():
    assert parse_passwd("root:x:0:0::/:/bin/sh\n# comment\nbad:x:y:0\napp:x:1000:100::/:\n\n") == {
        "root": (0, 0), "app": (1000, 100)}
    assert parse_group("root:x:0:\nwheel:x:10:app\nbroken\n") == {"root": 0, "wheel": 10}
    assert parse_passwd("") == {} and parse_group("\x00\n:::\n") == {}


# ---------------------------------------------------------------------------------------------
# Resolution order


def test_order_service_override_beats_user_table_and_image():
    r = resolver(overrides={"s": {"owner": 4242, "group": 4343}})
    ident = r.service(svc(image="postgres:16", user="1000"))
    assert (ident.uid, ident.gid, ident.source) == (4242, 4343, "override")
    assert r.images.calls == []


def test_override_forms_and_path_keys_ignored():
    r = resolver(overrides={"a": "1500:1600", "b": 1700, "c": {"owner": "root"}, "d": {"group": 5},
                            "data/pg": {"owner": 1}})
    assert r.service(svc("a")).text == "1500:1600"
    assert r.service(svc("b")).text == "1700:1700"
    assert (r.service(svc("c")).uid, r.service(svc("c")).source) == (0, "override")
    assert r.service(svc("d")).source == "image-config"    # a group alone does not choose the owner
    assert "data/pg" not in r.overrides


@pytest.mark.parametrize("value,match", [
    ("app:x", "must be numeric"),
    ([1, 2], "must be a mapping"),
    ({"owner": True}, "names or numbers"),
    ({"owner": "no-such-user-hyhome"}, "unknown owner"),
    ({"owner": 1, "group": "no-such-group-hyhome"}, "unknown group"),
    ({"owner": -3}, "must not be negative"),
])
def test_bad_overrides_are_clear_errors(value, match):
    with pytest.raises(HyHomeError, match=match):
        override_identity(value, "override for service s")


def test_order_numeric_user_beats_table_without_any_lookup():
    r = resolver()
    assert (r.service(svc(image="postgres:16", user="1234")).uid, r.images.calls) == (1234, [])
    ident = r.service(svc("t", image="postgres:16", user="1234:55"))
    assert (ident.uid, ident.gid, ident.source) == (1234, 55, "user")


def test_order_named_user_resolved_in_the_image_passwd():
    r = resolver()
    ident = r.service(svc(user="app"))
    assert (ident.uid, ident.gid, ident.source) == (1000, 1000, "user")
    ident = r.service(svc("t", user="app:staff"))
    assert (ident.uid, ident.gid) == (1000, 50)
    ident = r.service(svc("u", user="1000"))    # numeric, no group: gid = uid
    assert (ident.uid, ident.gid) == (1000, 1000)
    ident = r.service(svc("v", user="1000:staff"))
    assert (ident.uid, ident.gid) == (1000, 50)


def test_configured_user_beats_the_table_when_the_image_is_present():
    # A rebuilt grafana that runs as 1001: the image says so, the table is only a fallback.
    r = resolver({"grafana/grafana:custom": {"user": "1001"}})
    ident = r.service(svc(image="grafana/grafana:custom"))
    assert (ident.uid, ident.gid, ident.source) == (1001, 1001, "image-config")


def test_empty_or_root_configured_user_falls_to_the_table():
    # postgres starts as root (no USER) and drops to 999 in its entrypoint: only the table knows.
    r = resolver({"postgres:16": {"user": None}, "grafana/grafana:11": {"user": "root"},
                  "postgres:17": {"user": "0:0"}})
    for name, image, want in (("a", "postgres:16", (999, 999)), ("b", "grafana/grafana:11", (472, 0)),
                              ("c", "postgres:17", (999, 999))):
        ident = r.service(svc(name, image=image))
        assert ((ident.uid, ident.gid), ident.source) == (want, "image-table")
    assert r.warnings == []


def test_table_answers_without_the_image_and_without_a_warning():
    r = resolver({})
    ident = r.service(svc(image="quay.io/keycloak/keycloak:25.0"))
    assert (ident.uid, ident.gid, ident.source) == (1000, 0, "image-table")
    assert r.warnings == []


def test_table_is_overridable_from_inventory():
    r = resolver(image_users={"postgres": "70:70", "hyhome/busybox": "3000"})
    assert (r.service(svc("a", image="postgres:16")).uid, r.service(svc("b")).uid) == (70, 3000)
    assert r.service(svc("b")).gid == 3000


def test_image_config_user_then_root():
    images = {"img:named": {"user": "app", "passwd": "app:x:1500:1600::/:\n"},
              "img:numeric": {"user": "1001:0"}, "img:none": {"user": None}}
    r = resolver(images)
    a, b, c = (r.service(svc(n, image=f"img:{n}")) for n in ("named", "numeric", "none"))
    assert (a.uid, a.gid, a.source) == (1500, 1600, "image-config")
    assert (b.uid, b.gid, b.source) == (1001, 0, "image-config")
    # Present, no USER, not in the table: it runs as root, and that is an answer, not a guess.
    assert (c.uid, c.gid, c.source) == (0, 0, "image-config")
    assert r.warnings == []


def test_configured_user_name_that_cannot_be_looked_up_is_not_called_root():
    """Config.User names a user, but the image's /etc/passwd cannot be read (an inspect-only
    lookup): the resolver does not know the uid, and says so, instead of answering root."""

    class InspectOnly(FakeImages):
        def accounts(self, image):
            raise ImageMissing(image)

    r = IdentityResolver(images=InspectOnly({"img:named": {"user": "app"}, "grafana/grafana:11": {"user": "grafana"}}))
    ident = r.service(svc("a", image="img:named"))
    assert (ident.uid, ident.source) == (0, "unresolved")
    assert "runs as user 'app', whose uid was not looked up" in ident.detail
    assert r.service(svc("g", image="grafana/grafana:11")).text == "472:0"    # the table still answers


def test_nothing_resolves_root_with_a_warning_naming_the_fix():
    r = resolver({})
    ident = r.service(svc("builder", image=None))
    assert (ident.uid, ident.gid, ident.source) == (0, 0, "unresolved")
    ident = r.service(svc("app", image="myorg/app:1"))
    assert ident.source == "unresolved"
    assert len(r.warnings) == 2
    for w in r.warnings:
        assert "nothing says which user it runs as" in w and "override" in w and "image_users" in w


def test_unknown_user_or_group_name_is_an_error():
    r = resolver()
    with pytest.raises(HyHomeError, match="'ghost' is not in /etc/passwd of image"):
        r.service(svc(user="ghost"))
    with pytest.raises(HyHomeError, match="group 'nogroup' is not in /etc/group"):
        r.service(svc("t", user="app:nogroup"))
    with pytest.raises(HyHomeError, match="has no image"):
        r.service(svc("u", image=None, user="app"))
    with pytest.raises(HyHomeError, match="no user part"):
        r.service(svc("v", user=":50"))


def test_missing_image_warns_once_and_falls_through_or_fails():
    r = resolver({})
    ident = r.service(svc(image="notpulled:1", user="app"))
    assert ident.source == "unresolved"
    assert len(r.warnings) == 1 and "notpulled:1 is not on this engine" in r.warnings[0]
    # A named user on an image that is not pulled yet: the table still answers.
    ident = r.service(svc("pg", image="postgres:16", user="postgres"))
    assert (ident.uid, ident.source) == (999, "image-table")
    with pytest.raises(HyHomeError, match="notpulled:1 is not on this engine"):
        resolver({}, missing_image="fail").service(svc(image="notpulled:1", user="app"))
    with pytest.raises(HyHomeError, match="notpulled:1 is not on this engine"):
        resolver({}, missing_image="fail").service(svc(image="notpulled:1"))


def test_group_add_numeric_entries_and_cache():
    r = resolver(overrides={"o": "10:10"})
    a = r.service(svc("a", user="1000", group_add=["5000", "video", " 44 ", "5000"]))
    assert a.groups == (44, 5000)
    assert r.service(svc("o", group_add=["7"])).groups == (7,)
    assert r.service(svc("a", user="2000")) is a         # cached per service name


@pytest.mark.parametrize("kwargs,match", [
    ({"missing_image": "maybe"}, "missing_image"),
    ({"overrides": ["x"]}, "overrides"),
    ({"image_users": "postgres=1"}, "image_users"),
])
def test_bad_resolver_arguments(kwargs, match):
    with pytest.raises(HyHomeError, match=match):
        IdentityResolver(**kwargs)


def test_bad_table_values_are_errors():
    with pytest.raises(HyHomeError, match="must be numeric"):
        resolver({}, image_users={"hyhome/busybox": "app"}).service(svc())


def test_identity_text():
    assert Identity(1, 2, "user").text == "1:2"


# ---------------------------------------------------------------------------------------------
# Image passwd lookup through Docker (no container is ever started)


def probe_containers():
    out = subprocess.run(["docker", "ps", "-aq", "--filter", "label=org.hyhome.probe=data_dirs"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


@pytest.mark.docker
def test_image_passwd_lookup_with_the_sdk_is_cached_and_leaves_nothing():
    images = DockerImages()
    passwd, _ = images.accounts(BUSYBOX)
    assert passwd["app"] == (1000, 1000) and passwd["nobody"] == (65534, 65534)
    r = IdentityResolver(images=images)
    assert (r.service(svc("a", user="app")).uid, r.service(svc("b", user="nobody")).uid) == (1000, 65534)
    assert images.lookups == 1           # one probe container per image per call
    assert images.config_user(BUSYBOX) is None
    assert r.service(svc("c")).source == "image-config"    # present, no USER: root
    assert probe_containers() == []


@pytest.mark.docker
def test_image_passwd_lookup_with_the_cli_fallback():
    images = DockerImages()
    images._client = False               # what happens on a host without the docker SDK
    assert images.accounts(BUSYBOX)[0]["app"] == (1000, 1000)
    assert images.config_user(BUSYBOX) is None
    with pytest.raises(ImageMissing):
        images.config_user("hyhome/does-not-exist:never")
    assert probe_containers() == []


@pytest.mark.docker
def test_missing_image_with_the_sdk():
    with pytest.raises(ImageMissing):
        DockerImages().accounts("hyhome/does-not-exist:never")


# ---------------------------------------------------------------------------------------------
# Config.User of present images, one inspect, never a container (validate)


def fake_inspect(tmp_path, stdout: str, rc: int = 1) -> str:
    """A docker CLI that logs its argv and prints canned ``image inspect`` output."""
    script = tmp_path / "docker"
    (tmp_path / "out").write_text(stdout, encoding="utf-8")
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/calls\ncat {tmp_path}/out\nexit {rc}\n",
                      encoding="utf-8")
    script.chmod(0o755)
    return str(script)


def test_local_images_one_inspect_matches_tags_and_digests(tmp_path):
    digest = "sha256:" + "b" * 64
    out = ('["grafana/grafana:11.2.0"]\t[]\t"472"\n'
           '["postgres:16"]\t[]\t""\n'
           f'[]\t["quay.io/prometheus/prometheus@{digest}"]\t"nobody"\n'
           'not json at all\n')
    docker = fake_inspect(tmp_path, out)
    refs = ["docker.io/grafana/grafana:11.2.0", "docker.io/library/postgres:16",
            f"quay.io/prometheus/prometheus:v2.54.1@{digest}", "example/absent:1", "docker.io/grafana/grafana:11.2.0"]
    images = LocalImages(refs, docker_cli=docker)
    assert images.config_user("grafana/grafana:11.2.0") == "472"
    assert images.config_user("postgres:16") is None                       # present, no USER
    assert images.config_user(f"quay.io/prometheus/prometheus@{digest}") == "nobody"
    with pytest.raises(ImageMissing):
        images.config_user("example/absent:1")
    with pytest.raises(ImageMissing):
        images.accounts("grafana/grafana:11.2.0")                          # never a container
    (call,) = (tmp_path / "calls").read_text().splitlines()
    assert call.startswith("image inspect --format ") and call.endswith(
        f"docker.io/grafana/grafana:11.2.0 docker.io/library/postgres:16 example/absent:1 "
        f"quay.io/prometheus/prometheus:v2.54.1@{digest}")
    assert images.calls == 1


def test_local_images_without_refs_cli_or_engine_count_every_image_absent(tmp_path):
    for images in (LocalImages(), LocalImages(["a:1"], docker_cli=None),
                   LocalImages(["a:1"], docker_cli=str(tmp_path / "no-such-docker")),
                   LocalImages(["a:1"], docker_cli=fake_inspect(tmp_path, "", rc=1))):
        with pytest.raises(ImageMissing):
            images.config_user("a:1")
    assert LocalImages().calls == 0


@pytest.mark.docker
def test_local_images_on_the_engine():
    images = LocalImages([BUSYBOX, "hyhome/does-not-exist:never"])
    assert images.config_user(BUSYBOX) is None
    with pytest.raises(ImageMissing):
        images.config_user("hyhome/does-not-exist:never")
    r = IdentityResolver(images=images)
    assert r.service(svc("c")).source == "image-config"     # present, no USER: root
    assert images.calls == 1 and probe_containers() == []
