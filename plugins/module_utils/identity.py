"""Which uid:gid a Compose service runs as: one answer for data_dirs, secrets and tls.

Pure core (no AnsibleModule). Order, first answer wins:

1. an override for the service (inventory);
2. a numeric ``user:`` (``uid`` or ``uid:gid``);
3. ``user:`` by name, looked up in the image's own ``/etc/passwd`` and ``/etc/group``;
4. the image's configured user (``Config.User``) when the image is on the engine, unless it is
   empty or root and the built-in table knows the image: images such as postgres start as root
   and drop to a fixed user in their entrypoint, which only the table knows;
5. the built-in table of well-known images (works before the image is pulled);
6. root, with source ``"unresolved"`` and a warning naming the fix.

An image present on the engine that sets no ``USER`` and is not in the table runs as root: that
is an answer (source ``"image-config"``), not a guess.

API:

    Identity(uid, gid, source, detail="", groups=())
    IdentityResolver(overrides=None, image_users=None, images=None, missing_image="warn")
        .service(svc) -> Identity           # svc: compose_model.Service; cached per service name
        .warnings: list[str]
    DEFAULT_IMAGE_USERS, table_lookup(image, table), image_repository(image)
    DockerImages(docker_host=None, docker_cli="docker"), ImageMissing
    LocalImages(images, docker_cli="docker")   # Config.User of present images only, one inspect, no container
    parse_passwd(text), parse_group(text), override_identity(value, what, groups=())
    file_access(readers: {service: Identity}, single_mode=0o400, shared_mode=0o440) -> FileAccess
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import tarfile
import uuid
from dataclasses import dataclass

from ansible_collections.hyhome.bootstrap.plugins.module_utils import procs
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import MAX_ID, check_id, resolve_owner

# The user each image's processes run as, "uid:gid", for images that start as root and drop to a
# fixed user (neither ``user:`` nor ``Config.User`` says so) and for images whose user must be
# known before they are pulled. Every value is taken from the image's own Dockerfile (USER line,
# or the useradd/adduser its entrypoint switches to); images whose Dockerfile was not checked are
# deliberately absent (they resolve through Config.User or the image_users option instead).
#
# Key: repository path without registry and tag. A single name matches the Docker official image
# only; a namespaced key also matches a mirror path ending in it. ``*`` globs the repository
# (``zalando/spilo-*``); ``repo:tag-glob`` is a variant picked by tag before the plain key
# (``postgres:*alpine*``: the Alpine variants use other ids than the Debian ones).
DEFAULT_IMAGE_USERS: dict[str, str] = {
    # Databases and caches (entrypoint drops from root to the service user).
    "postgres": "999:999",
    "postgres:*alpine*": "70:70",
    "postgis/postgis": "999:999",
    "timescale/timescaledb": "70:70",
    "zalando/spilo-*": "101:103",          # Spilo/Patroni: postgres 101, group 103 (operator's fsGroup)
    "mysql": "999:999",
    "mariadb": "999:999",
    "mongo": "999:999",
    "redis": "999:999",
    "redis:*alpine*": "999:1000",
    "valkey/valkey": "999:999",
    "rabbitmq": "999:999",
    "influxdb": "1000:1000",
    "coreos/etcd": "0:0",                  # distroless static, no USER
    "haproxy": "99:99",                    # USER haproxy (uid/gid 99), Debian and Alpine variants
    # Object storage.
    "minio/minio": "0:0",
    "minio/mc": "0:0",
    # Search and streaming.
    "opensearchproject/opensearch": "1000:1000",
    "opensearchproject/opensearch-dashboards": "1000:1000",
    "elasticsearch": "1000:0",
    "elasticsearch/elasticsearch": "1000:0",
    "kibana": "1000:0",
    "kibana/kibana": "1000:0",
    "apache/kafka": "1000:1000",           # USER appuser (first adduser on Alpine)
    # Identity.
    "keycloak/keycloak": "1000:0",
    "jboss/keycloak": "1000:0",
    # Observability.
    "grafana/grafana": "472:0",
    "grafana/grafana-oss": "472:0",
    "grafana/grafana-enterprise": "472:0",
    "grafana/loki": "10001:10001",
    "grafana/tempo": "10001:10001",
    "grafana/mimir": "10001:10001",
    "grafana/pyroscope": "10001:10001",
    "grafana/alloy": "0:0",                # runs as root to read host logs
    "grafana/promtail": "0:0",
    "prom/prometheus": "65534:65534",
    "prom/alertmanager": "65534:65534",
    "prom/pushgateway": "65534:65534",
    "prom/node-exporter": "65534:65534",
    "prom/blackbox-exporter": "65534:65534",
    "prometheus/prometheus": "65534:65534",        # quay.io/prometheus/...
    "prometheus/alertmanager": "65534:65534",
    "prometheus/node-exporter": "65534:65534",
    "prometheus/blackbox-exporter": "65534:65534",
    "prometheuscommunity/postgres-exporter": "65534:65534",
    "oliver006/redis_exporter": "59000:59000",
    "danielqsj/kafka-exporter": "65534:65534",
    "prometheuscommunity/elasticsearch-exporter": "65534:65534",
    "cadvisor/cadvisor": "0:0",            # gcr.io/cadvisor/cadvisor
    "jaegertracing/all-in-one": "10001:10001",
    "otel/opentelemetry-collector-contrib": "10001:10001",
    "otel/opentelemetry-collector": "10001:10001",
    # Edge.
    "traefik": "0:0",
    # Applications.
    "gitea/gitea:*rootless*": "1000:1000",  # USER 1000:1000 (the root variant starts as root)
    "n8nio/n8n": "1000:1000",              # USER node
    "vaultwarden/server": "0:0",           # no USER
    "binwiederhier/ntfy": "0:0",           # no USER
    "curlimages/curl": "100:101",          # USER curl_user (Alpine system ids)
}

SOURCES = ("override", "user", "image-config", "image-table", "unresolved")


@dataclass(frozen=True)
class Identity:
    """The uid:gid a service's processes run as, where the answer came from, and its extra groups."""

    uid: int
    gid: int
    source: str                     # one of SOURCES
    detail: str = ""
    groups: tuple[int, ...] = ()    # numeric group_add entries of the service

    @property
    def text(self) -> str:
        return f"{self.uid}:{self.gid}"


class ImageMissing(Exception):
    """The image is not present on the engine (not pulled or built yet)."""


def _valid_id(text: str) -> bool:
    return text.isdigit() and int(text) <= MAX_ID


def parse_passwd(text: str) -> dict[str, tuple[int, int]]:
    """``name -> (uid, gid)`` from an /etc/passwd text; bad lines are ignored."""
    out = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and _valid_id(parts[2]) and _valid_id(parts[3]):
            out.setdefault(parts[0], (int(parts[2]), int(parts[3])))
    return out


def parse_group(text: str) -> dict[str, int]:
    """``name -> gid`` from an /etc/group text."""
    out = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and _valid_id(parts[2]):
            out.setdefault(parts[0], int(parts[2]))
    return out


def _untar_one(data: bytes) -> str:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for member in tf:
            if member.isfile():
                fh = tf.extractfile(member)
                return fh.read().decode("utf-8", "replace") if fh else ""
    return ""


class DockerImages:
    """Reads an image's configured user and its /etc/passwd and /etc/group without running it.

    The files are copied out of a created, never started container (``get_archive``): the engine
    resolves layers and whiteouts, and only two small files cross the socket, however large the
    image. Uses the docker SDK; falls back to the docker CLI where the SDK is not installed (a
    target host with only the engine). Results are cached per image for the life of the object.
    """

    def __init__(self, docker_host: str | None = None, docker_cli: str = "docker"):
        self.docker_host = docker_host
        self.docker_cli = docker_cli
        self._client = None
        self._users: dict[str, str | None] = {}
        self._files: dict[str, tuple[dict, dict]] = {}
        self.lookups = 0            # containers created (for tests and reports)

    def _sdk(self):
        if self._client is None:
            try:
                import docker
            except ImportError:
                self._client = False
            else:
                try:
                    self._client = (docker.DockerClient(base_url=self.docker_host) if self.docker_host
                                    else docker.from_env())
                except docker.errors.DockerException as exc:
                    raise HyHomeError(f"cannot reach the Docker engine to inspect images: {exc}") from None
        return self._client

    def _cli(self, *args: str, binary: bool = False):
        env = dict(os.environ)
        if self.docker_host:
            env["DOCKER_HOST"] = self.docker_host
        try:
            res = procs.run([self.docker_cli, *args], env=env, timeout=120, text=False)
        except FileNotFoundError:
            raise HyHomeError("neither the docker SDK for Python nor the docker CLI is available "
                              "to inspect images; set an owner override instead") from None
        except procs.CommandTimeout:
            raise HyHomeError(f"docker {args[0]} did not answer within 120s") from None
        if res.returncode != 0:
            err = res.stderr.decode("utf-8", "replace").strip()
            if "No such image" in err or "No such object" in err:
                raise ImageMissing(err)
            if "Could not find the file" in err or "No such container:path" in err:
                return None
            raise HyHomeError(f"docker {args[0]} failed: {err}")
        return res.stdout if binary else res.stdout.decode("utf-8", "replace")

    def config_user(self, image: str) -> str | None:
        """``Config.User`` of a local image (None when unset). Raises ImageMissing."""
        if image not in self._users:
            client = self._sdk()
            if client:
                import docker
                try:
                    info = client.api.inspect_image(image)
                except docker.errors.ImageNotFound:
                    raise ImageMissing(image) from None
                except docker.errors.APIError as exc:
                    raise HyHomeError(f"cannot inspect image {image}: {exc}") from None
                self._users[image] = (info.get("Config") or {}).get("User") or None
            else:
                out = self._cli("image", "inspect", "--format", "{{json .Config.User}}", image)
                self._users[image] = json.loads(out.strip() or '""') or None
        return self._users[image]

    def accounts(self, image: str) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
        """(passwd, group) of a local image, parsed. Raises ImageMissing."""
        if image not in self._files:
            self.config_user(image)     # ImageMissing early, before creating anything
            texts = self._read_files(image, ("/etc/passwd", "/etc/group"))
            self._files[image] = (parse_passwd(texts[0]), parse_group(texts[1]))
        return self._files[image]

    def _read_files(self, image: str, paths: tuple[str, ...]) -> list[str]:
        name = f"hyhome-passwd-probe-{uuid.uuid4().hex[:12]}"
        self.lookups += 1
        client = self._sdk()
        if client:
            import docker
            cid = client.api.create_container(
                image, entrypoint=["/hyhome-probe-never-started"], command=[], network_disabled=True,
                name=name, labels={"org.hyhome.probe": "data_dirs"})["Id"]
            try:
                out = []
                for p in paths:
                    try:
                        chunks, _ = client.api.get_archive(cid, p)
                        out.append(_untar_one(b"".join(chunks)))
                    except docker.errors.NotFound:
                        out.append("")
                return out
            finally:
                client.api.remove_container(cid, force=True)
        cid = self._cli("create", "--name", name, "--network", "none", "--label", "org.hyhome.probe=data_dirs",
                        "--entrypoint", "/hyhome-probe-never-started", image).strip()
        try:
            out = []
            for p in paths:
                data = self._cli("cp", f"{cid}:{p}", "-", binary=True)
                out.append(_untar_one(data) if data else "")
            return out
        finally:
            self._cli("rm", "-f", cid)


def _normal_ref(image: str) -> str:
    """An image reference the way ``docker image inspect`` lists it in RepoTags / RepoDigests:
    no ``docker.io/`` nor ``library/`` prefix, ``:latest`` when no tag, digest refs as ``repo@digest``."""
    ref = image.strip().lower()
    ref, _, digest = ref.partition("@")
    name, tag = ref, ""
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = ref[: len(ref) - len(last) + last.index(":")], last.split(":", 1)[1]
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            if name.startswith("library/") and name.count("/") == 1:
                name = name[len("library/"):]
            break
    return f"{name}@{digest}" if digest else f"{name}:{tag or 'latest'}"


class LocalImages:
    """``Config.User`` of the images already on the engine, for checks that must stay offline and fast.

    One ``docker image inspect`` of every reference given (on the first question), never a created
    container: a user *name* in ``Config.User`` is not looked up (``accounts`` raises ImageMissing,
    so the resolver falls back to the table, else says it does not know). No reference, no docker
    CLI, no engine, or no answer within ``timeout`` seconds: every image counts as absent.
    """

    def __init__(self, images=(), docker_cli: str | None = "docker", timeout: float = 5.0):
        self.refs = sorted({i for i in images if isinstance(i, str) and i.strip()})
        self.docker_cli = docker_cli
        self.timeout = timeout
        self.calls = 0              # docker CLI calls made (for tests and reports)
        self._users: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        users: dict[str, str] = {}
        if not self.refs or not self.docker_cli:
            return users
        fmt = "{{json .RepoTags}}\t{{json .RepoDigests}}\t{{json .Config.User}}"
        self.calls += 1
        try:
            # Exits non-zero when any reference is missing; the present ones are still printed.
            res = procs.run([self.docker_cli, "image", "inspect", "--format", fmt, *self.refs],
                            timeout=self.timeout)
        except (OSError, procs.CommandTimeout):
            return users
        for line in res.stdout.splitlines():
            try:
                tags, digests, user = (json.loads(part) for part in line.split("\t"))
            except ValueError:
                continue
            for ref in [*(tags or []), *(digests or [])]:
                users[_normal_ref(ref)] = user or ""
        return users

    def config_user(self, image: str) -> str | None:
        """``Config.User`` of a present image (None when unset). Raises ImageMissing."""
        if self._users is None:
            self._users = self._load()
        user = self._users.get(_normal_ref(image))
        if user is None:
            raise ImageMissing(image)
        return user or None

    def accounts(self, image: str):
        """Reading /etc/passwd needs a container: never done here."""
        raise ImageMissing(image)


def image_repository(image: str) -> str:
    """Repository path of an image reference without registry, tag, digest and ``library/``."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)
    if ":" in last[-1]:
        ref = ref[: len(ref) - len(last[-1]) + last[-1].index(":")]
    parts = ref.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if parts and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts).lower()


def image_tag(image: str) -> str:
    """Tag of an image reference ('latest' when none is written)."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1].lower() if ":" in last else "latest"


def _repo_matches(key: str, repo: str, raw: str) -> bool:
    if "/" in key:
        if "*" in key or "?" in key:
            return fnmatch.fnmatchcase(repo, key) or fnmatch.fnmatchcase(repo, "*/" + key)
        return repo == key or repo.endswith("/" + key)
    return repo == key or raw.endswith("/library/" + key)


def table_lookup(image: str, table: dict[str, str]) -> tuple[str, str] | None:
    """(key, "uid:gid") for ``image`` from ``table``.

    A namespaced key (``grafana/loki``) matches the repository or any mirror path ending in it; a
    single name (``postgres``) matches only the official image, also behind a mirror path ending
    in ``library/postgres``. ``*`` in a key globs the repository; a key ``repo:tag-glob`` matches
    that repository with a tag matching the glob and is tried before the plain key.
    """
    if not isinstance(image, str) or not image.strip():
        return None
    repo = image_repository(image)
    tag = image_tag(image)
    raw = image.split("@", 1)[0].lower()
    raw = raw[: len(raw) - len(tag) - 1] if raw.endswith(":" + tag) else raw

    def order(key: str):
        # Tag variants first, then exact keys before globs, longest first.
        return (":" not in key, "*" in key.split(":", 1)[0], -len(key), key)

    for key in sorted(table, key=order):
        k = key.lower()
        k_repo, _, k_tag = k.partition(":")
        if k_tag and not fnmatch.fnmatchcase(tag, k_tag):
            continue
        if _repo_matches(k_repo, repo, raw):
            return key, table[key]
    return None


def _split_user(spec: str) -> tuple[str, str | None]:
    user, _, group = str(spec).partition(":")
    return user.strip(), (group.strip() or None)


def owner_spec(value, what: str) -> tuple[int, int | None]:
    """"uid[:gid]" (numbers only), from the table or an override, to (uid, gid or None)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise HyHomeError(f"{what}: {value!r} must be numeric 'uid' or 'uid:gid'")
    user, group = _split_user(value)
    if not _looks_numeric(user) or (group is not None and not _looks_numeric(group)):
        raise HyHomeError(f"{what}: {value!r} must be numeric 'uid' or 'uid:gid'")
    return (check_id(user, f"{what}: uid"),
            check_id(group, f"{what}: gid") if group is not None else None)


def _looks_numeric(text: str) -> bool:
    """Digits with an optional sign: a number (maybe out of range), never a user or group name."""
    return text.lstrip("+-").isdigit()


def override_identity(value, what: str, groups: tuple[int, ...] = ()) -> Identity:
    """An override to an Identity.

    ``value`` is ``{"owner": ..., "group": ...}`` (names are looked up on this host, numbers
    taken as is; no group: the owner's uid), ``"uid[:gid]"`` or an int uid.
    """
    if isinstance(value, dict):
        uid = value.get("owner")
        gid = value.get("group")
    elif isinstance(value, int | str) and not isinstance(value, bool):
        uid, gid = owner_spec(value, what)
    else:
        raise HyHomeError(f"{what}: {value!r} must be a mapping with owner/group or 'uid[:gid]'")
    if isinstance(uid, bool) or isinstance(gid, bool):
        raise HyHomeError(f"{what}: owner and group must be names or numbers")
    if isinstance(uid, str) and not _looks_numeric(uid.strip()):
        uid, _ = resolve_owner(uid, None)
    if isinstance(gid, str) and gid and not _looks_numeric(gid.strip()):
        _, gid = resolve_owner(None, gid)
    if not isinstance(uid, int | str) or not isinstance(gid, int | str | None):
        raise HyHomeError(f"{what}: owner {uid!r} / group {gid!r} is not a name or number")
    uid = check_id(uid, f"{what}: owner")
    gid = uid if gid in (None, "") else check_id(gid, f"{what}: group")
    return Identity(uid, gid, "override", what, groups)


def _numeric_groups(svc) -> tuple[int, ...]:
    return tuple(sorted({int(g) for g in (getattr(svc, "group_add", None) or []) if str(g).strip().isdigit()}))


class IdentityResolver:
    """Decides which uid:gid a service's processes run as; see the module docstring for the order.

    ``overrides``: ``{service: {"owner", "group"} | "uid[:gid]"}`` (keys with a ``/`` are path
    overrides of data_dirs and are ignored here). ``image_users``: ``{repository: "uid[:gid]"}`` on
    top of DEFAULT_IMAGE_USERS. ``images``: a DockerImages (or a fake with ``config_user`` and
    ``accounts``); created on first use. ``missing_image``: "warn" or "fail" when an image is needed
    for an answer but is not on the engine.
    """

    def __init__(self, overrides: dict | None = None, image_users: dict | None = None,
                 images=None, missing_image: str = "warn"):
        if missing_image not in ("warn", "fail"):
            raise HyHomeError("missing_image must be 'warn' or 'fail'")
        if overrides is not None and not isinstance(overrides, dict):
            raise HyHomeError("owner overrides must be a mapping of service name to owner")
        if image_users is not None and not isinstance(image_users, dict):
            raise HyHomeError("image_users must be a mapping of image repository to 'uid[:gid]'")
        self.overrides = {str(k): v for k, v in (overrides or {}).items() if "/" not in str(k)}
        self.table = {**DEFAULT_IMAGE_USERS, **{str(k): str(v) for k, v in (image_users or {}).items()}}
        self.images = images
        self.missing_image = missing_image
        self.warnings: list[str] = []
        self._cache: dict[str, Identity] = {}
        self._warned: set[str] = set()

    def _images(self):
        if self.images is None:
            self.images = DockerImages()
        return self.images

    def _warn(self, svc, msg: str) -> None:
        if svc.name not in self._warned:
            self._warned.add(svc.name)
            self.warnings.append(msg)

    def _image_missing(self, svc, why: str) -> None:
        msg = (f"service {svc.name}: image {svc.image} is not on this engine, so {why}; pull or build it "
               "first, or set an override for the service")
        if self.missing_image == "fail":
            raise HyHomeError(msg)
        self._warn(svc, msg)

    def service(self, svc) -> Identity:
        """Identity of a service (cached per service name)."""
        if svc.name not in self._cache:
            ident = self._resolve(svc)
            groups = _numeric_groups(svc)
            if groups and not ident.groups:
                ident = Identity(ident.uid, ident.gid, ident.source, ident.detail, groups)
            self._cache[svc.name] = ident
        return self._cache[svc.name]

    def _resolve_spec(self, svc, spec: str, source: str) -> Identity | None:
        """``user:`` / ``Config.User`` text to an Identity, names looked up in the image."""
        user, group = _split_user(spec)
        if not user:
            raise HyHomeError(f"service {svc.name}: user {spec!r} has no user part")
        # A signed or huge number is never a name to look up: refuse it here, while planning.
        what = f"service {svc.name}: user {spec!r}:"
        if _looks_numeric(user):
            user = str(check_id(user, f"{what} uid"))
        if group is not None and _looks_numeric(group):
            group = str(check_id(group, f"{what} gid"))
        if user.isdigit() and (group is None or group.isdigit()):
            uid = int(user)
            gid = int(group) if group is not None else uid
            return Identity(uid, gid, source, spec)
        if user == "root" and (group is None or group.isdigit() or group == "root"):
            return Identity(0, int(group) if group and group.isdigit() else 0, source, spec)
        if not svc.image:
            raise HyHomeError(f"service {svc.name}: user {spec!r} is a name but the service has no image to "
                              "resolve it in; use a numeric uid or an override")
        try:
            passwd, groups = self._images().accounts(svc.image)
        except ImageMissing:
            self._image_missing(svc, f"its user {spec!r} cannot be resolved")
            return None
        if user.isdigit():
            uid = int(user)
        elif user in passwd:
            uid = passwd[user][0]
        else:
            raise HyHomeError(f"service {svc.name}: user {user!r} is not in /etc/passwd of image {svc.image}")
        if group is None:
            gid = next((g for name, (u, g) in passwd.items() if u == uid and (user.isdigit() or name == user)),
                       uid)
        elif group.isdigit():
            gid = int(group)
        elif group in groups:
            gid = groups[group]
        else:
            raise HyHomeError(f"service {svc.name}: group {group!r} is not in /etc/group of image {svc.image}")
        return Identity(uid, gid, source, f"{spec} in {svc.image}")

    def _table(self, image: str) -> Identity | None:
        hit = table_lookup(image, self.table)
        if not hit:
            return None
        uid, gid = owner_spec(hit[1], f"image_users[{hit[0]}]")
        return Identity(uid, uid if gid is None else gid, "image-table", f"{hit[0]} -> {hit[1]}")

    def _resolve(self, svc) -> Identity:
        ov = self.overrides.get(svc.name)
        if ov not in (None, "", {}) and not (isinstance(ov, dict) and ov.get("owner") in (None, "")):
            return override_identity(ov, f"override for service {svc.name}")
        if svc.user not in (None, ""):
            ident = self._resolve_spec(svc, str(svc.user), "user")
            if ident:
                return ident
        if not svc.image:
            return self._unresolved(svc, "it has no image and no user:")
        try:
            cfg = self._images().config_user(svc.image)
        except ImageMissing:
            table = self._table(svc.image)
            if table:
                return table
            if self.missing_image == "fail":
                self._image_missing(svc, "its configured user is unknown and the built-in table has no entry for it")
            return self._unresolved(svc, f"image {svc.image} is not on this engine and not in the built-in table",
                                    "pull or build the image, or ")
        ident = self._resolve_spec(svc, cfg, "image-config") if cfg else None
        if ident and ident.uid != 0:
            return ident
        # Empty or root Config.User: the image may drop privileges in its entrypoint; the table knows.
        table = self._table(svc.image)
        if table:
            return table
        if ident:
            return ident
        if cfg:   # a user name whose uid could not be read from the image: not known to be root
            return self._unresolved(svc, f"image {svc.image} runs as user {cfg!r}, whose uid was not looked up")
        return Identity(0, 0, "image-config", f"image {svc.image} sets no USER: it runs as root")

    def _unresolved(self, svc, why: str, first_fix: str = "") -> Identity:
        self._warn(svc, f"service {svc.name}: nothing says which user it runs as ({why}); root (0:0) is "
                        f"assumed. Fix: {first_fix}set user: on the service, or an owner override for it, or add "
                        "its image to image_users (repository: \"uid:gid\")")
        return Identity(0, 0, "unresolved", why)


@dataclass(frozen=True)
class FileAccess:
    """Owner, group and mode that let exactly a file's readers open it."""

    uid: int
    gid: int
    mode: int
    readers: tuple[tuple[str, Identity], ...]   # (service, identity), sorted by service
    shared: bool = False
    hint: str = ""                               # what to change when a reader lacks the shared group


def file_access(readers: dict, single_mode: int = 0o400, shared_mode: int = 0o440) -> FileAccess:
    """Who owns a private file, from the identities of the services that read it.

    One reader uid: that uid and its gid, ``single_mode`` (0400): any other uid is refused. Several
    uids: owner root and a group every non-root reader has (primary gid or a numeric
    ``group_add``), ``shared_mode`` (0440); root reads through the owner bits, so it needs no
    group (a root container may have dropped CAP_DAC_OVERRIDE). Without a common group, the first
    reader's gid is used and ``hint`` names the services that need ``group_add``. No reader:
    root:root ``single_mode``.
    """
    items = tuple(sorted(readers.items()))
    if not items:
        return FileAccess(0, 0, single_mode, (), False, "no service reads it")
    uids = {ident.uid for _, ident in items}
    if len(uids) == 1:
        ident = items[0][1]
        return FileAccess(ident.uid, ident.gid, single_mode, items)
    users = [(name, ident) for name, ident in items if ident.uid != 0]
    candidates = [ident.gid for _, ident in users] + sorted({g for _, i in users for g in i.groups})
    for gid in candidates:
        if all(gid == ident.gid or gid in ident.groups for _, ident in users):
            return FileAccess(0, gid, shared_mode, items, True)
    gid = users[0][1].gid
    needs = [name for name, ident in users if gid != ident.gid and gid not in ident.groups]
    hint = (f"add group_add: ['{gid}'] to {', '.join(needs)} so they can read it through group {gid}, "
            "or set an owner override")
    return FileAccess(0, gid, shared_mode, items, True, hint)


def offline_resolver(overrides: dict | None = None, image_users: dict | None = None) -> IdentityResolver:
    """An identity resolver that never asks an engine (``user:``, overrides and tables only): every
    image counts as absent."""
    return IdentityResolver(overrides=overrides, image_users=image_users, images=LocalImages(docker_cli=None))
