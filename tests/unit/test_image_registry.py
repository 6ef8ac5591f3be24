"""image_registry: which images a project publishes, and tag/push/pin-by-digest against a fake engine."""

from __future__ import annotations

import hashlib

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import image_registry as reg
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import Project, Service
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError


def project(**services) -> Project:
    p = Project(name="hyhome", working_dir="/srv/stack", files=["/srv/stack/compose.yaml"])
    for name, (image, build) in services.items():
        p.services[name] = Service(name=name, image=image, build={"context": "."} if build else None, user=None)
    return p


STACK = project(api=("hyhome/api:local", True), web=("hyhome/web:local", True),
                postgres=("hyhome/postgres:local", True), exporter=("hyhome/observability:local", False))


class FakeImages(reg.Images):
    """Local images by reference, a registry by reference; a push's digest derives from the image id,
    as a registry's does from the content."""

    def __init__(self, local=None, remote=None, build_gives=None):
        self.local = {ref: {"id": iid, "repo_digests": []} for ref, iid in (local or {}).items()}
        self.remote = dict(remote or {})
        self.build_gives = build_gives or {}
        self.calls = []

    def image(self, ref):
        img = self.local.get(ref)
        return None if img is None else {"id": img["id"], "repo_digests": list(img["repo_digests"])}

    def remote_digest(self, reference):
        return self.remote.get(reference)

    def tag(self, source, repository, tag):
        self.calls.append(("tag", source, f"{repository}:{tag}"))
        self.local[f"{repository}:{tag}"] = self.local[source]

    def push(self, repository, tag):
        self.calls.append(("push", f"{repository}:{tag}"))
        img = self.local[f"{repository}:{tag}"]
        digest = "sha256:" + hashlib.sha256(img["id"].encode()).hexdigest()
        self.remote[f"{repository}:{tag}"] = digest
        entry = f"{repository}@{digest}"
        if entry not in img["repo_digests"]:
            img["repo_digests"].append(entry)
        return digest

    def build(self, services):
        self.calls.append(("build", tuple(services)))
        for name in services:
            ref = STACK.services[name].image
            self.local[ref] = {"id": self.build_gives.get(name, "sha256:built-" + name), "repo_digests": []}


# --- plan -------------------------------------------------------------------------------------------


def test_plan_defaults_to_every_built_service_and_its_own_tag():
    targets = reg.plan(STACK, [], "127.0.0.1:5000")
    assert [(t.service, t.source, t.reference) for t in targets] == [
        ("api", "hyhome/api:local", "127.0.0.1:5000/hyhome/api:local"),
        ("postgres", "hyhome/postgres:local", "127.0.0.1:5000/hyhome/postgres:local"),
        ("web", "hyhome/web:local", "127.0.0.1:5000/hyhome/web:local"),
    ]


def test_plan_named_services_a_tag_and_an_image_from_another_registry():
    p = project(api=("registry.lan:5000/team/api:3", True), cache=("valkey", False))
    targets = reg.plan(p, ["api", "cache"], "localhost:5001", tag="2.1")
    assert [t.reference for t in targets] == ["localhost:5001/team/api:2.1", "localhost:5001/valkey:2.1"]
    assert reg.plan(p, ["cache"], "127.0.0.1:5000")[0].tag == "latest"


@pytest.mark.parametrize("registry", ["http://127.0.0.1:5000", "127.0.0.1:5000/v2", "", "host:0", "host:99999",
                                      "-bad", "a b", None, "127.0.0.1:5000\n"])
def test_plan_refuses_a_registry_that_is_not_host_port(registry):
    with pytest.raises(HyHomeError, match="not host"):
        reg.plan(STACK, [], registry)


@pytest.mark.parametrize("tag", ["-x", ".x", "a/b", "a:b", "x" * 129, "two words"])
def test_plan_refuses_a_bad_tag(tag):
    with pytest.raises(HyHomeError, match="not valid"):
        reg.plan(STACK, [], "127.0.0.1:5000", tag=tag)


def test_plan_refuses_unknown_services_naming_the_known_ones():
    with pytest.raises(HyHomeError, match=r"unknown service\(s\) nope: the project has api, exporter, postgres, web"):
        reg.plan(STACK, ["api", "nope"], "127.0.0.1:5000")


def test_plan_refuses_an_image_pinned_by_digest_and_a_service_without_image():
    pinned = project(api=("127.0.0.1:5000/hyhome/api@sha256:" + "a" * 64, True))
    with pytest.raises(HyHomeError, match="pinned by digest"):
        reg.plan(pinned, [], "127.0.0.1:5000")
    with pytest.raises(HyHomeError, match="has no image: name"):
        reg.plan(project(api=(None, True)), [], "127.0.0.1:5000")
    with pytest.raises(HyHomeError, match="builds no image"):
        reg.plan(project(cache=("valkey", False)), [], "127.0.0.1:5000")


def test_plan_refuses_two_images_under_one_reference():
    p = project(a=("x/app:1", True), b=("other.lan/x/app:1", True))
    with pytest.raises(HyHomeError, match="one reference"):
        reg.plan(p, [], "127.0.0.1:5000")


@pytest.mark.parametrize(("registry", "loopback"), [("127.0.0.1:5000", True), ("127.8.9.1", True),
                                                    ("localhost:5000", True), ("[::1]:5000", True),
                                                    ("registry.lan:5000", False), ("10.0.0.2:5000", False)])
def test_is_loopback(registry, loopback):
    assert reg.is_loopback(registry) is loopback


# --- publish ----------------------------------------------------------------------------------------

API = reg.plan(STACK, ["api"], "127.0.0.1:5000")


def test_first_publish_tags_pushes_and_pins_by_digest():
    images = FakeImages(local={"hyhome/api:local": "sha256:one"})
    result = reg.publish(images, API)
    entry = result["images"]["api"]
    assert entry["action"] == "pushed" and entry["before"] is None
    assert entry["pinned"] == "127.0.0.1:5000/hyhome/api@" + entry["digest"]
    assert result["pinned"] == {"api": entry["pinned"]}
    assert result["changed"] is True
    assert images.calls == [("tag", "hyhome/api:local", "127.0.0.1:5000/hyhome/api:local"),
                            ("push", "127.0.0.1:5000/hyhome/api:local")]


def test_second_publish_changes_nothing_and_keeps_the_digest():
    images = FakeImages(local={"hyhome/api:local": "sha256:one"})
    first = reg.publish(images, API)
    images.calls.clear()
    again = reg.publish(images, API)
    assert again["changed"] is False and again["images"]["api"]["action"] == "unchanged"
    assert again["pinned"] == first["pinned"]
    assert images.calls == []


def test_forced_republish_pushes_and_gets_the_same_digest():
    images = FakeImages(local={"hyhome/api:local": "sha256:one"})
    first = reg.publish(images, API)
    forced = reg.publish(images, API, force=True)
    assert forced["images"]["api"]["action"] == "pushed"
    assert forced["pinned"] == first["pinned"] and forced["changed"] is False


def test_a_new_build_is_pushed_under_the_same_tag_with_a_new_digest():
    images = FakeImages(local={"hyhome/api:local": "sha256:one"}, build_gives={"api": "sha256:two"})
    first = reg.publish(images, API)
    second = reg.publish(images, API, build="always")
    assert ("build", ("api",)) in images.calls
    assert second["changed"] is True and second["images"]["api"]["before"] == first["images"]["api"]["digest"]
    assert second["pinned"]["api"] != first["pinned"]["api"]


def test_a_registry_that_lost_the_tag_gets_it_again():
    images = FakeImages(local={"hyhome/api:local": "sha256:one"})
    first = reg.publish(images, API)
    images.remote.clear()
    again = reg.publish(images, API)
    assert again["images"]["api"]["action"] == "pushed" and again["changed"] is True
    assert again["pinned"] == first["pinned"]


def test_check_mode_touches_nothing_and_says_what_it_would_push():
    images = FakeImages(local={"hyhome/api:local": "sha256:one"})
    result = reg.publish(images, API, check_mode=True)
    assert images.calls == [] and images.remote == {}
    assert result["changed"] is True and result["images"]["api"]["action"] == "push"
    assert result["images"]["api"]["digest"] is None and result["pinned"] == {}


def test_check_mode_on_a_published_image_is_unchanged():
    images = FakeImages(local={"hyhome/api:local": "sha256:one"})
    published = reg.publish(images, API)
    images.calls.clear()
    result = reg.publish(images, API, check_mode=True)
    assert result["changed"] is False and result["pinned"] == published["pinned"] and images.calls == []


def test_missing_image_is_built_with_build_missing_and_refused_with_build_never():
    with pytest.raises(HyHomeError, match=r"hyhome/api:local of service 'api' is not on this engine"):
        reg.publish(FakeImages(), API, build="never")
    images = FakeImages()
    result = reg.publish(images, API)
    assert images.calls[0] == ("build", ("api",)) and result["built"] == ["api"]
    check = reg.publish(FakeImages(), API, check_mode=True)
    assert check["built"] == ["api"] and check["images"]["api"]["action"] == "push"


def test_a_push_whose_digest_the_registry_does_not_confirm_fails():
    class Liar(FakeImages):
        def remote_digest(self, reference):
            return "sha256:" + "0" * 64 if self.calls else None

    with pytest.raises(HyHomeError, match="the registry says"):
        reg.publish(Liar(local={"hyhome/api:local": "sha256:one"}), API)


def test_a_push_without_digest_fails_clearly():
    class NoDigest(FakeImages):
        def push(self, repository, tag):
            return None

    with pytest.raises(HyHomeError, match="gave no manifest digest"):
        reg.publish(NoDigest(local={"hyhome/api:local": "sha256:one"}), API)


def test_bad_build_choice_is_refused():
    with pytest.raises(HyHomeError, match="build must be one of"):
        reg.publish(FakeImages(), API, build="sometimes")


def test_diff_shows_references_and_digests_only():
    images = FakeImages(local={"hyhome/api:local": "sha256:one"})
    d = reg.diff(reg.publish(images, API))
    assert d["before"] == "127.0.0.1:5000/hyhome/api:local (absent)\n"
    assert d["after"].startswith("127.0.0.1:5000/hyhome/api:local sha256:")


def test_recorded_digest_reads_only_this_repository():
    img = {"repo_digests": ["other/api@sha256:" + "1" * 64, "127.0.0.1:5000/hyhome/api@sha256:" + "2" * 64,
                            "127.0.0.1:5000/hyhome/api@md5:x"]}
    assert reg.recorded_digest(img, "127.0.0.1:5000/hyhome/api") == "sha256:" + "2" * 64
    assert reg.recorded_digest(None, "x") is None
