"""Core of the rollout job: a new release of one service with zero downtime, or an automatic rollback.

One container of the service serves; the gateway reaches it by service name (Docker DNS). A rollout

1. points the gateway at that one container by name (an upstream line in the gateway's tmpfs,
   ``nginx -s reload``, old workers drained), so the new container gets no traffic too early;
2. starts the new release beside it: ``docker compose create --no-recreate --scale S=2 S`` with the
   release's variables in the environment, then starts that one container (Compose creates it, with
   Compose's labels and the same config hash a plain ``up`` computes: the project stays the single
   source of truth; ``up`` would re-run finished one-shot dependencies, ``--no-deps`` would label the
   container with a hash the next ``up`` disagrees with);
3. waits until the new container is healthy (its own healthcheck), within a timeout;
4. points the gateway at the new container (reload), waits until every nginx worker that could still
   send a request to the old one has exited, then stops and removes the old container;
5. records the release in ``release.env`` (atomically), which the compose files read, so a later
   day0 finds the running container up to date (changed=0) and never flips back;
6. points the gateway back at the service name (reload): the state a fresh gateway starts in.

When the new container is not healthy in time (or exits), it is removed, the gateway goes back to the
service name (only the old container answers it) and the release file is left as it was: automatic
rollback. No other container is started, stopped or recreated (the gateway is reloaded, never restarted).

The pure parts (release arithmetic, input checks, upstream lines, the release file) are unit-tested;
:func:`run` drives an ``ops`` object (the engine, Compose, the gateway) that tests replace with a fake.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import time
from dataclasses import dataclass, field

from ansible_collections.hyhome.bootstrap.plugins.module_utils import compose_up, env_file, procs, project_context
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import atomic_write, ensure_within

RELEASE_FILE = "app/release.env"      # relative to the project dir; the compose files read it
UPSTREAM_DIR = "/tmp/nginx/upstreams"  # noqa: S108 - inside the gateway's tmpfs: <service>.conf, one `set` line

# A tag and a version: what Docker accepts as a tag; the version also lands in a header and a file.
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?)"
IMAGE_REF_RE = re.compile(
    rf"(?P<repo>(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{TAG_RE.pattern}))?(?:@(?P<digest>sha256:[0-9a-f]{{64}}))?")
HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,252}[A-Za-z0-9])?")
UPSTREAM_RE = re.compile(r"^\s*set\s+\$upstream_(?P<var>\w+)\s+http://(?P<host>[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5});\s*$")


@dataclass(frozen=True)
class ImageRef:
    repository: str
    tag: str | None
    digest: str | None


@dataclass(frozen=True)
class Release:
    image: str          # what the service's image: becomes (tag or name@digest)
    version: str        # what X-Hyhome-Version says
    build: bool = False  # build the image (docker compose build) before starting it


# ---------------------------------------------------------------------------------------------
# Pure helpers


def release_keys(service: str) -> tuple[str, str]:
    """The two release variables of a service: HYHOME_<SERVICE>_IMAGE and HYHOME_<SERVICE>_VERSION."""
    stem = re.sub(r"[^A-Za-z0-9]", "_", service).upper()
    return f"HYHOME_{stem}_IMAGE", f"HYHOME_{stem}_VERSION"


def upstream_var(service: str) -> str:
    """The nginx variable the gateway proxies the service through ($upstream_<service>)."""
    return "upstream_" + re.sub(r"[^A-Za-z0-9]", "_", service)


def parse_image_ref(ref) -> ImageRef:
    """``[host[:port]/]name[:tag][@sha256:<64 hex>]`` -> ImageRef; HyHomeError on anything else."""
    if not isinstance(ref, str) or not ref:
        raise HyHomeError("image must be a non-empty image reference, e.g. registry.lan:5000/hyhome/api@sha256:...")
    m = IMAGE_REF_RE.fullmatch(ref)
    if not m:
        raise HyHomeError(f"{ref[:200]!r} is not an image reference "
                          "([host[:port]/]name[:tag][@sha256:<64 hex digits>])")
    return ImageRef(m.group("repo"), m.group("tag"), m.group("digest"))


def check_tag(value, what: str = "tag") -> str:
    if not isinstance(value, str) or not TAG_RE.fullmatch(value):
        shown = value[:200] if isinstance(value, str) else type(value).__name__
        raise HyHomeError(f"{what} {shown!r} is not valid: letters, digits, '_', '.', '-' "
                          "(at most 128, not starting with '.' or '-')")
    return value


def target_release(service, current_image: str | None, tag=None, image=None, version=None, build: bool = False,
                   now=time.gmtime) -> Release:
    """The release to roll out, from exactly one of: a ``tag`` (same repository as now), an
    ``image`` reference (a registry's name@digest, say), or ``build`` (optionally with a tag)."""
    if image and (tag or build):
        raise HyHomeError("give either image (a reference to run as is) or tag/build, not both")
    if not (image or tag or build):
        raise HyHomeError("nothing to roll out: give tag=<new tag>, image=<reference, e.g. name@sha256:...> "
                          "or build=true")
    if version is not None:
        check_tag(version, "version")
    if image:
        ref = parse_image_ref(image)
        if version is None:
            version = ref.tag or ("sha256-" + ref.digest.split(":", 1)[1][:12] if ref.digest else "latest")
        return Release(image=image, version=version)
    if build and not getattr(service, "build", None):
        raise HyHomeError(f"service '{service.name}' has no build: section; give tag= or image= instead")
    if tag is None:
        tag = time.strftime("build-%Y%m%dT%H%M%SZ", now())
    check_tag(tag)
    base = current_image or getattr(service, "image", None)
    if not base:
        raise HyHomeError(f"service '{service.name}' has no image: name to tag; give image= instead")
    repository = parse_image_ref(base).repository
    return Release(image=f"{repository}:{tag}", version=version or tag, build=bool(build))


def check_service(project, service: str, gateway: str):
    """The service to roll out, checked: known, not the gateway, health-checked, no fixed host port."""
    services = getattr(project, "services", {}) or {}
    if not isinstance(service, str) or service not in services:
        known = ", ".join(sorted(services)) or "none"
        shown = service[:100] if isinstance(service, str) else service
        raise HyHomeError(f"unknown service {shown!r}: the project's services are {known}")
    if gateway not in services:
        raise HyHomeError(f"the gateway service '{gateway}' is not in the project "
                          f"(set gateway= to the service that proxies '{service}')")
    if service == gateway:
        raise HyHomeError(f"'{service}' is the gateway itself: roll out the services behind it; "
                          "update the gateway with day0 (a restart)")
    svc = services[service]
    hc = svc.healthcheck
    if not hc or hc.get("disable") or hc.get("test") in (None, [], ["NONE"]):
        raise HyHomeError(f"service '{service}' has no healthcheck: a rollout moves traffic only to a container "
                          "that reports healthy; add a healthcheck to it first")
    fixed = sorted({p.published for p in svc.ports if p.published})
    if fixed:
        raise HyHomeError(f"service '{service}' publishes host port(s) {', '.join(map(str, fixed))}: two containers "
                          "cannot run side by side; put it behind the gateway instead")
    return svc


def upstream_line(service: str, host: str, port: int) -> str:
    """The gateway's upstream line for a service: ``set $upstream_<service> http://host:port;``."""
    if not isinstance(host, str) or not HOST_RE.fullmatch(host):
        raise HyHomeError(f"{str(host)[:100]!r} is not a host name the gateway can proxy to")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise HyHomeError(f"{port!r} is not a port")
    return f"set ${upstream_var(service)} http://{host}:{port};\n"


def parse_upstream(text: str, service: str) -> tuple[str, int]:
    """(host, port) of the gateway's upstream line for ``service``; HyHomeError when it is not one."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    m = UPSTREAM_RE.fullmatch(lines[0]) if len(lines) == 1 else None
    if not m or m.group("var") != upstream_var(service)[len("upstream_"):]:
        raise HyHomeError(f"the gateway's {UPSTREAM_DIR}/{service}.conf is not one "
                          f"'set ${upstream_var(service)} http://host:port;' line")
    return m.group("host"), int(m.group("port"))


def render_release(text: str | None, values: dict[str, str]) -> str:
    """release.env with ``values`` set (comments, order and other keys kept; new keys appended)."""
    lines = env_file.parse(text or "", RELEASE_FILE)
    return env_file.render(lines, values)


def release_values(text: str | None) -> dict[str, str | None]:
    return env_file.as_dict(env_file.parse(text or "", RELEASE_FILE))


def health_verdict(info) -> str:
    """healthy | unhealthy | starting | gone (exited, dead, removed) of one container."""
    if info is None or info.status in ("exited", "dead", "removing"):
        return "gone"
    if info.status != "running":
        return "starting" if info.status in ("created", "restarting") else "gone"
    return info.health or "starting"


def worker_pids(text: str) -> set[int]:
    """PIDs from the gateway's worker listing (one PID per line)."""
    return {int(tok) for tok in (text or "").split() if tok.isdigit()}


# ---------------------------------------------------------------------------------------------
# The orchestration


@dataclass
class Request:
    service: str
    gateway: str = "gateway"
    tag: str | None = None
    image: str | None = None
    version: str | None = None
    build: bool = False
    health_timeout: float = 90.0
    drain_timeout: float = 30.0
    stop_timeout: int = 10
    release_file: str = RELEASE_FILE


@dataclass
class Outcome:
    changed: bool = False
    rolled_back: bool = False
    service: str = ""
    previous: dict = field(default_factory=dict)
    current: dict = field(default_factory=dict)
    release: dict = field(default_factory=dict)
    plan: list[str] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"changed": self.changed, "rolled_back": self.rolled_back, "service": self.service,
                "previous": self.previous, "current": self.current, "release": self.release, "plan": self.plan,
                "steps": self.steps, "drain_warnings": self.warnings, "seconds": round(self.seconds, 2)}


def _one_running(items, what: str):
    running = [c for c in items if c.status == "running"]
    if len(items) != 1 or len(running) != 1:
        names = ", ".join(f"{c.name} ({c.describe()})" for c in items) or "none"
        raise HyHomeError(f"{what} must have exactly one running container to roll out from; it has: {names}. "
                          "After an interrupted rollout remove the container that does not serve "
                          "(docker rm -f NAME) and run day0")
    return running[0]


def run(ops, req: Request, check_mode: bool = False, clock=time.monotonic, sleep=time.sleep) -> Outcome:
    """Roll ``req.service`` out to a new release through ``ops`` (see the module docstring).

    Raises HyHomeError when nothing may change (bad input, no single serving container), and when the
    rollout failed; ``details['result']`` then carries the outcome so far (``rolled_back`` says whether
    the old container kept serving)."""
    started = clock()
    out = Outcome(service=req.service)
    project = ops.project
    svc = check_service(project, req.service, req.gateway)
    old = _one_running(ops.containers(req.service), f"service '{req.service}'")
    gateway = _one_running(ops.containers(req.gateway), f"the gateway '{req.gateway}'")
    old_env = ops.container_env(old.id)
    release = target_release(svc, ops.container_image(old.id), req.tag, req.image, req.version, req.build)
    image_key, version_key = release_keys(req.service)
    env = {image_key: release.image, version_key: release.version}
    out.previous = {"container": old.name, "image": ops.container_image(old.id),
                    "version": old_env.get("HYHOME_APP_VERSION")}
    out.release = {"image": release.image, "version": release.version, "build": release.build,
                   "file": req.release_file}
    _host, port = parse_upstream(ops.gateway_read(gateway.id, req.service), req.service)

    release_text = ops.read_release()
    want_hash = ops.expected_hash(req.service, env)
    if not release.build and want_hash == old.config_hash:
        # Already this release: make sure the release file says so too, nothing else to do.
        out.current = dict(out.previous)
        wanted = render_release(release_text, env)
        out.plan = [f"'{req.service}' already runs {release.image} (version {release.version})"]
        if wanted != release_text:
            out.plan.append(f"record the release in {req.release_file}")
            out.changed = True
            if not check_mode:
                ops.update_release(env)
        out.seconds = clock() - started
        return out

    prepare = ("build " + release.image if release.build
               else "use local image " + release.image if ops.image_present(release.image)
               else "build " + release.image if svc.build and not parse_image_ref(release.image).digest
               else "pull " + release.image)
    out.plan = [
        prepare,
        f"point gateway '{req.gateway}' at {old.name}:{port} (nginx reload)",
        f"start a second '{req.service}' container with {release.image} (version {release.version}) beside {old.name}",
        f"wait up to {req.health_timeout:g}s until it is healthy; else remove it and keep {old.name} (rollback)",
        f"point the gateway at the new container (reload), record the release in {req.release_file}",
        f"drain, stop and remove {old.name}; point the gateway back at '{req.service}' (reload)",
    ]
    out.changed = True
    if check_mode:
        out.seconds = clock() - started
        return out

    def step(name: str, t0: float) -> None:
        out.steps.append({"step": name, "seconds": round(clock() - t0, 2)})

    def point(host: str) -> None:
        line = upstream_line(req.service, host, port)
        lingering = ops.gateway_point(gateway.id, req.service, line, req.drain_timeout)
        if lingering:
            out.warnings.append(f"{lingering} nginx worker(s) of the gateway still finishing requests "
                                f"{req.drain_timeout:g}s after pointing '{req.service}' at {host}")

    t0 = clock()
    if prepare.startswith("build "):
        ops.build(req.service, env)
    elif prepare.startswith("pull "):
        ops.pull(release.image)
    step(prepare, t0)

    t0 = clock()
    point(old.name)
    step(f"gateway -> {old.name}", t0)

    new = None
    try:
        t0 = clock()
        before = {c.id for c in ops.containers(req.service)}
        ops.create_beside(req.service, env)
        fresh = [c for c in ops.containers(req.service) if c.id not in before]
        if len(fresh) != 1:
            raise HyHomeError(f"expected one new '{req.service}' container, Compose created {len(fresh)}")
        new = fresh[0]
        ops.start(new.id)
        deadline = clock() + req.health_timeout
        while True:
            current = {c.id: c for c in ops.containers(req.service)}.get(new.id)
            verdict = health_verdict(current)
            if verdict == "healthy":
                break
            if verdict in ("unhealthy", "gone") or clock() >= deadline:
                why = {"unhealthy": "is unhealthy", "gone": "stopped"}.get(
                    verdict, f"is not healthy after {req.health_timeout:g}s")
                raise HyHomeError(ops.explain(req.service, f"the new container {new.name} {why}", current or new))
            sleep(min(0.5, max(0.0, deadline - clock())))
        step(f"start {new.name} until healthy", t0)
    except BaseException as exc:
        out.rolled_back = True
        t0 = clock()
        try:
            if new is not None:
                ops.remove(new.id)
            point(req.service)
        except HyHomeError as cleanup:
            out.rolled_back = False
            msg = f"{exc}\nrollback incomplete: {cleanup.msg}"
            raise HyHomeError(msg, result=out.as_dict()) from None
        step("rollback: new container removed, gateway -> service name", t0)
        out.current = dict(out.previous)
        out.seconds = clock() - started
        if not isinstance(exc, HyHomeError):
            raise
        raise HyHomeError(f"rolled back: {old.name} keeps serving version {out.previous.get('version')}; "
                          f"{exc.msg}", result=out.as_dict()) from None

    out.current = {"container": new.name, "image": release.image, "version": release.version}
    try:
        t0 = clock()
        point(new.name)
        ops.update_release(env)
        step(f"gateway -> {new.name} (old workers drained), {req.release_file} recorded", t0)
        t0 = clock()
        ops.stop(old.id, req.stop_timeout)
        ops.remove(old.id)
        step(f"stop and remove {old.name}", t0)
        t0 = clock()
        point(req.service)
        step(f"gateway -> '{req.service}'", t0)
    except HyHomeError as exc:
        out.seconds = clock() - started
        raise HyHomeError(f"the rollout of '{req.service}' to {release.version} did not finish: {exc.msg} "
                          f"(new container {new.name}, old {old.name}; check `docker compose ps {req.service}`)",
                          result=out.as_dict()) from None
    out.seconds = clock() - started
    return out


# ---------------------------------------------------------------------------------------------
# Engine adapter (the only part that touches Docker): compose_up's Engine plus the gateway


# Run inside the gateway container (as its own user: writes only its tmpfs, signals only its nginx).
_GATEWAY_READ = f'cat "{UPSTREAM_DIR}/$1.conf"'
_GATEWAY_POINT = f"""set -eu
f="{UPSTREAM_DIR}/$1.conf"
[ -f "$f" ] || {{ echo "no $f: the gateway routes no traffic to $1" >&2; exit 3; }}
cp "$f" "$f.prev"
cat > "$f.new"
mv "$f.new" "$f"
if ! nginx -t -q -e stderr; then
  mv "$f.prev" "$f"; echo "nginx rejects the new upstream: kept the old one" >&2; exit 4
fi
nginx -s reload -e stderr 2>/dev/null
"""
_GATEWAY_WORKERS = """for d in /proc/[0-9]*; do
  c=$(tr '\\0' ' ' < "$d/cmdline" 2>/dev/null) || continue
  case "$c" in "nginx: worker"*) echo "${d#/proc/}";; esac
done"""
EXEC_TIMEOUT = 30.0
PULL_TIMEOUT = 900.0


class Ops:
    """What :func:`run` needs from Docker, Compose and the gateway, for one project."""

    def __init__(self, project, release_file: str, files=None, env_file=None, profiles=None, docker: str = "docker",
                 clock=time.monotonic, sleep=time.sleep):
        self.project = project
        self.engine = compose_up.Engine(project.working_dir, project.name, files=files, profiles=profiles,
                                        docker=docker, env_file=env_file)
        self.docker = docker
        self.release_path = ensure_within(project.working_dir, release_file, "release file")
        self.clock, self.sleep = clock, sleep

    # -- containers
    def containers(self, service: str):
        return self.engine.containers().get(service) or []

    def _inspect(self, cid: str) -> dict:
        try:
            return self.engine.client.api.inspect_container(cid)
        except self.engine._errors.APIError as exc:
            raise HyHomeError(f"cannot inspect container {cid[:12]}: {exc.explanation or exc}") from None

    def container_env(self, cid: str) -> dict:
        pairs = (self._inspect(cid).get("Config") or {}).get("Env") or []
        return dict(p.split("=", 1) for p in pairs if "=" in p)

    def container_image(self, cid: str) -> str | None:
        return (self._inspect(cid).get("Config") or {}).get("Image")

    def start(self, cid: str) -> None:
        self.engine.start_container(cid)

    def stop(self, cid: str, timeout: int) -> None:
        try:
            self.engine.client.api.stop(cid, timeout=timeout)
        except self.engine._errors.NotFound:
            pass
        except self.engine._errors.APIError as exc:
            raise HyHomeError(f"the engine cannot stop container {cid[:12]}: {exc.explanation or exc}") from None

    def remove(self, cid: str) -> None:
        self.engine.remove_container(cid)

    def explain(self, service: str, why: str, container) -> str:
        return compose_up.explain(service, why, [container], self.engine.logs)

    # -- compose and images
    def _compose(self, args: list[str], env: dict, timeout: float):
        argv = self.engine.base + args
        self.engine.commands.append(argv)
        try:
            proc = procs.run(argv, env={**self.engine.env, **env}, cwd=self.project.working_dir, timeout=timeout)
        except FileNotFoundError:
            raise HyHomeError(f"{argv[0]} not found: install Docker Engine with the Compose v2 plugin") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
            raise HyHomeError(f"'{' '.join(argv[1:])}' failed (exit {proc.returncode}):\n{tail}")
        return proc

    def expected_hash(self, service: str, env: dict) -> str | None:
        """Compose's config hash of ``service`` with the release variables ``env``; checks that the
        compose files read them (the image must become the release's)."""
        try:
            config = json.loads(self._compose(["config", "--format", "json", service], env, 120.0).stdout)
            image = ((config.get("services") or {}).get(service) or {}).get("image")
        except (ValueError, AttributeError):
            raise HyHomeError(f"docker compose config gave no JSON model of service '{service}'") from None
        if env and image != next(iter(env.values())):
            key = next(iter(env))
            raise HyHomeError(f"the compose files do not read {key} for service '{service}' (its image stays "
                              f"{image}): write its image as ${{{key}:-<default>}} and read the release file "
                              "(an include's env_file)")
        for line in self._compose(["config", "--hash", service], env, 120.0).stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == service:
                return parts[1]
        return None

    def image_present(self, ref: str) -> bool:
        return self.engine.image_id(ref) is not None

    def pull(self, ref: str) -> None:
        argv = [self.docker, "pull", ref]
        self.engine.commands.append(argv)
        proc = procs.run(argv, timeout=PULL_TIMEOUT)
        if proc.returncode != 0:
            raise HyHomeError(f"cannot pull {ref}: {(proc.stderr or proc.stdout or '').strip()[-400:]}")

    def build(self, service: str, env: dict) -> None:
        self._compose(["build", service], env, compose_up.COMMAND_TIMEOUTS["build"])

    def create_beside(self, service: str, env: dict) -> None:
        self._compose(["create", "--no-recreate", "--no-build", "--pull", "never", "--scale", f"{service}=2", service],
                      env, compose_up.ACTION_TIMEOUT)

    # -- the gateway
    def _exec(self, cid: str, script: str, *args, input: str | None = None):
        argv = [self.docker, "exec", *(["-i"] if input is not None else []), cid, "sh", "-c", script, "sh", *args]
        proc = procs.run(argv, timeout=EXEC_TIMEOUT, input=input)
        if proc.returncode != 0:
            text = (proc.stderr or proc.stdout or "").strip()[-400:] or f"exit {proc.returncode}"
            raise HyHomeError(f"gateway {cid[:12]}: {text}")
        return proc.stdout

    def gateway_read(self, cid: str, service: str) -> str:
        return self._exec(cid, _GATEWAY_READ, service)

    def gateway_point(self, cid: str, service: str, line: str, drain_timeout: float) -> int:
        """Write the upstream line, reload nginx, and wait until every worker that ran before the reload
        has exited (its requests finished). Returns how many were still running at the timeout."""
        self.engine.commands.append(["docker", "exec", cid[:12], f"{service}: {line.strip()}", "nginx -s reload"])
        before = worker_pids(self._exec(cid, _GATEWAY_WORKERS))
        self._exec(cid, _GATEWAY_POINT, service, input=line)
        deadline = self.clock() + drain_timeout
        while True:
            now = worker_pids(self._exec(cid, _GATEWAY_WORKERS))
            lingering = now & before
            if now and not lingering:
                return 0
            if self.clock() >= deadline:
                return len(lingering)
            self.sleep(0.1)

    # -- the release file
    def read_release(self) -> str:
        try:
            st = os.lstat(self.release_path)
        except FileNotFoundError:
            raise HyHomeError(f"{self.release_path} does not exist: the compose files must read it "
                              "(an include's env_file); create it empty") from None
        if not stat.S_ISREG(st.st_mode):
            raise HyHomeError(f"refusing {self.release_path}: not a regular file (a symlink?)")
        with open(self.release_path, encoding="utf-8") as fh:
            return fh.read(env_file.MAX_ENV_BYTES)

    def update_release(self, values: dict[str, str]) -> None:
        """Set ``values`` in the release file, atomically, under a lock in the project's state dir: two
        rollouts at once (api and web) each re-read the file there, so neither loses the other's lines."""
        lock = os.path.join(project_context.ensure_state_dir(self.project.working_dir), "release.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            text = self.read_release()
            mode = stat.S_IMODE(os.lstat(self.release_path).st_mode)
            atomic_write(self.release_path, render_release(text, values).encode("utf-8"), mode=mode)
        finally:
            os.close(fd)
