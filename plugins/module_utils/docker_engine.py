"""Docker Engine set-up, pure part: merge and validate ``/etc/docker/daemon.json``, parse versions.

No AnsibleModule here, no I/O except what the caller hands in: the modules
(``docker_daemon_config``, ``docker_engine_info``) read the files and run the commands.

daemon.json merge rules (:func:`merge`):

- the user's keys we do not manage are kept as they are, in their order;
- a wanted key replaces the user's value, except that two mappings are merged key by key
  (``log-opts``: the user's ``tag`` survives next to our ``max-size``/``max-file``);
- when the log driver changes, the old driver's ``log-opts`` are dropped (they belong to the other
  driver, and dockerd refuses options a driver does not know);
- lists (``default-address-pools``, ``registry-mirrors``) are replaced as a whole.

A file that is not a JSON object raises :class:`DaemonConfigError` and nothing is written.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

MAX_BYTES = 1024 * 1024   # a daemon.json larger than this is not one


class DaemonConfigError(HyHomeError):
    """daemon.json (existing or wanted) is unusable; the message says where and why."""


# --------------------------------------------------------------------------------------------
# Versions

_VERSION_RE = re.compile(r"(?<![\w.])v?(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?(?![\d])")


def parse_version(text) -> tuple[int, ...] | None:
    """The first dotted version in ``text``, as a tuple of ints; None when there is none.

    Reads the outputs of ``docker version``, ``dockerd --version`` and ``docker compose version``
    as well as bare versions: 'Docker version 20.10.24+dfsg1, build 5d6db84' -> (20, 10, 24),
    '26.1.5+dfsg1' -> (26, 1, 5), 'Docker Compose version v2.26.1' -> (2, 26, 1),
    '2.26.1-4' -> (2, 26, 1). A lone number ('2', 'build 5') is not a version.
    """
    if not isinstance(text, str) or len(text) > 4096:
        return None
    m = _VERSION_RE.search(text)
    if not m:
        return None
    return tuple(int(p) for p in m.groups() if p is not None)


def version_text(version: tuple[int, ...] | None) -> str:
    return ".".join(str(p) for p in version) if version else "unknown"


def _padded(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    n = max(len(a), len(b))
    return a + (0,) * (n - len(a)), b + (0,) * (n - len(b))


def at_least(have, minimum) -> bool:
    """True when version ``have`` (text or tuple) is >= ``minimum``.

    An unreadable ``minimum`` is a configuration error (raises); an unreadable ``have`` is False.
    """
    want = minimum if isinstance(minimum, tuple) else parse_version(str(minimum))
    if not want:
        raise HyHomeError(f"minimum version {minimum!r} is not a version such as '20.10'")
    got = have if isinstance(have, tuple) else parse_version(have)
    if not got:
        return False
    a, b = _padded(got, want)
    return a >= b


def check_minimum(what: str, have, minimum) -> str | None:
    """None when ``have`` satisfies ``minimum``, else the one-line problem for a person."""
    if at_least(have, minimum):
        return None
    got = have if isinstance(have, tuple) else parse_version(have)
    if not got:
        return f"{what}: cannot read a version from {str(have)[:80]!r}; {minimum} or later is needed"
    shown = have.strip()[:80] if isinstance(have, str) else version_text(got)
    return f"{what} {shown} is older than the supported minimum {minimum}"


# --------------------------------------------------------------------------------------------
# daemon.json

_SIZE_RE = re.compile(r"[1-9][0-9]*[kmg]?")

# Keys whose type we check (dockerd's own names). Other keys are kept and reported as unchecked:
# dockerd itself (``dockerd --validate`` where it exists) is the judge of those.
_STR, _BOOL, _INT, _LIST, _DICT = "string", "boolean", "integer", "list", "object"
KNOWN_KEYS = {
    "log-driver": _STR, "log-opts": _DICT, "live-restore": _BOOL, "default-address-pools": _LIST,
    "registry-mirrors": _LIST, "insecure-registries": _LIST, "storage-driver": _STR, "storage-opts": _LIST,
    "data-root": _STR, "dns": _LIST, "dns-search": _LIST, "dns-opts": _LIST, "debug": _BOOL,
    "experimental": _BOOL, "log-level": _STR, "max-concurrent-downloads": _INT,
    "max-concurrent-uploads": _INT, "mtu": _INT, "userland-proxy": _BOOL, "iptables": _BOOL,
    "ip6tables": _BOOL, "ip-forward": _BOOL, "ip-masq": _BOOL, "ipv6": _BOOL, "bip": _STR,
    "fixed-cidr": _STR, "fixed-cidr-v6": _STR, "default-gateway": _STR, "features": _DICT,
    "exec-opts": _LIST, "labels": _LIST, "hosts": _LIST, "default-ulimits": _DICT, "runtimes": _DICT,
    "default-runtime": _STR, "icc": _BOOL, "no-new-privileges": _BOOL, "selinux-enabled": _BOOL,
    "userns-remap": _STR, "shutdown-timeout": _INT, "init": _BOOL, "group": _STR, "pidfile": _STR,
    "builder": _DICT, "containerd": _STR, "cgroup-parent": _STR, "default-cgroupns-mode": _STR,
    "proxies": _DICT, "metrics-addr": _STR, "tls": _BOOL, "tlsverify": _BOOL,
}
_PY_TYPES = {_STR: (str,), _BOOL: (bool,), _LIST: (list,), _DICT: (dict,)}

# Keys whose change dockerd applies on SIGHUP (no restart). Anything else needs a restart.
RELOADABLE = frozenset({"debug", "labels", "live-restore", "max-concurrent-downloads", "max-concurrent-uploads",
                        "registry-mirrors", "insecure-registries", "shutdown-timeout", "features",
                        "default-runtime", "runtimes"})


def _type_ok(value, kind: str) -> bool:
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, _PY_TYPES[kind])


def parse(text, source: str = "daemon.json") -> dict:
    """The existing file's content as a dict. Empty (or whitespace only) is ``{}``.

    Raises DaemonConfigError naming line and column for malformed JSON, and for any top level that
    is not an object."""
    if text is None:
        return {}
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise DaemonConfigError(f"{source} is larger than {MAX_BYTES} bytes: not a daemon configuration")
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DaemonConfigError(f"{source} is not UTF-8 text; fix or remove it, then re-run") from None
    if not text.strip():
        return {}

    def _no_duplicates(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise DaemonConfigError(f"{source}: key {key!r} appears twice; keep one, then re-run")
            seen[key] = value
        return seen

    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise DaemonConfigError(f"{source} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                                f"{exc.msg}); fix it by hand, then re-run: it was left untouched") from None
    except RecursionError:
        raise DaemonConfigError(f"{source} nests too deeply to be a daemon configuration") from None
    if not isinstance(data, dict):
        raise DaemonConfigError(f"{source} must hold a JSON object ({{...}}), not a JSON {_json_kind(data)}; "
                                "fix it by hand, then re-run: it was left untouched")
    return data


def _json_kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", type(None): "null"}.get(type(value), type(value).__name__)


def wanted_config(*, log_driver: str = "json-file", log_max_size: str | None = "10m",
                  log_max_file: int | None = 3, live_restore: bool | None = True,
                  default_address_pools=None, registry_mirrors=None, settings=None) -> dict:
    """The keys we manage, in dockerd's names. None (or an empty list) leaves a key unmanaged."""
    out: dict = {}
    if log_driver:
        out["log-driver"] = log_driver
        opts = {}
        if log_max_size not in (None, ""):
            opts["max-size"] = str(log_max_size)
        if log_max_file not in (None, ""):
            opts["max-file"] = str(log_max_file)
        if opts:
            out["log-opts"] = opts
    if live_restore is not None:
        out["live-restore"] = bool(live_restore)
    if default_address_pools:
        out["default-address-pools"] = [dict(p) if isinstance(p, dict) else p for p in default_address_pools]
    if registry_mirrors:
        out["registry-mirrors"] = list(registry_mirrors)
    for key, value in (settings or {}).items():
        out[str(key)] = value
    return out


def merge(existing: dict, wanted: dict) -> dict:
    """``existing`` with ``wanted`` merged in (see the module docstring); neither input is modified."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in existing.items()}
    driver_changes = "log-driver" in wanted and existing.get("log-driver", "json-file") != wanted["log-driver"]
    for key, value in wanted.items():
        old = out.get(key)
        if key == "log-opts" and driver_changes:
            out[key] = dict(value)
        elif isinstance(value, dict) and isinstance(old, dict):
            out[key] = merge(old, value)
        else:
            out[key] = value
    if driver_changes and "log-opts" not in wanted:
        out.pop("log-opts", None)
    return out


def _check_pools(pools, errors: list[str]) -> None:
    for i, pool in enumerate(pools):
        where = f"default-address-pools[{i}]"
        if not isinstance(pool, dict):
            errors.append(f"{where} must be an object with 'base' and 'size', not a {_json_kind(pool)}")
            continue
        extra = sorted(set(pool) - {"base", "size"})
        if extra:
            errors.append(f"{where} has unknown keys {', '.join(extra)} (only 'base' and 'size')")
        base, size = pool.get("base"), pool.get("size")
        if not isinstance(base, str):
            errors.append(f"{where}.base must be a CIDR string such as '172.80.0.0/16'")
            continue
        try:
            # host bits are accepted, as dockerd does ('172.17.0.0/12' is a common spelling of 172.16.0.0/12)
            net = ipaddress.ip_network(base, strict=False)
        except ValueError as exc:
            errors.append(f"{where}.base {base!r} is not a valid CIDR network ({exc})")
            continue
        if "/" not in base:
            errors.append(f"{where}.base {base!r} needs a prefix length, such as '{base}/16'")
            continue
        if not isinstance(size, int) or isinstance(size, bool):
            errors.append(f"{where}.size must be an integer prefix length (such as 24)")
            continue
        if not net.prefixlen <= size <= net.max_prefixlen:
            errors.append(f"{where}.size {size} must be between the base's prefix length {net.prefixlen} "
                          f"and {net.max_prefixlen}")


def _check_mirrors(mirrors, errors: list[str]) -> None:
    for i, url in enumerate(mirrors):
        where = f"registry-mirrors[{i}]"
        if not isinstance(url, str):
            errors.append(f"{where} must be a URL string")
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            errors.append(f"{where} {url!r} must be an http:// or https:// URL with a host")
        elif parts.username or parts.password:
            errors.append(f"{where} must not carry credentials in its URL (use `docker login`)")
        elif any(c.isspace() for c in url):
            errors.append(f"{where} {url!r} contains whitespace")


def validate(config: dict) -> list[str]:
    """Every problem in ``config`` (empty when it is usable). Unknown keys are not problems."""
    errors: list[str] = []
    if not isinstance(config, dict):
        return [f"the configuration must be a JSON object, not a {_json_kind(config)}"]
    for key, value in config.items():
        kind = KNOWN_KEYS.get(key)
        if kind and not _type_ok(value, kind):
            errors.append(f"{key} must be a JSON {kind}, not a {_json_kind(value)}")
    opts = config.get("log-opts")
    if isinstance(opts, dict):
        for k, v in opts.items():
            if not isinstance(v, str):
                errors.append(f"log-opts.{k} must be a string (dockerd reads log options as strings), "
                              f"not a {_json_kind(v)}")
        if isinstance(opts.get("max-size"), str) and not _SIZE_RE.fullmatch(opts["max-size"]):
            errors.append(f"log-opts.max-size {opts['max-size']!r} must be a size such as '10m' (k, m or g)")
        if isinstance(opts.get("max-file"), str) and not re.fullmatch(r"[1-9][0-9]*", opts["max-file"]):
            errors.append(f"log-opts.max-file {opts['max-file']!r} must be a positive whole number")
    if isinstance(config.get("log-driver"), str) and not re.fullmatch(r"[A-Za-z0-9][\w.:/-]*", config["log-driver"]):
        errors.append(f"log-driver {config['log-driver']!r} is not a driver name")
    if isinstance(config.get("default-address-pools"), list):
        _check_pools(config["default-address-pools"], errors)
    if isinstance(config.get("registry-mirrors"), list):
        _check_mirrors(config["registry-mirrors"], errors)
    return errors


def unchecked_keys(config: dict) -> list[str]:
    """Keys this module does not know the type of (kept; dockerd judges them)."""
    return [k for k in config if k not in KNOWN_KEYS]


def render(config: dict) -> str:
    return json.dumps(config, indent=2, ensure_ascii=False) + "\n"


@dataclass
class Plan:
    """What writing the merged configuration would do."""

    before: dict
    after: dict
    text: str                                   # the file content to write (when changed)
    changed: bool
    changed_keys: list[str] = field(default_factory=list)
    restart_needed: bool = False                # a changed key dockerd only reads at start
    reload_needed: bool = False                 # every changed key is applied by SIGHUP
    unchecked: list[str] = field(default_factory=list)


def plan(existing_text, wanted: dict, source: str = "daemon.json") -> Plan:
    """Merge ``wanted`` into the existing file's text and validate the result.

    ``existing_text`` None means no file. Changed only when the *content* differs (a file formatted
    differently but equal as JSON is left as it is). Raises DaemonConfigError for a malformed
    existing file or a result that would not be valid; the caller then writes nothing."""
    before = parse(existing_text, source)
    problems = validate(wanted)
    if problems:
        raise DaemonConfigError("the wanted daemon settings are invalid: " + "; ".join(problems))
    after = merge(before, wanted)
    problems = validate(after)
    if problems:
        raise DaemonConfigError(f"merged into {source}, the result would be invalid: " + "; ".join(problems)
                                + f". Fix {source} by hand; it was left untouched")
    changed_keys = sorted(k for k in set(before) | set(after) if before.get(k, _MISSING) != after.get(k, _MISSING))
    changed = existing_text is None or bool(changed_keys)
    restart = any(k not in RELOADABLE for k in changed_keys)
    return Plan(before=before, after=after, text=render(after), changed=changed, changed_keys=changed_keys,
                restart_needed=restart, reload_needed=bool(changed_keys) and not restart,
                unchecked=unchecked_keys(after))


_MISSING = object()


# --------------------------------------------------------------------------------------------
# The host's own Debian mirror (for fetching Debian 13's Compose v2 package on Debian 12)

def _one_line_entries(text: str):
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line[4:])    # options: [signed-by=... arch=...]
        parts = line.split()
        if len(parts) >= 2:
            yield parts[0], [parts[1]], parts[2:]


def _deb822_entries(text: str):
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        last = None
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and last:
                fields[last] += " " + line.strip()
                continue
            if ":" in line:
                last, _sep, value = line.partition(":")
                last = last.strip().lower()
                fields[last] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            yield uri, fields.get("suites", "").split(), fields.get("components", "").split()


def debian_mirror(sources, codename: str) -> str | None:
    """The Debian archive URI the host's own apt sources use for ``codename`` (its release), or None.

    ``sources``: (file name, text) pairs from /etc/apt/sources.list and sources.list.d, one-line
    (``*.list``) or deb822 (``*.sources``) format. Only an entry whose suites include the release itself
    (not ``-security``/``-updates`` only) and whose components include ``main`` counts: that is a full
    Debian mirror, which also carries the next release."""
    for name, text in sources:
        entries = _deb822_entries(text) if name.endswith(".sources") else _one_line_entries(text)
        for uri, suites, components in entries:
            if codename in suites and "main" in components and urlsplit(uri).scheme in ("http", "https"):
                return uri.rstrip("/")
    return None
