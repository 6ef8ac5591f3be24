"""One typed model of a Compose project, computed once and read by every role.

Built from ``docker compose config --format json`` (include-resolved, interpolated: the canonical
form) plus the raw files where the raw text matters (``$VAR`` traps, env references, line numbers).
When ``docker compose config`` fails, the model is built from the raw files as far as possible and
``Project.config_error`` says why.

API (stable; other module_utils depend on it):

    load_project(project_dir, files=None, env_file=None, profiles=None, docker="docker") -> Project
    project_from_config(config: dict, project_dir, raw=None) -> Project   # pure, for unit tests
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Location:
    file: str          # absolute path of the compose file
    line: int | None   # 1-based, None when unknown


@dataclass(frozen=True)
class Mount:
    type: str                   # "bind" | "volume" | "tmpfs" | ...
    target: str                 # path inside the container
    read_only: bool
    host_path: str | None       # absolute host path: bind mounts and local-driver bind volumes
    volume: str | None = None   # named volume key (type "volume")
    create_host_path: bool = True


@dataclass(frozen=True)
class SecretRef:
    source: str                 # key in the top-level ``secrets:`` registry
    target: str                 # absolute in-container path, e.g. /run/secrets/db_password
    uid: str | None = None
    gid: str | None = None
    mode: int | None = None


@dataclass(frozen=True)
class Port:
    target: int
    published: int | None
    host_ip: str | None
    protocol: str = "tcp"


@dataclass
class Service:
    name: str
    image: str | None
    build: dict | None
    user: str | None                       # as declared (``user:``), None when not declared
    mounts: list[Mount] = field(default_factory=list)
    secrets: list[SecretRef] = field(default_factory=list)
    secret_paths_read: set[str] = field(default_factory=set)   # /run/secrets/... paths in command,
    # entrypoint, healthcheck test and *_FILE environment values
    healthcheck: dict | None = None        # None when absent; {"disable": True} when disabled
    ports: list[Port] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    network_mode: str | None = None
    restart: str | None = None
    security_opt: list[str] = field(default_factory=list)
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    pid: str | None = None
    ipc: str | None = None
    read_only: bool = False
    mem_limit: int | None = None           # bytes; mem_limit or deploy.resources.limits.memory
    environment: dict[str, str | None] = field(default_factory=dict)
    depends_on: dict[str, dict] = field(default_factory=dict)
    command: list[str] | str | None = None
    entrypoint: list[str] | str | None = None
    profiles: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    extensions: dict = field(default_factory=dict)   # ``x-hyhome`` and other ``x-*`` keys
    location: Location | None = None


@dataclass(frozen=True)
class Secret:
    name: str
    file: str | None            # absolute host path for file-based secrets
    external: bool = False
    environment: str | None = None


@dataclass(frozen=True)
class Network:
    key: str
    name: str                   # the engine-side name
    external: bool


@dataclass(frozen=True)
class EnvRef:
    name: str
    has_default: bool           # ${X:-d} / ${X-d}
    required: bool              # ${X:?msg} / ${X?msg}
    location: Location


@dataclass
class Project:
    name: str
    working_dir: str
    files: list[str]                         # every compose file, root first, then included ones
    services: dict[str, Service] = field(default_factory=dict)
    secrets: dict[str, Secret] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)
    volumes: dict[str, dict] = field(default_factory=dict)
    env_refs: list[EnvRef] = field(default_factory=list)
    config_error: str | None = None          # set when `docker compose config` failed
    source: str = "config"                   # "config" | "raw"
