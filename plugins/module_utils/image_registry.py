"""Publish the images a Compose project builds to a registry, and pin each one by digest.

For every service with a ``build:`` section (or the ones asked for): its local image
(``hyhome/api:local``) is tagged ``<registry>/<repository>:<tag>`` (``127.0.0.1:5000/hyhome/api:local``)
and pushed, and the manifest digest the registry answers becomes the pinned reference
``<registry>/<repository>@sha256:...`` that a rollout deploys (``playbooks/rollout.yml -e image=...``).

Idempotent: nothing is pushed when the registry's tag already points at the digest Docker recorded
for this very image (its RepoDigests) and the registry tag is on the same image id. Pushing the same
image again gives the same digest (the layers are not recompressed: Docker reuses the blobs it
already pushed), so a forced re-push reports the digest unchanged.

Pure core: the engine is behind :class:`Images` (a fake in the unit tests); image references are
parsed by ``rollout.parse_image_ref``, the one parser of the collection.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.rollout import check_tag, parse_image_ref

DEFAULT_REGISTRY = "127.0.0.1:5000"
# host[:port]: a DNS name or an IPv4 address, or a bracketed IPv6 address; nothing else (no scheme, no path).
_REGISTRY_RE = re.compile(r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
                          r"(?::(?P<port>[0-9]{1,5}))?")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
BUILD_CHOICES = ("never", "missing", "always")


@dataclass(frozen=True)
class Target:
    """One image to publish."""

    service: str
    source: str         # the local image the project runs: hyhome/api:local
    repository: str     # in the registry: 127.0.0.1:5000/hyhome/api
    tag: str

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


def check_registry(value) -> str:
    """``host[:port]`` of a registry, or HyHomeError."""
    m = _REGISTRY_RE.fullmatch(value) if isinstance(value, str) else None
    if not m or (m.group("port") and not 0 < int(m.group("port")) < 65536):
        shown = value[:200] if isinstance(value, str) else type(value).__name__
        raise HyHomeError(f"registry {shown!r} is not host[:port] (for example {DEFAULT_REGISTRY}); "
                          "no scheme, no path")
    return value


def is_loopback(registry: str) -> bool:
    """True for a registry on this machine's loopback (Docker allows plain HTTP there by default)."""
    host = _REGISTRY_RE.fullmatch(registry).group("host").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _strip_registry(repository: str) -> str:
    """``host:5000/hyhome/api`` -> ``hyhome/api``: Docker's rule, the first component is a registry
    when it has a '.' or a ':' or is ``localhost``."""
    first, sep, rest = repository.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return rest
    return repository


def plan(project, services, registry: str, tag: str | None = None) -> list[Target]:
    """The images to publish: ``services`` (default every service with a ``build:`` section)."""
    check_registry(registry)
    if tag is not None:
        check_tag(tag)
    names = list(services or [])
    unknown = sorted(set(names) - set(project.services))
    if unknown:
        raise HyHomeError(f"unknown service(s) {', '.join(unknown)}: the project has "
                          f"{', '.join(sorted(project.services)) or 'no service'}")
    if not names:
        names = sorted(n for n, s in project.services.items() if s.build)
        if not names:
            raise HyHomeError("the project builds no image (no service has a build: section); name the services")
    targets, seen = [], {}
    for name in names:
        svc = project.services[name]
        if not svc.image:
            raise HyHomeError(f"service '{name}' has no image: name; give it one (e.g. image: hyhome/{name}:local) "
                              "so its build has a name to publish")
        ref = parse_image_ref(svc.image)
        if ref.digest:
            raise HyHomeError(f"service '{name}' runs {svc.image}, an image pinned by digest: it is already "
                              "published; roll out the tag you want to publish instead")
        target = Target(service=name, source=svc.image,
                        repository=f"{registry}/{_strip_registry(ref.repository)}", tag=tag or ref.tag or "latest")
        if seen.get(target.reference, target.source) != target.source:
            raise HyHomeError(f"services publish different images under one reference {target.reference}")
        seen[target.reference] = target.source
        targets.append(target)
    return targets


class Images:
    """The engine side, one method per question or action (the Docker SDK in :class:`DockerImages`)."""

    def image(self, ref: str) -> dict | None:  # pragma: no cover - interface
        """``{"id": ..., "repo_digests": [...]}`` of a local image, None when absent."""
        raise NotImplementedError

    def remote_digest(self, reference: str) -> str | None:  # pragma: no cover - interface
        """The manifest digest the registry has for ``repo:tag``; None when it has no such tag."""
        raise NotImplementedError

    def tag(self, source: str, repository: str, tag: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def push(self, repository: str, tag: str) -> str:  # pragma: no cover - interface
        """Push ``repository:tag``; return the manifest digest the registry answered."""
        raise NotImplementedError

    def build(self, services: list[str]) -> None:  # pragma: no cover - interface
        """``docker compose build`` of these services."""
        raise NotImplementedError


def recorded_digest(image: dict | None, repository: str) -> str | None:
    """The digest Docker recorded for this image in ``repository`` (after a push or a pull)."""
    for entry in (image or {}).get("repo_digests") or []:
        repo, _sep, digest = entry.rpartition("@")
        if repo == repository and DIGEST_RE.fullmatch(digest):
            return digest
    return None


def publish(images: Images, targets: list[Target], build: str = "missing", force: bool = False,
            check_mode: bool = False) -> dict:
    """Build (per ``build``), tag and push each target; the result the module returns.

    ``images``: per service ``{source, image_id, reference, digest, pinned, action}`` where action is
    ``pushed``, ``unchanged`` or (check mode) ``push``; ``pinned`` maps service -> ``repo@digest``
    (absent in check mode for an image not pushed yet: its digest is only known once pushed)."""
    if build not in BUILD_CHOICES:
        raise HyHomeError(f"build must be one of {', '.join(BUILD_CHOICES)}, not {build!r}")
    sources = {t.service: images.image(t.source) for t in targets}
    to_build = [t.service for t in targets if build == "always" or (build == "missing" and not sources[t.service])]
    changed = bool(to_build) and check_mode     # a build whose outcome check mode cannot know
    if to_build and not check_mode:
        before = {s: (sources[s] or {}).get("id") for s in to_build}
        images.build(to_build)
        sources = {t.service: images.image(t.source) for t in targets}
        changed = any((sources[s] or {}).get("id") != before[s] for s in to_build)
    result: dict = {"images": {}, "pinned": {}, "built": to_build, "changed": changed}
    for t in targets:
        local = sources[t.service]
        if not local and not (check_mode and t.service in to_build):
            raise HyHomeError(f"image {t.source} of service '{t.service}' is not on this engine: build it "
                              f"(build=missing, or docker compose build {t.service})")
        remote = images.remote_digest(t.reference)
        known = recorded_digest(local, t.repository)
        tagged = images.image(t.reference)
        same = bool(local and tagged and tagged["id"] == local["id"])
        up_to_date = bool(remote and remote == known and same and not (check_mode and t.service in to_build))
        entry = {"source": t.source, "image_id": (local or {}).get("id"), "reference": t.reference,
                 "before": remote}
        if up_to_date and not force:
            entry.update(action="unchanged", digest=remote)
        elif check_mode:
            entry.update(action="push", digest=None)
            result["changed"] = True
        else:
            if not same:
                images.tag(t.source, t.repository, t.tag)
            digest = images.push(t.repository, t.tag)
            if not DIGEST_RE.fullmatch(digest or ""):
                raise HyHomeError(f"pushing {t.reference} gave no manifest digest (got {str(digest)[:80]!r})")
            check = images.remote_digest(t.reference)
            if check != digest:
                raise HyHomeError(f"the registry says {t.reference} is {check}, the push said {digest}")
            entry.update(action="pushed", digest=digest)
            result["changed"] = result["changed"] or digest != remote
        if entry["digest"]:
            entry["pinned"] = f"{t.repository}@{entry['digest']}"
            result["pinned"][t.service] = entry["pinned"]
        result["images"][t.service] = entry
    return result


def diff(result: dict) -> dict:
    """Diff mode: per service, reference -> digest before and after (digests are not secrets)."""
    before = "".join(f"{e['reference']} {e['before'] or '(absent)'}\n" for e in result["images"].values())
    after = "".join(f"{e['reference']} {e['digest'] or '(new digest)'}\n" for e in result["images"].values())
    return {"before": before, "after": after, "before_header": "registry", "after_header": "registry"}


class DockerImages(Images):
    """The Docker SDK (daemon-side registry access, so the engine's TLS, auth and insecure-registry
    settings apply), and ``docker compose build`` through the project's compose engine."""

    def __init__(self, compose_engine):
        self.engine = compose_engine
        self.client = compose_engine.client
        self._errors = compose_engine._errors

    def image(self, ref):
        try:
            img = self.client.images.get(ref)
        except self._errors.ImageNotFound:
            return None
        except self._errors.APIError as exc:
            raise HyHomeError(f"cannot inspect image {ref}: {exc.explanation or exc}") from exc
        return {"id": img.id, "repo_digests": list(img.attrs.get("RepoDigests") or [])}

    def remote_digest(self, reference):
        try:
            data = self.client.images.get_registry_data(reference)
        except self._errors.NotFound:
            return None
        except self._errors.APIError as exc:
            text = str(exc.explanation or exc)
            if "manifest unknown" in text or "not found" in text.lower():
                return None
            raise HyHomeError(f"cannot reach the registry for {reference}: {text[:300]} "
                              "(is it running? playbooks/registry.yml)") from exc
        return data.id

    def tag(self, source, repository, tag):
        if not self.client.images.get(source).tag(repository, tag):
            raise HyHomeError(f"docker refused to tag {source} as {repository}:{tag}")

    def push(self, repository, tag):
        digest, errors = None, []
        try:
            for event in self.client.images.push(repository, tag=tag, stream=True, decode=True):
                if event.get("error"):
                    errors.append(str(event["error"]))
                aux = event.get("aux") or {}
                if aux.get("Digest"):
                    digest = aux["Digest"]
        except self._errors.APIError as exc:
            raise HyHomeError(f"pushing {repository}:{tag} failed: {exc.explanation or exc}") from exc
        if errors:
            raise HyHomeError(f"pushing {repository}:{tag} failed: {errors[-1][:300]}")
        return digest

    def build(self, services):
        self.engine.run(["build", *services])
