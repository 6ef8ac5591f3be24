"""What a backup of a Compose project saves, and how it talks to the running stack.

Pure core of ``backup_archive`` (no AnsibleModule), on top of :mod:`backup` (the archive itself):

- :func:`data_roots`: the project's data directories (``data_dirs.derive_paths`` + ``mounts.classify``
  "data"), each with the services that write it, except those of services whose database is dumped
  (the dump stands for their data directory);
- :class:`Dump`: one logical database dump, validated (service in the project, known method, user
  name); :func:`prepare_pg_load` makes a ``pg_dumpall --clean --if-exists`` loadable with
  ``ON_ERROR_STOP`` into a cluster whose bootstrap superuser exists already;
- :class:`Compose`: the few ``docker compose`` calls a backup needs (``ps``, ``stop``, ``start``,
  ``exec``), bounded by timeouts, their errors one line without the command's input.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ansible_collections.hyhome.bootstrap.plugins.module_utils import procs
from ansible_collections.hyhome.bootstrap.plugins.module_utils.backup import Root, root_name_for
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

METHODS = ("pg_dumpall",)
ROLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def data_roots(project, dumped_services=()) -> tuple[list[Root], dict[str, list[str]]]:
    """(roots, writers by root name) for every data directory of ``project``.

    A host path is data when a service mounts it as data (see ``mounts.classify``); its writers are
    the services mounting it writable. Paths only dumped services write are left out.
    """
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.data_dirs import derive_paths

    paths, _warnings = derive_paths(project)
    roots: list[Root] = []
    writers: dict[str, list[str]] = {}
    for hp in paths:
        data = [u for u in hp.uses if u.cls == "data"]
        if not data:
            continue
        writing = sorted({u.service for u in data if not u.read_only})
        if writing and set(writing) <= set(dumped_services):
            continue
        first = data[0]
        root = Root(name=root_name_for(first.service, first.target), path=hp.path, what="data",
                    kind="file" if hp.kind == "file" else "dir", service=first.service, target=first.target,
                    optional=True)
        roots.append(root)
        writers[root.name] = writing
    return roots, writers


def data_targets(project, dumped_services=()) -> dict[str, str]:
    """Root name -> host path of every data directory of ``project`` (where a restore puts them)."""
    roots, _writers = data_roots(project, dumped_services)
    return {r.name: r.path for r in roots}


def extra_roots(project_dir: str, rel_paths) -> list[Root]:
    """Project files the compose files read but git does not keep (a release pin written by a rollout):
    one optional ``file-<slug>`` root each. Paths are relative to the project and must stay inside it."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import ensure_within

    roots: list[Root] = []
    for rel in rel_paths or []:
        rel = str(rel)
        if not rel or os.path.isabs(rel) or ".." in rel.split("/"):
            raise HyHomeError(f"extra file {rel!r} must be a path relative to the project, without '..'")
        path = ensure_within(project_dir, rel, "extra file")
        slug = re.sub(r"[^a-z0-9]+", "_", rel.lower()).strip("_") or "file"
        name = f"file-{slug}"[:128]
        if any(r.name == name for r in roots):
            raise HyHomeError(f"extra files {rel!r} and another one map to the same name {name}")
        roots.append(Root(name=name, path=path, what="file", kind="file", optional=True))
    return roots


@dataclass(frozen=True)
class Dump:
    """A logical dump of one database service."""

    service: str
    method: str = "pg_dumpall"
    user: str = "postgres"

    @property
    def member(self) -> str:
        return f"dumps/{self.service}.sql"

    def describe(self) -> dict:
        return {"service": self.service, "method": self.method, "user": self.user, "member": self.member}

    @classmethod
    def from_spec(cls, spec, services) -> Dump:
        """A Dump from a module option / manifest entry, checked against the project's services."""
        if not isinstance(spec, dict):
            raise HyHomeError(f"a dump must be a mapping (service, method, user), not {type(spec).__name__}")
        service = str(spec.get("service") or "")
        method = str(spec.get("method") or "pg_dumpall")
        user = str(spec.get("user") or "postgres")
        if not SERVICE_NAME.fullmatch(service):
            raise HyHomeError(f"dump service {service!r} is not a valid service name")
        if service not in services:
            raise HyHomeError(f"dump service {service!r} is not a service of this project "
                              f"(services: {', '.join(sorted(services)) or 'none'})")
        if method not in METHODS:
            raise HyHomeError(f"dump method {method!r} is not supported (choose from {', '.join(METHODS)})")
        if not ROLE_NAME.fullmatch(user):
            raise HyHomeError(f"dump user {user!r} is not a plain role name")
        return cls(service, method, user)

    def dump_args(self) -> list[str]:
        """``docker compose`` arguments that print the dump on stdout (consistent: one snapshot per database)."""
        return ["exec", "-T", self.service, "pg_dumpall", "-U", self.user, "--clean", "--if-exists"]

    def load_args(self) -> list[str]:
        """``docker compose`` arguments that load a dump read from stdin; stops at the first error."""
        return ["exec", "-T", self.service, "psql", "-X", "-q", "-U", self.user, "-d", "postgres",
                "-v", "ON_ERROR_STOP=1", "-f", "-"]


def prepare_pg_load(sql: bytes, superuser: str) -> bytes:
    """A ``pg_dumpall --clean --if-exists`` made loadable while connected as ``superuser``.

    pg_dumpall writes ``DROP ROLE IF EXISTS <su>;`` and ``CREATE ROLE <su>;`` for the role it ran as;
    in a cluster where that role exists (initdb made it) both fail, which ``ON_ERROR_STOP`` would
    turn into an aborted restore. Exactly those two lines are removed; the ``ALTER ROLE`` that
    follows still sets the role's attributes.
    """
    if not ROLE_NAME.fullmatch(superuser):
        raise HyHomeError(f"superuser {superuser!r} is not a plain role name")
    ident = superuser if re.fullmatch(r"[a-z_][a-z0-9_]*", superuser) else '"' + superuser + '"'
    drop = f"DROP ROLE IF EXISTS {ident};".encode()
    create = f"CREATE ROLE {ident};".encode()
    if b"-- PostgreSQL database cluster dump" not in sql[:512]:
        raise HyHomeError("the dump is not a pg_dumpall cluster dump")
    lines = sql.split(b"\n")
    return b"\n".join(line for line in lines if line.rstrip(b"\r") not in (drop, create))


def consumers(project, service: str) -> list[str]:
    """Long-running services that depend on ``service`` (stopped while its dump is loaded)."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_up import init_services

    oneshot = init_services(project)
    return sorted(n for n, s in project.services.items()
                  if service in (s.depends_on or {}) and n not in oneshot and n != service)


class Compose:
    """``docker compose`` for one project, as the loader saw it (same files, env file, profiles)."""

    def __init__(self, project, files=None, env_file=None, profiles=None, docker="docker", run=None):
        from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import compose_command

        cfg = compose_command(project.working_dir, list(files or []), env_file, profiles, docker)
        self.base = [*cfg[:-3], "-p", project.name]
        self.project_name = project.name
        self.cwd = project.working_dir
        self.env = {k: v for k, v in os.environ.items() if k not in ("COMPOSE_FILE", "COMPOSE_PROFILES")}
        self._run = run or procs.run
        self.commands: list[str] = []

    def run(self, args: list[str], timeout: float, input: bytes | None = None) -> bytes:
        """stdout of ``docker compose <args>``; a failure is one HyHomeError with stderr's last lines."""
        argv = self.base + args
        self.commands.append(" ".join(args))
        try:
            proc = self._run(argv, timeout=timeout, cwd=self.cwd, env=self.env, input=input, text=False)
        except FileNotFoundError:
            raise HyHomeError(f"{argv[0]} not found: install Docker Engine with the Compose v2 plugin") from None
        except procs.CommandTimeout as exc:
            raise HyHomeError(f"'docker compose {' '.join(args)}' did not finish within {exc.timeout:g}s") from None
        if proc.returncode != 0:
            err = (proc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
            tail = "; ".join(line.strip() for line in err[-5:] if line.strip()) or "no error output"
            raise HyHomeError(f"'docker compose {' '.join(args)}' failed (exit {proc.returncode}): {tail}")
        return proc.stdout or b""

    def running(self) -> set[str]:
        """Services of the project with a running container. Asks the engine by label, not Compose, so it
        works before ``.env`` is back (Compose refuses a project whose required variables are unset)."""
        argv = [self.base[0], "ps", "--filter", f"label=com.docker.compose.project={self.project_name}",
                "--filter", "status=running", "--format", '{{.Label "com.docker.compose.service"}}']
        try:
            proc = self._run(argv, timeout=60, cwd=self.cwd, env=self.env, text=False)
        except FileNotFoundError:
            raise HyHomeError(f"{argv[0]} not found: install Docker Engine with the Compose v2 plugin") from None
        except procs.CommandTimeout:
            raise HyHomeError("'docker ps' did not finish within 60s: is the engine responsive?") from None
        if proc.returncode != 0:
            err = (proc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
            raise HyHomeError(f"'docker ps' failed (exit {proc.returncode}): {err[-1] if err else 'no error output'}")
        return {line.strip() for line in (proc.stdout or b"").decode("utf-8", "replace").splitlines() if line.strip()}

    def stop(self, services: list[str], timeout: float = 120) -> None:
        if services:
            self.run(["stop", *services], timeout=timeout)

    def start(self, services: list[str], timeout: float = 300) -> None:
        """Start ``services`` again and wait until they are healthy."""
        if services:
            self.run(["up", "-d", "--no-deps", "--no-recreate", "--wait", *services], timeout=timeout)
