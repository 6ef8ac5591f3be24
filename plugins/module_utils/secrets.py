"""Pure core of the secrets job: which secret files a compose project needs, what each should
contain, and the smallest set of writes that gets the tree there without damaging a value.

Model (after community.crypto and DebOps ``secret``):

* The set comes from the compose model (top-level ``secrets:`` with ``file:``; consumers from each
  service's ``secrets:``) merged with an optional registry (per secret: kind, length/charset,
  owner/group/mode, consumers, persistent, optional, ...). Registry entries that carry a ``file``
  and are not in compose are managed too (e.g. the plain password an htpasswd line derives from).
* :func:`plan` reads the tree and answers, per secret, "what must happen" without writing:
  ``ok``, ``generated``, ``restored``, ``rotated``, ``rederived``, ``public-key``, ``placeholder``,
  ``permissions``. Every bad input raises :class:`HyHomeError` before anything is written.
* :func:`apply` performs a plan: history first, then atomic writes, then owner/mode fixes.

Values never leave this module except into files: results carry names, paths and actions only.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hmac
import math
import os
import re
import secrets as _secrets
import stat
import string
import uuid
from dataclasses import dataclass, field

from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
    RESOURCE_NAME_MAX,
    RESOURCE_NAME_RE,
    check_resource_name,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import (
    atomic_write,
    ensure_within,
    fsync_dir,
    own_temps,
    refuse_dangerous,
    resolve_owner,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.identity import offline_resolver
from ansible_collections.hyhome.bootstrap.plugins.module_utils.mounts import PLACEHOLDER_NAMES, classify

# Every random byte comes from the OS CSPRNG through these two (tests assert it; keys come from
# OpenSSL's CSPRNG through ``cryptography``).
_token_bytes = _secrets.token_bytes
_rng = _secrets.SystemRandom()

KINDS = ("password", "hex", "base64", "token", "uuid", "username", "htpasswd", "rsa", "ed25519", "fernet",
         "provided")
GENERATED_KINDS = ("password", "hex", "base64", "token", "uuid", "username", "rsa", "ed25519", "fernet")
HTPASSWD_SCHEMES = ("bcrypt", "apr1", "sha512_crypt")

# Defaults and floors. ``length`` means characters for password/hex and random bytes for
# base64/token; ``size`` is the RSA modulus in bits.
DEFAULT_LENGTH = {"password": 32, "hex": 64, "base64": 32, "token": 32}
MIN_LENGTH = {"password": 16, "hex": 32, "base64": 16, "token": 16}
# Ceilings keep a hostile or mistyped registry from running for minutes (``length: 100000000``):
# 4096 characters (password, hex) or random bytes (base64, token) is far past any real use.
MAX_LENGTH = 4096
MIN_PASSWORD_BITS = 80
DEFAULT_RSA_SIZE = 3072
MIN_RSA_SIZE = 2048
MAX_RSA_SIZE = 8192
DEFAULT_ROUNDS = {"bcrypt": 12, "sha512_crypt": 5000}
MIN_ROUNDS = {"bcrypt": 10, "sha512_crypt": 5000}
MAX_ROUNDS = {"bcrypt": 16, "sha512_crypt": 1_000_000}

NAMED_CHARSETS = {
    "alnum": string.ascii_letters + string.digits,
    "ascii_letters": string.ascii_letters,
    "ascii_lowercase": string.ascii_lowercase,
    "ascii_uppercase": string.ascii_uppercase,
    "digits": string.digits,
    "hexdigits": "0123456789abcdef",
    "punctuation": string.punctuation,
    "urlsafe": string.ascii_letters + string.digits + "-_",
}
DEFAULT_CHARSET = "alnum"

REGISTRY_KEYS = {
    "kind", "file", "length", "charset", "size", "source", "username", "scheme", "rounds", "owner",
    "group", "mode", "consumers", "persistent", "optional", "public_key", "public_format", "hint",
    "description",
}

# A ``username`` value: this prefix and a pronounceable random word with two digits
# (``hyhome_bakoti42``): lowercase letters and digits, starts with a letter, 15 characters; valid
# for PostgreSQL, MySQL/MariaDB, MinIO, RabbitMQ and Unix user names.
USERNAME_PREFIX = "hyhome_"
_CONSONANTS = "bdfghjklmnprstvz"
_VOWELS = "aeiou"

# What a secret name says about its kind, for names the registry gives no ``kind``. First match
# wins; the pattern is searched in the lower-cased name with ``-`` and ``.`` read as ``_``.
# ``provided`` rules come first so ``smtp_user`` is the relay's account, not a generated name.
# Internal secrets (database, cache and admin passwords, JWT and session secrets) match nothing
# and get the default kind.
_OUTSIDE_SERVICES = (
    "github|gitlab|bitbucket|gitea|google|gcp|microsoft|azure|entra|apple|facebook|twitter|linkedin|okta|"
    "auth0|slack|discord|telegram|pagerduty|opsgenie|cloudflare|aws|openai|sendgrid|mailgun|twilio|stripe|"
    "sentry|hetzner|digitalocean"
)
NAME_KIND_RULES: tuple[tuple[str, str, str], ...] = (
    # (pattern, kind, what the name signals: shown in notes and in the "supply it" warning)
    (r"webhook", "provided",
     "a webhook URL issued by the receiving service: Slack, Discord, Teams, ..."),
    (r"(^|_)smtp(_|$)", "provided",
     "a credential of the outside SMTP relay: its account name or password"),
    (r"(^|_)(oauth2?|oidc|openid)_(.+_)?(client_secret|client_id|secret)$", "provided",
     "an OAuth/OIDC client credential issued by the identity provider"),
    (rf"(^|_)({_OUTSIDE_SERVICES})_(.+_)?(client_secret|client_id|api_?key|api_?token|token|secret|"
     r"secret_access_key|access_key_id)$", "provided",
     "a credential issued by the outside service"),
    (r"._api_?key$", "provided",
     "an API key issued by the outside service it names"),
    (r"(_user|_username|_login)$", "username",
     "an account name (readable, not random characters)"),
)

# A secret name is a file name in the controller store and a key in results: one path component,
# by the rule compose names and registry names share (compose_model.check_resource_name).
NAME_PATTERN = RESOURCE_NAME_RE
NAME_MAX = RESOURCE_NAME_MAX

HISTORY_DIR = ".history"
PLACEHOLDER_PREFIX = b"hyhome-placeholder:"
FILE_MODE_SINGLE = 0o400
FILE_MODE_GROUP = 0o440
DIR_MODE = 0o700
PUBLIC_MODE = 0o444

# Actions that change a secret's content (its consumers must be recreated).
CONTENT_ACTIONS = ("generated", "restored", "rotated", "rederived", "rolled-back", "placeholder-written")


# --------------------------------------------------------------------------------------------
# Specs: what the project needs
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reader:
    """A consuming service and the identity its process has inside the container."""

    service: str
    uid: int
    gid: int | None     # None when nothing gave a group
    groups: tuple[int, ...] = ()   # numeric ``group_add`` entries
    source: str = field(default="", compare=False)   # identity.SOURCES: where uid:gid came from


@dataclass(frozen=True)
class SecretSpec:
    name: str
    path: str                       # absolute host path
    relpath: str                    # relative to the secrets dir (history / store key)
    kind: str
    origin: str                     # "compose" | "registry"
    length: int | None = None
    charset: str | None = None      # the resolved alphabet (password)
    size: int | None = None         # RSA bits
    source: str | None = None       # htpasswd: the secret holding the password
    username: str | None = None
    scheme: str | None = None
    rounds: int | None = None
    owner: object = None            # registry override (name or number)
    group: object = None
    mode: int | None = None
    consumers: tuple[str, ...] = ()
    persistent: bool = False
    optional: bool = False
    public_key: bool = True
    public_format: str = "pem"
    hint: str | None = None
    inferred: str | None = None     # what the name signals, when the kind was inferred from it

    @property
    def public_path(self) -> str | None:
        return self.path + ".pub" if self.kind in ("rsa", "ed25519") and self.public_key else None


def _as_int(name: str, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or (isinstance(value, str) and len(value) > 20):
        raise HyHomeError(f"secret {name}: {key} must be an integer, got {_shown(value)}")
    try:
        return int(value)
    except ValueError:
        raise HyHomeError(f"secret {name}: {key} must be an integer, got {_shown(value)}") from None


def parse_mode(name: str, value) -> int | None:
    """Accept 0o440, 288, "0440" or "440"; refuse modes that let other users or anyone write."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        text = str(value).strip()
        try:
            mode = int(text, 8)
        except ValueError:
            raise HyHomeError(f"secret {name}: mode {_shown(value)} is not an octal file mode such as '0440'") from None
    if mode < 0 or mode > 0o7777:
        raise HyHomeError(f"secret {name}: mode {_shown(value)} is out of range")
    if mode & 0o007:
        raise HyHomeError(f"secret {name}: mode {mode:04o} lets every user on the host read or write the secret; "
                          "use 0400 or 0440 (with a group)")
    if mode & 0o222:
        raise HyHomeError(f"secret {name}: mode {mode:04o} makes the secret writable; "
                          "secrets are read-only (0400/0440)")
    return mode


def resolve_charset(name: str, value) -> str:
    """Named set(s) or literal characters -> the sorted unique alphabet; empty is an error."""
    if value is None:
        value = DEFAULT_CHARSET
    parts = value if isinstance(value, list | tuple) else [value]
    chars: set[str] = set()
    for part in parts:
        part = str(part)
        chars.update(NAMED_CHARSETS.get(part, part))
    chars.discard("\n")
    chars.discard("\r")
    if not chars:
        raise HyHomeError(f"secret {name}: charset is empty; give characters or one of {', '.join(NAMED_CHARSETS)}")
    return "".join(sorted(chars))


def validate_name(name, where: str) -> str:
    """A secret name from a project or a registry, checked before it names any file (names become
    file names in the controller store and history keys): :func:`check_resource_name`."""
    return check_resource_name("secret", name, where)


def infer_kind(name: str) -> tuple[str, str] | None:
    """``(kind, why)`` that a secret's name signals (see NAME_KIND_RULES), or None.

    Only for names the registry gives no ``kind``: ``slack_webhook`` is ``provided`` (a random
    value would look valid and break at runtime), ``postgres_user`` a readable ``username``,
    ``postgres_password`` nothing (the default kind)."""
    key = re.sub(r"[-.]", "_", name.lower())
    for pattern, kind, why in NAME_KIND_RULES:
        if re.search(pattern, key):
            return kind, why
    return None


def _length_settings(name: str, kind: str, entry: dict) -> dict:
    """``length`` (password, hex, base64, token) with its floor; ``charset`` (password) with the
    entropy floor."""
    kw: dict = {}
    if kind in DEFAULT_LENGTH:
        length = _as_int(name, "length", entry["length"]) if entry.get("length") is not None else DEFAULT_LENGTH[kind]
        unit = "characters" if kind in ("password", "hex") else "random bytes"
        if length < MIN_LENGTH[kind]:
            raise HyHomeError(f"secret {name}: length {length} is below the floor of {MIN_LENGTH[kind]} {unit} "
                              f"for kind {kind}")
        if length > MAX_LENGTH:
            raise HyHomeError(f"secret {name}: length {length} is above the limit of {MAX_LENGTH} {unit} "
                              f"for kind {kind}")
        kw["length"] = length
    if kind == "password":
        charset = resolve_charset(name, entry.get("charset"))
        bits = kw["length"] * math.log2(len(charset)) if len(charset) > 1 else 0.0
        if bits < MIN_PASSWORD_BITS:
            raise HyHomeError(f"secret {name}: {kw['length']} characters from a {len(charset)}-character charset give "
                              f"{bits:.0f} bits of entropy, below the floor of {MIN_PASSWORD_BITS}; "
                              "make it longer or widen the charset")
        kw["charset"] = charset
    elif entry.get("charset") is not None:
        raise HyHomeError(f"secret {name}: charset applies to kind password only, not {kind}")
    return kw


def _key_settings(name: str, kind: str, entry: dict) -> dict:
    """RSA ``size`` with its floor; ``public_key`` and ``public_format`` of rsa and ed25519 keys."""
    kw: dict = {}
    if kind == "rsa":
        size = _as_int(name, "size", entry["size"]) if entry.get("size") is not None else DEFAULT_RSA_SIZE
        if size < MIN_RSA_SIZE:
            raise HyHomeError(f"secret {name}: RSA size {size} is below the floor of {MIN_RSA_SIZE} bits")
        if size > MAX_RSA_SIZE:
            raise HyHomeError(f"secret {name}: RSA size {size} is above the limit of {MAX_RSA_SIZE} bits")
        kw["size"] = size
    if kind in ("rsa", "ed25519"):
        kw["public_key"] = bool(entry.get("public_key", True))
        fmt = str(entry.get("public_format") or "pem")
        if fmt not in ("pem", "openssh"):
            raise HyHomeError(f"secret {name}: public_format must be pem or openssh, not {fmt!r}")
        kw["public_format"] = fmt
    return kw


def _htpasswd_settings(name: str, entry: dict) -> dict:
    """``source``, ``scheme``, ``username`` and ``rounds`` of an htpasswd line."""
    source = entry.get("source")
    if not source:
        raise HyHomeError(f"secret {name}: kind htpasswd needs 'source', the secret holding the password")
    scheme = str(entry.get("scheme") or "bcrypt")
    if scheme not in HTPASSWD_SCHEMES:
        raise HyHomeError(f"secret {name}: unknown htpasswd scheme {scheme!r}; choose one of "
                          f"{', '.join(HTPASSWD_SCHEMES)}")
    username = str(entry.get("username") or "admin")
    if not username or ":" in username or any(c.isspace() for c in username):
        raise HyHomeError(f"secret {name}: htpasswd username {username!r} must be non-empty, without ':' or spaces")
    rounds = entry.get("rounds")
    if rounds is not None:
        rounds = _as_int(name, "rounds", rounds)
        if scheme in MIN_ROUNDS and rounds < MIN_ROUNDS[scheme]:
            raise HyHomeError(f"secret {name}: {scheme} rounds {rounds} is below the floor of {MIN_ROUNDS[scheme]}")
        if scheme in MAX_ROUNDS and rounds > MAX_ROUNDS[scheme]:
            raise HyHomeError(f"secret {name}: {scheme} rounds {rounds} is above the limit of {MAX_ROUNDS[scheme]}")
    return {"source": validate_name(source, f"source of {name}"), "scheme": scheme, "username": username,
            "rounds": rounds if rounds is not None else DEFAULT_ROUNDS.get(scheme)}


def _spec_from(name: str, path: str, relpath: str, origin: str, entry: dict, default_kind: str,
               consumers: tuple[str, ...], persistent_default: bool = True) -> SecretSpec:
    return SecretSpec(name=name, path=path, relpath=relpath, origin=origin,
                      **_entry_fields(name, entry, default_kind, consumers, persistent_default))


def _entry_fields(name: str, entry: dict, default_kind: str, consumers: tuple[str, ...] = (),
                  persistent_default: bool = True) -> dict:
    """Every SecretSpec field a registry entry decides (kind and its settings, access, flags), each
    checked: the schema check of an entry, whether or not it ends up managing a file."""
    inferred = None if entry.get("kind") else infer_kind(name)
    kind = str(entry.get("kind") or (inferred[0] if inferred else default_kind))
    if kind not in KINDS:
        raise HyHomeError(f"secret {name}: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    kw = {**_length_settings(name, kind, entry), **_key_settings(name, kind, entry)}
    if kind == "htpasswd":
        kw.update(_htpasswd_settings(name, entry))
    if entry.get("optional") and kind != "provided":
        raise HyHomeError(f"secret {name}: optional applies to kind provided only (generated secrets always exist)")
    if entry.get("consumers") is not None:
        raw = entry["consumers"]
        if not isinstance(raw, list | tuple):
            raise HyHomeError(f"secret {name}: consumers must be a list of service names")
        consumers = tuple(str(c) for c in raw)
    return dict(
        kind=kind, owner=entry.get("owner"), group=entry.get("group"), mode=parse_mode(name, entry.get("mode")),
        consumers=tuple(sorted(set(consumers))),
        persistent=bool(entry.get("persistent", persistent_default and kind != "provided")),
        # An inferred provided secret was declared by nobody: a placeholder and a warning on every
        # run rather than a failed run. A registry `kind: provided` stops the run unless optional.
        optional=bool(entry.get("optional", kind == "provided" and inferred is not None)),
        hint=entry.get("hint") or entry.get("description") or (inferred[1] if inferred else None),
        inferred=inferred[1] if inferred else None,
        **kw,
    )


# The type each registry key takes (checked before any value is used, so a nested or aliased YAML
# structure never reaches str() or a message). Booleans also accept yes/no/true/false strings.
_INT_OR_STR = (int, str)
REGISTRY_TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,), "file": _INT_OR_STR, "length": _INT_OR_STR, "charset": (str, list), "size": _INT_OR_STR,
    "source": (str,), "username": _INT_OR_STR, "scheme": (str,), "rounds": _INT_OR_STR, "owner": _INT_OR_STR,
    "group": _INT_OR_STR, "mode": _INT_OR_STR, "consumers": (list,), "persistent": (bool, str, int),
    "optional": (bool, str, int), "public_key": (bool, str, int), "public_format": (str,), "hint": (str,),
    "description": (str,),
}
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _checked_value(name: str, key: str, value, where: str):
    """One registry value of the right type (booleans normalised), else a one-line error."""
    want = REGISTRY_TYPES[key]
    ok = isinstance(value, want) and not (isinstance(value, bool) and bool not in want)
    if ok and isinstance(value, list):
        ok = all(isinstance(v, _INT_OR_STR) and not isinstance(v, bool) for v in value)
    if not ok:
        words = {"str": "a string", "int": "an integer", "bool": "true/false"}
        names = " or ".join("a list of strings" if t is list else words[t.__name__] for t in want)
        raise HyHomeError(f"secrets registry entry {name!r} ({where}): {key} must be {names}, "
                          f"got {type(value).__name__}")
    if bool in want and not isinstance(value, bool):
        word = str(value).strip().lower()
        if word not in _BOOL_WORDS:
            raise HyHomeError(f"secrets registry entry {name!r} ({where}): {key} must be true or false, "
                              f"got {_shown(value)}")
        return _BOOL_WORDS[word]
    return value


def _shown(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _checked_registry(registry: dict | None, where: str = "secrets registry") -> dict:
    """The registry with every name checked, every entry a mapping with known keys of the right
    types only. ``where`` names the file or option the entries come from, for the messages."""
    if registry is not None and not isinstance(registry, dict):
        raise HyHomeError(f"{where} must be a mapping of secret names to entries, got {type(registry).__name__}")
    out = {}
    for name, entry in (registry or {}).items():
        validate_name(name, where)
        if entry is None:
            entry = {}
        elif not isinstance(entry, dict):
            raise HyHomeError(f"secrets registry entry {name!r} ({where}) must be a mapping, "
                              f"got {type(entry).__name__}")
        unknown = [k for k in entry if k not in REGISTRY_KEYS]
        if unknown:
            raise HyHomeError(f"secrets registry entry {name!r} ({where}): unknown key(s) "
                              f"{', '.join(sorted(k[:40] if isinstance(k, str) else _shown(k, 40) for k in unknown))}; "
                              f"allowed: {', '.join(sorted(REGISTRY_KEYS))}")
        out[name] = {k: (None if v is None else _checked_value(name, k, v, where)) for k, v in entry.items()}
    return out


def merge_registry(file_entries: dict | None, file_path: str | None, option: dict | None) -> dict:
    """The registry a run uses: the registry file's entries, the ``registry`` option winning key by
    key. Each side is checked where it was written, so an error names the file or the option."""
    merged = dict(_checked_registry(file_entries, f"registry_file {file_path}"))
    for name, entry in _checked_registry(option, "registry option").items():
        merged[name] = {**merged.get(name, {}), **entry}
    return merged


def _compose_declared(project) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Compose's file-based secrets (name -> host file) and who reads each (name -> services)."""
    files: dict[str, str] = {}
    consumers: dict[str, set[str]] = {}
    if project is None:
        return files, consumers
    for svc in project.services.values():
        for ref in svc.secrets:
            consumers.setdefault(ref.source, set()).add(svc.name)
    for name, sec in project.secrets.items():
        if sec.file and not sec.external and not sec.environment:
            files[validate_name(name, f"compose secrets: in {_declared_in(project, sec)}")] = sec.file
    return files, consumers


def _declared_in(project, sec) -> str:
    """``file:line`` of a compose secret's declaration, else the project's root compose file."""
    loc = getattr(sec, "location", None)
    if loc is not None:
        return f"{loc.file}:{loc.line}" if loc.line else loc.file
    return project.files[0] if getattr(project, "files", None) else getattr(project, "working_dir", "the project")


def _place(root: str, name: str, file: str, what: str) -> tuple[str, str]:
    """(absolute path, path relative to the secrets tree) of a secret file; refuses anything outside
    the tree, the tree itself and the history folder."""
    candidate = file if os.path.isabs(file) else os.path.join(root, file)
    path = ensure_within(root, candidate, f"secret {name} ({what})")
    if path == os.path.normpath(root):
        raise HyHomeError(f"secret {name}: its file is the secrets directory itself")
    rel = os.path.relpath(path, root)
    if rel.split(os.sep)[0] == HISTORY_DIR:
        raise HyHomeError(f"secret {name}: {path} is inside the rotation history folder")
    return path, rel


def _check_consistent(specs: list[SecretSpec]) -> None:
    """No two secrets share a file; every htpasswd line derives from a declared password-like secret."""
    seen: dict[str, str] = {}
    for spec in specs:
        for p in (spec.path, spec.public_path):
            if p is None:
                continue
            if p in seen:
                raise HyHomeError(f"secrets {seen[p]} and {spec.name} both use the file {p}")
            seen[p] = spec.name
    by_name = {s.name: s for s in specs}
    for spec in specs:
        if spec.kind != "htpasswd":
            continue
        src = by_name.get(spec.source)
        if src is None:
            raise HyHomeError(f"secret {spec.name}: its source secret {spec.source!r} is not declared in compose "
                              "nor in the registry with a file; declare it so the password exists")
        if src.kind in ("htpasswd", "rsa", "ed25519"):
            raise HyHomeError(f"secret {spec.name}: source {spec.source} is of kind {src.kind}; "
                              "an htpasswd line derives from a password-like secret")


def build_specs(project, registry: dict | None, secrets_dir: str, default_kind: str = "password",
                persistent_default: bool = True, exclude=()) -> list[SecretSpec]:
    """The secrets to manage: compose file-based secrets merged with the registry (pure, no I/O
    beyond path checks). Registry-only entries are managed when they have a ``file``.

    Without a registry ``kind``, the name may say it (:func:`infer_kind`), else ``default_kind``.
    ``persistent`` (per entry, else ``persistent_default``): the current value is recorded in the
    history so a deleted file is restored instead of silently replaced by a different value.
    ``exclude``: glob patterns (relative to the secrets dir) of files another job owns, such as the
    TLS role's ``certs/*``; matching compose secrets are left alone."""
    if default_kind not in (*GENERATED_KINDS, "provided"):
        raise HyHomeError(f"default kind {default_kind!r} is not one of {', '.join(GENERATED_KINDS)}, provided")
    registry = _checked_registry(registry)
    root = os.path.abspath(secrets_dir)
    compose_files, consumers = _compose_declared(project)

    specs: list[SecretSpec] = []
    for name, file in sorted(compose_files.items()):
        entry = registry.get(name, {})
        path, rel = _place(root, name, file, "compose file:")
        if is_excluded(rel, exclude):
            continue
        if entry.get("file") and _place(root, name, str(entry["file"]), "registry file")[0] != path:
            raise HyHomeError(f"secret {name}: the registry says file {entry['file']} but compose declares {file}; "
                              "compose is authoritative, drop 'file' from the registry entry")
        specs.append(_spec_from(name, path, rel, "compose", entry, default_kind,
                                tuple(consumers.get(name, ())), persistent_default))
    for name, entry in sorted(registry.items()):
        if name in compose_files or not entry.get("file"):
            continue
        path, rel = _place(root, name, str(entry["file"]), "registry file")
        specs.append(_spec_from(name, path, rel, "registry", entry, default_kind,
                                tuple(consumers.get(name, ())), persistent_default))
    # Entries that manage nothing (no compose secret, no file, or excluded) are schema-checked too:
    # an unknown kind or a bad length is refused, not merely listed as unused.
    managed = {s.name for s in specs}
    for name, entry in sorted(registry.items()):
        if name not in managed:
            _entry_fields(name, entry, default_kind, (), persistent_default)
    _check_consistent(specs)
    return specs


def is_excluded(relpath: str, patterns) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(relpath, p) or fnmatch.fnmatchcase(relpath, p.rstrip("/") + "/*")
               for p in patterns or ())


def excluded_secrets(project, secrets_dir: str, patterns) -> list[str]:
    """Compose secrets left to another job (reported so nobody wonders why they were skipped)."""
    if project is None or not patterns:
        return []
    root = os.path.abspath(secrets_dir)
    out = []
    for name, sec in sorted(project.secrets.items()):
        if sec.file and not sec.external and not sec.environment:
            rel = os.path.relpath(os.path.abspath(sec.file), root)
            if not rel.startswith("..") and is_excluded(rel, patterns):
                out.append(name)
    return out


def unused_registry_entries(specs: list[SecretSpec], registry: dict | None) -> list[str]:
    """Registry names that matched nothing (no compose secret, no ``file``): likely typos."""
    names = {s.name for s in specs}
    return sorted(n for n in (registry or {}) if n not in names)


# --------------------------------------------------------------------------------------------
# Who may read: owner / group / mode from the consumers
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Access:
    uid: int
    gid: int
    mode: int
    note: str | None = None


def _common_group(readers: list[Reader]) -> int | None:
    """A gid every reader has, as its primary group or through ``group_add``; primary groups
    first, and a non-root group before gid 0 (which other root-group processes also hold)."""
    shared = None
    for r in readers:
        have = set(r.groups) | ({r.gid} if r.gid is not None else set())
        shared = have if shared is None else shared & have
    if not shared:
        return None
    primaries = [r.gid for r in readers if r.gid in shared]
    return min(shared, key=lambda g: (g == 0, g not in primaries, g))


def resolve_access(spec: SecretSpec, readers: list[Reader], default_uid: int, default_gid: int,
                   shared_group: int | None) -> Access:
    """Owner/group/mode so exactly the consuming containers' users can read the file.

    Compose bind-mounts a file secret with the host file's owner and mode, so the host file must
    be readable by the uid the consumer runs as (root included: with ``cap_drop: [ALL]`` root has
    no DAC override). One reader identity -> that owner, 0400. Several uids -> a shared group, 0440.
    """
    note = None
    if spec.owner is not None or spec.group is not None:
        uid, gid = resolve_owner(spec.owner, spec.group)
        if uid == -1:
            uid = readers[0].uid if readers else default_uid
        if gid == -1:
            gid = readers[0].gid if readers and readers[0].gid is not None else default_gid
        mode = spec.mode if spec.mode is not None else (FILE_MODE_GROUP if spec.group is not None else FILE_MODE_SINGLE)
        return Access(uid, gid, mode, None)
    if not readers:
        return Access(default_uid, default_gid, spec.mode if spec.mode is not None else FILE_MODE_SINGLE, None)
    uids = sorted({r.uid for r in readers})
    common_gid = _common_group(readers)
    if len(uids) == 1:
        gid = common_gid if common_gid is not None else default_gid
        mode = spec.mode if spec.mode is not None else FILE_MODE_SINGLE
        return Access(uids[0], gid, mode, None)
    first = readers[0]
    if common_gid is not None:
        gid = common_gid
    elif shared_group is not None:
        gid = shared_group
    else:
        gid = first.gid if first.gid is not None else first.uid
    uid = first.uid
    mode = spec.mode if spec.mode is not None else FILE_MODE_GROUP
    who = ", ".join(f"{r.service} (uid {r.uid})" for r in readers)
    note = f"consumers run as different users: {who}; owner {uid}, group {gid}, mode {mode:04o}"
    blocked = [r.service for r in readers if r.uid != uid and r.gid != gid and gid not in r.groups]
    if blocked:
        note += f"; {', '.join(blocked)} must run with group_add: ['{gid}'] to read it"
    return Access(uid, gid, mode, note)


def readers_for(spec: SecretSpec, project, identities, default: tuple[int, int] | None = None) -> list[Reader]:
    """The consumers of ``spec`` with the uid:gid each runs as (``identities``: an
    IdentityResolver). ``default`` replaces an identity nothing resolved. Sorted by service name,
    unresolved ones last, so a reader whose user is known owns a shared file."""
    out = []
    services = project.services if project is not None else {}
    for name in spec.consumers:
        svc = services.get(name)
        if svc is None:
            if project is not None:
                raise HyHomeError(f"secret {spec.name}: consumer {name!r} is not a service of the compose project")
            continue   # no project: the registry's consumers are names only
        ident = identities.service(svc)
        uid, gid = default if default is not None and ident.source == "unresolved" else (ident.uid, ident.gid)
        out.append(Reader(name, uid, gid, ident.groups, ident.source))
    return sorted(out, key=lambda r: (r.source == "unresolved", r.service))


def data_held_by_consumers(spec: SecretSpec, project, secrets_dir: str | None = None) -> list[str]:
    """The data directories of ``spec``'s consumers that already hold files ("service:path"),
    i.e. where a value generated anew would not match what the data was made with.

    Only real data counts (``mounts.classify`` == "data": writable, not tracked by git, not a file
    nor declared config): the dashboards or provisioning a fresh clone ships are not data. Nor is
    the secrets tree (``secrets_dir``) when a consumer mounts it or a directory above it: what this
    job wrote, in an earlier or a failed run, is never the consumer's data."""
    if project is None:
        return []
    ours = os.path.normpath(os.path.abspath(secrets_dir)) if secrets_dir else None
    held = []
    for name in spec.consumers:
        svc = project.services.get(name)
        for m in svc.mounts if svc is not None else ():
            if (m.host_path and os.path.isdir(m.host_path) and classify(project, svc, m) == "data"
                    and _holds_files(m.host_path, ours)):
                held.append(f"{name}:{m.host_path}")
    return sorted(set(held))


def _holds_files(path: str, ours: str | None = None) -> bool:
    """Anything in the directory but the placeholders a repository keeps empty directories with,
    and but the tree ``ours`` (the secrets directory) and the directories leading to it."""
    path = os.path.normpath(os.path.abspath(path))
    if ours is not None and (path == ours or path.startswith(ours.rstrip("/") + "/")):
        return False
    try:
        with os.scandir(path) as it:
            for e in it:
                if e.name in PLACEHOLDER_NAMES:
                    continue
                if ours is not None and ours.startswith(e.path + "/") and e.is_dir(follow_symlinks=False):
                    if _holds_files(e.path, ours):
                        return True
                    continue
                if ours is not None and e.path == ours:
                    continue
                return True
    except OSError:
        return False
    return False


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------

def _require_cryptography(kind: str):
    try:
        from cryptography.hazmat.primitives import serialization  # noqa: F401
    except ImportError:
        raise HyHomeError(f"kind {kind} needs the Python 'cryptography' package on the host that runs the module "
                          "(Debian: apt-get install python3-cryptography)") from None


def generate_value(spec: SecretSpec) -> bytes:
    """A fresh value for a generated kind (never for provided/htpasswd)."""
    kind = spec.kind
    if kind == "password":
        return "".join(_rng.choice(spec.charset) for _ in range(spec.length)).encode()
    if kind == "hex":
        return _token_bytes((spec.length + 1) // 2).hex()[: spec.length].encode()
    if kind == "base64":
        return base64.b64encode(_token_bytes(spec.length))
    if kind == "token":
        return base64.urlsafe_b64encode(_token_bytes(spec.length)).rstrip(b"=")
    if kind == "uuid":
        return str(uuid.UUID(bytes=_token_bytes(16), version=4)).encode()
    if kind == "username":
        return readable_username().encode()
    if kind == "fernet":
        # Exactly what cryptography's Fernet.generate_key() returns: 32 random bytes, urlsafe base64.
        return base64.urlsafe_b64encode(_token_bytes(32))
    if kind in ("rsa", "ed25519"):
        _require_cryptography(kind)
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

        key = (rsa.generate_private_key(public_exponent=65537, key_size=spec.size) if kind == "rsa"
               else ed25519.Ed25519PrivateKey.generate())
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    raise HyHomeError(f"secret {spec.name}: kind {kind} is not generated")


def readable_username() -> str:
    """``hyhome_`` + three random consonant-vowel syllables + two digits (``hyhome_bakoti42``):
    readable in logs and configs, valid wherever an account name is (not a secret, so no entropy
    floor; still drawn from the CSPRNG)."""
    word = "".join(_rng.choice(_CONSONANTS) + _rng.choice(_VOWELS) for _ in range(3))
    return f"{USERNAME_PREFIX}{word}{_rng.choice(string.digits)}{_rng.choice(string.digits)}"


def public_key_bytes(private_pem: bytes, fmt: str = "pem") -> bytes | None:
    """The public key of a PEM private key, or None when it does not parse."""
    _require_cryptography("rsa/ed25519")
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError):
        return None
    pub = key.public_key()
    if fmt == "openssh":
        return pub.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n"
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def password_of(value: bytes) -> str:
    """The password a consumer reads from a secret file: trailing newline(s) dropped, as
    ``$(< file)`` and most ``*_FILE`` readers do."""
    return value.decode("utf-8", "surrogateescape").rstrip("\r\n")


def _passlib_handler(scheme: str):
    try:
        from passlib import hash as ph
    except ImportError:
        return None
    return {"bcrypt": ph.bcrypt, "apr1": ph.apr_md5_crypt, "sha512_crypt": ph.sha512_crypt}[scheme]


def _bcrypt_backend_ok(handler) -> bool:
    try:
        return bool(handler.has_backend())
    except Exception:
        return False


def _crypt_module():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            return None
    return crypt


def hash_password(password: str, scheme: str, rounds: int | None) -> str:
    """A salted hash in htpasswd form. passlib does it; bcrypt falls back to the system crypt(3)
    (libxcrypt) when passlib has no bcrypt backend."""
    handler = _passlib_handler(scheme)
    if scheme == "bcrypt" and (handler is None or not _bcrypt_backend_ok(handler)):
        crypt = _crypt_module()
        if crypt is None or not hasattr(crypt, "METHOD_BLOWFISH"):
            raise HyHomeError("htpasswd bcrypt needs passlib with the 'bcrypt' package (Debian: apt-get install "
                              "python3-passlib python3-bcrypt)")
        salt = crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2 ** (rounds or DEFAULT_ROUNDS["bcrypt"]))
        salt = "$2y$" + salt[4:]
        out = crypt.crypt(password, salt)
        if not out or not out.startswith("$2"):
            raise HyHomeError("the system crypt(3) cannot make bcrypt hashes; install python3-bcrypt")
        return out
    if handler is None:
        raise HyHomeError(f"htpasswd {scheme} needs passlib (pip: libpass; Debian: apt-get install python3-passlib)")
    if scheme == "bcrypt":
        return handler.using(rounds=rounds, ident="2y").hash(password)
    if scheme == "sha512_crypt":
        return handler.using(rounds=rounds).hash(password)
    return handler.hash(password)


def verify_password(password: str, hashed: str) -> bool:
    """Does the stored hash still match the password (salt kept, so no false change)?"""
    if hashed.startswith("$apr1$"):
        scheme = "apr1"
    elif hashed.startswith("$6$"):
        scheme = "sha512_crypt"
    elif hashed.startswith(("$2a$", "$2b$", "$2y$")):
        scheme = "bcrypt"
    else:
        return False
    handler = _passlib_handler(scheme)
    try:
        if scheme == "bcrypt" and (handler is None or not _bcrypt_backend_ok(handler)):
            crypt = _crypt_module()
            if crypt is None:
                return False
            out = crypt.crypt(password, hashed)
            return bool(out) and hmac.compare_digest(out, hashed)
        if handler is None:
            return False
        return bool(handler.verify(password, hashed))
    except (ValueError, TypeError):
        return False


def htpasswd_scheme_of(hashed: str) -> str | None:
    if hashed.startswith("$apr1$"):
        return "apr1"
    if hashed.startswith("$6$"):
        return "sha512_crypt"
    if hashed.startswith(("$2a$", "$2b$", "$2y$")):
        return "bcrypt"
    return None


def htpasswd_update(current: bytes | None, username: str, password: str, scheme: str,
                    rounds: int | None) -> bytes | None:
    """New htpasswd content with ``username``'s line (re)hashed, or None when the current line
    still verifies with the same scheme. Other users' lines are kept as they are."""
    lines = (current or b"").decode("utf-8", "surrogateescape").splitlines()
    for line in lines:
        user, sep, hashed = line.partition(":")
        if sep and user == username:
            if htpasswd_scheme_of(hashed) == scheme and verify_password(password, hashed):
                return None
            break
    new_line = f"{username}:{hash_password(password, scheme, rounds)}"
    out, replaced = [], False
    for line in lines:
        if line.partition(":")[0] == username and ":" in line:
            if not replaced:
                out.append(new_line)
                replaced = True
            continue
        out.append(line)
    if not replaced:
        out.append(new_line)
    return ("\n".join(out) + "\n").encode("utf-8", "surrogateescape")


def placeholder_value(name: str) -> bytes:
    return PLACEHOLDER_PREFIX + name.encode() + b"\n"


def is_placeholder(value: bytes | None) -> bool:
    return bool(value) and value.startswith(PLACEHOLDER_PREFIX)


# --------------------------------------------------------------------------------------------
# Reading the tree
# --------------------------------------------------------------------------------------------

@dataclass
class Current:
    exists: bool                 # a regular, non-empty file
    value: bytes | None
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None
    empty_dir: bool = False      # Docker created a directory where the file was missing
    empty_file: bool = False


def read_current(spec_name: str, path: str) -> Current:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Current(False, None)
    except NotADirectoryError:
        raise HyHomeError(f"secret {spec_name}: a parent of {path} is a file, not a directory") from None
    if stat.S_ISLNK(st.st_mode):
        raise HyHomeError(f"secret {spec_name}: {path} is a symlink to {os.readlink(path)}; secret files must be "
                          "regular files inside the secrets tree (replace the link with the file)")
    if stat.S_ISDIR(st.st_mode):
        if not os.listdir(path):
            return Current(False, None, empty_dir=True)
        raise HyHomeError(f"secret {spec_name}: {path} is a non-empty directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise HyHomeError(f"secret {spec_name}: {path} is not a regular file")
    refuse_hard_link(spec_name, path, st)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        value = fh.read()
    if not value.strip():
        return Current(False, None, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), empty_file=True)
    return Current(True, value, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))


def refuse_hard_link(spec_name: str, path: str, st: os.stat_result) -> None:
    """A secret file with other names (hard links) shares its inode with a file that may sit outside
    the secrets tree: giving it the container's owner and mode would give them to that file too."""
    if st.st_nlink > 1:
        raise HyHomeError(f"secret {spec_name}: {path} has {st.st_nlink} hard links, so it is the same file as "
                          "another name that may be outside the secrets tree and would get the container's owner "
                          "and mode; replace it with a copy of its own (cp, then mv over it)")


def check_secrets_dir(secrets_dir: str, project_dir: str | None) -> str:
    """The secrets tree, refused when it lies in the project but a symlink (the directory itself or
    any component between the project and it) makes it resolve outside the project: the project
    must not point its secrets, and the owners and modes given to them, elsewhere."""
    root = os.path.normpath(os.path.abspath(secrets_dir))
    if not project_dir:
        return root
    proj = os.path.normpath(os.path.abspath(project_dir))
    if root != proj and not root.startswith(proj.rstrip("/") + "/"):
        return root   # chosen by the inventory, not by the project
    real, proj_real = os.path.realpath(root), os.path.realpath(proj)
    if real != proj_real and not real.startswith(proj_real.rstrip("/") + "/"):
        raise HyHomeError(f"refusing secrets directory {root}: a symlink makes it resolve to {real}, outside the "
                          f"project {proj}; replace the link with a directory, or set secrets_dir to {real} if "
                          "that tree is meant to hold the secrets")
    return root


def history_dir(secrets_dir: str, relpath: str) -> str:
    return os.path.join(secrets_dir, HISTORY_DIR, relpath)


def history_entries(secrets_dir: str, relpath: str) -> list[str]:
    """History files of a secret, oldest first (names are sortable UTC timestamps)."""
    d = history_dir(secrets_dir, relpath)
    try:
        names = [n for n in os.listdir(d) if not n.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [os.path.join(d, n) for n in sorted(names)]


def latest_current(entries: list[str]) -> str | None:
    """The newest history record of a value that was in use (``-current``), if any."""
    for path in reversed(entries):
        if path.rsplit("-", 1)[-1].split(".")[0] == "current":
            return path
    return None


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------

@dataclass
class Item:
    """What happens to one secret. ``value``/``public``/``history`` are written by apply() and
    never returned: :meth:`report` is the only view that leaves the core."""

    spec: SecretSpec
    action: str                          # content action, or "ok"
    access: Access
    permissions: bool = False            # owner/mode drift to fix
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    value: bytes | None = None           # new content (None: keep)
    public: bytes | None = None          # new public key content
    history: list[tuple[str, bytes]] = field(default_factory=list)   # (file name, value)
    remove_empty_dir: bool = False
    final_value: bytes | None = None     # value after apply (for derivations; never reported)
    same_as_in_use: bool = False         # rewritten with the value the consumers already use
    readers: list[Reader] = field(default_factory=list)   # consumers and the uid:gid each runs as

    def keep(self, stamp: str, why: str, value: bytes) -> None:
        """Queue a history record; names sort in the order they were queued."""
        self.history.append((f"{stamp}-{len(self.history) + 1}-{why}", value))

    @property
    def changed(self) -> bool:
        return self.action != "ok" or self.permissions or self.public is not None or bool(self.history)

    @property
    def pending(self) -> bool:
        """A provided secret that holds (or will hold) its placeholder: a person must supply it."""
        return self.spec.kind == "provided" and is_placeholder(self.final_value)

    @property
    def content_changed(self) -> bool:
        """The consumers will read a different value (their containers must be recreated)."""
        return self.value is not None and self.action in CONTENT_ACTIONS and not self.same_as_in_use

    def report(self) -> dict:
        out = {
            "name": self.spec.name, "path": self.spec.path, "kind": self.spec.kind, "action": self.action,
            "owner": self.access.uid, "group": self.access.gid, "mode": f"{self.access.mode:04o}",
            "consumers": list(self.spec.consumers), "permissions_fixed": self.permissions,
        }
        if self.readers:
            out["readers"] = [{"service": r.service, "uid": r.uid, "gid": r.gid, "source": r.source}
                              for r in self.readers]
        if self.spec.inferred:
            out["kind_inferred"] = self.spec.inferred
        if self.public is not None:
            out["public_key"] = self.spec.public_path
        if self.history:
            out["history"] = [s for s, _ in self.history]
        notes = list(self.notes)
        if self.access.note:
            notes.append(self.access.note)
        if notes:
            out["notes"] = notes
        return out


@dataclass
class Plan:
    secrets_dir: str
    items: list[Item]
    dirs_to_create: list[str]
    dirs_to_restrict: list[tuple[str, int]]     # (path, new mode)
    stale_temps: list[str]                      # our own temp files a killed writer left (paths)
    warnings: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)   # paths apply() has written or changed so far

    @property
    def changed(self) -> bool:
        return bool(self.dirs_to_create or self.dirs_to_restrict or self.stale_temps
                    or any(i.changed for i in self.items))

    def recreate_services(self) -> list[str]:
        """Services reading a secret whose content changed in this run."""
        return sorted({c for i in self.items if i.content_changed for c in i.spec.consumers})

    def results(self) -> list[dict]:
        return [i.report() for i in self.items]

    def provided_pending(self) -> list[dict]:
        """Provided secrets still holding a placeholder: what a person must supply, and where."""
        return [{"name": i.spec.name, "path": i.spec.path, "consumers": list(i.spec.consumers),
                 "hint": i.spec.hint or "", "inferred": bool(i.spec.inferred)}
                for i in self.items if i.pending]

    def diff(self) -> dict:
        """Names and actions only, never values."""
        before, after = [], []
        for i in self.items:
            if not i.changed:
                continue
            state = "present" if i.action in ("ok", "rotated", "rederived", "rolled-back") else "absent or empty"
            before.append(f"{i.spec.name}: {state}")
            what = [i.action] if i.action != "ok" else []
            if i.permissions:
                what.append(f"owner {i.access.uid}:{i.access.gid} mode {i.access.mode:04o}")
            if i.public is not None:
                what.append("public key written")
            if i.history:
                what.append("history: " + ", ".join(s for s, _ in i.history))
            after.append(f"{i.spec.name}: {'; '.join(what)}")
        for d in self.dirs_to_create:
            before.append(f"{d}/: absent")
            after.append(f"{d}/: created {DIR_MODE:04o}")
        for d, mode in self.dirs_to_restrict:
            before.append(f"{d}/: readable by others")
            after.append(f"{d}/: mode {mode:04o}")
        for t in self.stale_temps:
            before.append(f"{t}: temp file left by an interrupted run")
            after.append(f"{t}: removed")
        return {"before": "\n".join(before) + ("\n" if before else ""),
                "after": "\n".join(after) + ("\n" if after else ""),
                "before_header": "secrets (names and actions only)", "after_header": "secrets (names and actions only)"}


def missing_provided(specs: list[SecretSpec], seed=None, currents=None) -> list[SecretSpec]:
    """Provided, non-optional secrets with no value on disk nor in ``seed`` (read-only; preflight
    can call it to list them before anything runs)."""
    seed = seed or {}
    out = []
    for s in specs:
        if s.kind != "provided" or s.optional or seed.get(s.name):
            continue
        cur = (currents or {}).get(s.name) or read_current(s.name, s.path)
        if not cur.exists:
            out.append(s)
    return out


def pending_provided(specs: list[SecretSpec], seed=None) -> list[SecretSpec]:
    """Provided secrets without a real value yet (no file, an empty one, or a placeholder) that
    ``seed`` does not fill: a person must supply them (read-only, for preflight;
    :func:`pending_message` says what to do)."""
    seed = seed or {}
    out = []
    for s in specs:
        if s.kind != "provided" or seed.get(s.name):
            continue
        cur = read_current(s.name, s.path)
        if not cur.exists or is_placeholder(cur.value):
            out.append(s)
    return out


def describe_missing(specs: list[SecretSpec]) -> list[str]:
    """One line per missing provided secret: name, hint, the file to put it in, who reads it."""
    lines = []
    for s in specs:
        users = f", read by {', '.join(s.consumers)}" if s.consumers else ""
        hint = f" ({' '.join(s.hint.split())})" if s.hint else ""
        lines.append(f"{s.name}{hint}: put the value in {s.path}{users}")
    return lines


def _stamp(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y%m%dT%H%M%S.%fZ")


def pending_message(spec: SecretSpec) -> str:
    """The warning for a provided secret that still holds its placeholder: what a person must
    supply, where to write it and which services fail until then."""
    readers = f" ({', '.join(spec.consumers)} fail until then)" if spec.consumers else ""
    msg = (f"{spec.name} holds a placeholder, not a working value. A person must supply it "
           f"({spec.hint or 'the real value'}) and write it to {spec.path}{readers}.")
    if spec.inferred:
        msg += (" The kind provided was inferred from the name; if the stack can generate the value, give it a "
                "kind in the secrets registry.")
    return msg


@dataclass
class _Run:
    """The inputs every decision of one :func:`plan` reads."""

    secrets_dir: str
    project: object
    identities: object                  # an IdentityResolver
    seed: dict
    rotate: frozenset
    restore: frozenset
    default_uid: int
    default_gid: int
    shared_gid: int | None
    rotate_to_seed: bool = False
    stamp: str = field(default_factory=_stamp)

    def seeded(self, name: str) -> bytes | None:
        """The controller store's value of ``name``, if it holds one."""
        value = self.seed.get(name)
        return _seed_bytes(value) if value else None

    def history(self, spec: SecretSpec) -> list[str]:
        return history_entries(self.secrets_dir, spec.relpath)


def plan(specs: list[SecretSpec], secrets_dir: str, project=None, *, rotate=(), restore=(), seed=None,
         default_owner=0, default_group=0, shared_group=None, manage_dir_modes: bool = True,
         identities=None, project_dir: str | None = None, rotate_to_seed: bool = False) -> Plan:
    """Decide everything (reading only). Raises HyHomeError for any bad input, listing every
    missing provided secret at once.

    ``identities`` answers which uid:gid each consumer runs as (an IdentityResolver; default: one
    that never asks an engine). ``default_owner``/``default_group`` own secrets nobody reads and
    stand in for consumers whose identity nothing resolves. ``project_dir`` (default: the
    project's) bounds where a secrets tree inside it may resolve to (:func:`check_secrets_dir`).
    ``rotate_to_seed``: a rotated or restored secret takes its ``seed`` value, the one the first host of a
    shared controller store moved to, instead of its own (so every host of the stack moves to one value)."""
    secrets_dir = os.path.abspath(secrets_dir)
    refuse_dangerous(secrets_dir, "secrets directory")
    check_secrets_dir(secrets_dir, project_dir or getattr(project, "working_dir", None))
    default_uid, default_gid = (0 if v == -1 else v for v in resolve_owner(default_owner, default_group))
    shared_gid = resolve_owner(None, shared_group)[1] if shared_group not in (None, "") else None
    identities = identities if identities is not None else offline_resolver()
    known_warnings = len(identities.warnings)
    run = _Run(secrets_dir, project, identities, dict(seed or {}), frozenset(rotate or ()), frozenset(restore or ()),
               default_uid, default_gid, shared_gid, rotate_to_seed)
    _check_requests(specs, list(rotate or ()), list(restore or ()))
    # Read every file first: symlinks, directories and other bad paths fail before any write.
    currents = {s.name: read_current(s.name, s.path) for s in specs}
    _refuse_missing_provided(specs, run.seed, currents)
    _refuse_lost_persistent(specs, currents, run)

    items: dict[str, Item] = {}
    # Sources before derived secrets, so a derived value follows a source generated in this run.
    for s in sorted(specs, key=lambda s: (s.kind == "htpasswd", s.name)):
        items[s.name] = _decide(s, currents[s.name], items, run)
    ordered = [items[s.name] for s in specs]
    create, restrict = _plan_dirs(specs, ordered, secrets_dir, manage_dir_modes)
    warnings = [w for i in ordered for w in i.warnings] + identities.warnings[known_warnings:]
    return Plan(secrets_dir, ordered, create, restrict, _stale_temps(specs, secrets_dir), warnings)


def _check_requests(specs: list[SecretSpec], rotate: list[str], restore: list[str]) -> None:
    """Rotate and restore name managed secrets that can be rotated or restored, not both at once."""
    by_name = {s.name: s for s in specs}
    errors = []
    for what, names in (("rotate", rotate), ("restore", restore)):
        for n in names:
            if n not in by_name:
                errors.append(f"{what}: {n!r} is not a managed secret (known: {', '.join(sorted(by_name)) or 'none'})")
            elif by_name[n].kind == "provided":
                errors.append(f"{what}: {n} is a provided secret; a person rotates it by replacing "
                              f"{by_name[n].path}")
            elif by_name[n].kind == "htpasswd" and what == "rotate":
                errors.append(f"rotate: {n} is derived from {by_name[n].source}; rotate {by_name[n].source} instead")
    both = set(rotate) & set(restore)
    if both:
        errors.append(f"{', '.join(sorted(both))}: cannot rotate and restore in the same run")
    if errors:
        raise HyHomeError("; ".join(errors))


def _refuse_missing_provided(specs: list[SecretSpec], seed: dict, currents: dict) -> None:
    """Provided secrets that are required and have no value stop the run before any write."""
    missing = missing_provided(specs, seed, currents)
    if missing:
        raise HyHomeError(
            f"{len(missing)} provided secret(s) missing; only a person can supply them, nothing was "
            "changed: " + "; ".join(describe_missing(missing))
            + ". Write each value to its file (one line, no trailing newline needed), or mark the secret "
              "optional: true in the secrets registry to get a placeholder.")


def _lost_for_good(s: SecretSpec, cur: Current, run: _Run) -> bool:
    """A persistent generated secret that is gone with nothing to bring it back (no controller store
    value, no history) and that nobody asked to rotate."""
    return (s.persistent and s.kind != "provided" and not cur.exists and run.seeded(s.name) is None
            and s.name not in run.rotate and latest_current(run.history(s)) is None)


def _refuse_lost_persistent(specs: list[SecretSpec], currents: dict, run: _Run) -> None:
    """A lost persistent secret whose consumers already hold data made with the old value is refused
    rather than replaced by a new value that would lock them out."""
    refused = []
    for s in specs:
        if not _lost_for_good(s, currents[s.name], run):
            continue
        holders = data_held_by_consumers(s, run.project, run.secrets_dir)
        if holders:
            refused.append(
                f"{s.name} is missing and has no history to restore it from, but its consumers already hold "
                f"data keyed to the old value ({', '.join(holders)}); a new value would lock them out. "
                f"Put the old value back in {s.path} (backup or controller store), or, to start that "
                f"data afresh on purpose, empty the directories listed")
    if refused:
        raise HyHomeError("refusing to generate a different value for a persistent secret, nothing was changed: "
                          + "; ".join(refused))


def _decide(s: SecretSpec, cur: Current, items: dict, run: _Run) -> Item:
    """What happens to one secret: its access, its content (exactly one of the cases below), then
    its public key and owner/mode drift, which are fixed apart from the content."""
    default = (run.default_uid, run.default_gid)
    readers = readers_for(s, run.project, run.identities, default)
    access = resolve_access(s, readers, run.default_uid, run.default_gid, run.shared_gid)
    item = Item(s, "ok", access, remove_empty_dir=cur.empty_dir, readers=readers)
    hist = run.history(s)
    if s.kind == "htpasswd":
        _derive_htpasswd(item, cur, hist, items[s.source], run)
    elif s.name in run.rotate:
        _rotate(item, cur, run)
    elif s.name in run.restore:
        _roll_back(item, cur, hist, run)
    elif _usable(s, cur):
        _keep_present(item, cur, hist, run)
    else:
        _fill_missing(item, cur, hist, run)
    item.final_value = item.value if item.value is not None else cur.value
    item.public = _public_key_to_write(s, item.final_value)
    item.permissions = (item.value is None and cur.exists
                        and (cur.uid, cur.gid, cur.mode) != (access.uid, access.gid, access.mode))
    if item.pending:
        item.warnings.append(pending_message(s))
        if item.action == "ok":
            item.notes.append("placeholder: the real value is still missing")
    return item


def _usable(s: SecretSpec, cur: Current) -> bool:
    """A value is on disk that stays. A placeholder stays only while the secret is provided: a
    secret the registry now says is generated gets a real value in its place."""
    return cur.exists and not (s.kind in GENERATED_KINDS and is_placeholder(cur.value))


def _why_missing(s: SecretSpec, cur: Current) -> str:
    if cur.empty_dir:
        return "was an empty directory (Docker creates one when a secret file is missing)"
    if cur.empty_file:
        return "was empty"
    if cur.exists:
        return f"held a placeholder (it is of kind {s.kind} now, no longer provided)"
    return "was missing"


def _derive_htpasswd(item: Item, cur: Current, hist: list[str], src: Item, run: _Run) -> None:
    """The line ``username:hash`` of the source's value: kept while it verifies (no new salt), brought
    back from the store or history when deleted, re-derived when the source changed."""
    s = item.spec
    if not src.final_value or is_placeholder(src.final_value):
        raise HyHomeError(f"secret {s.name}: its source {s.source} has no value ({src.action}); "
                          f"put one in {src.spec.path}")
    base, origin = (cur.value, None) if cur.exists else (None, None)
    if base is None and run.seeded(s.name) is not None:
        base, origin = run.seeded(s.name), "the controller store"
    elif base is None and s.persistent and latest_current(hist):
        base, origin = _read(latest_current(hist)), "the history"
    new = htpasswd_update(base, s.username, password_of(src.final_value), s.scheme, s.rounds)
    if new is None and origin is not None:
        # The stored line still matches its source: bring it back instead of re-salting.
        item.value = base
        item.action = "restored"
        item.notes.append(f"was missing; restored from {origin} (still matches {s.source})")
    elif new is not None:
        item.value = new
        item.action = "rederived" if cur.exists else "generated"
        if cur.exists:
            item.keep(run.stamp, "rederived-out", cur.value)
            item.notes.append(f"{s.username}'s line no longer matched {s.source} (or its scheme changed)")
        if s.persistent:
            item.keep(run.stamp, "current", new)


def _stored_new_value(item: Item, cur: Current, run: _Run, what: str) -> bytes:
    """With ``rotate_to_seed``: the value the first host of the shared store moved to (rotated or rolled
    back) and stored; the store still holding the current value (or none) is an error."""
    seeded = run.seeded(item.spec.name)
    if seeded is None or seeded == cur.value:
        raise HyHomeError(f"{what}: {item.spec.name}: the controller store holds no new value to move to (the "
                          "first host of the store did not change it); nothing was changed")
    item.notes.append("the value the first host of the shared controller store moved to")
    return seeded


def _rotate(item: Item, cur: Current, run: _Run) -> None:
    """A new value on request (or, with ``rotate_to_seed``, the store's); the old one goes to the history first."""
    if run.rotate_to_seed:
        item.value = _stored_new_value(item, cur, run, "rotate")
    else:
        item.value = generate_value(item.spec)
    if cur.exists:
        item.action = "rotated"
        item.keep(run.stamp, "rotated-out", cur.value)
    else:
        item.action = "generated"
    if item.spec.persistent:
        item.keep(run.stamp, "current", item.value)


def _roll_back(item: Item, cur: Current, hist: list[str], run: _Run) -> None:
    """The newest value in the history that differs from the current one (or, with ``rotate_to_seed``,
    the store's, which a rebuilt host without that history needs); the current one is kept."""
    s = item.spec
    if run.rotate_to_seed:
        item.value = _stored_new_value(item, cur, run, "restore")
    else:
        previous = None
        for path in reversed(hist):
            old = _read(path)
            if old.strip() and old != cur.value:
                previous = (path, old)
                break
        if previous is None:
            raise HyHomeError(f"restore: {s.name} has no earlier value in its history "
                              f"({history_dir(run.secrets_dir, s.relpath)})")
        item.value = previous[1]
        item.notes.append(f"value restored from {os.path.basename(previous[0])}")
    item.action = "rolled-back"
    if cur.exists:
        item.keep(run.stamp, "rolled-back-out", cur.value)
    if s.persistent:
        item.keep(run.stamp, "current", item.value)


def _keep_present(item: Item, cur: Current, hist: list[str], run: _Run) -> None:
    """An existing value is never overwritten: only a controller-store value replaces a placeholder, a
    different store value is reported, and a persistent value in use is recorded in the history once."""
    s = item.spec
    seeded = run.seeded(s.name)
    if seeded is not None and is_placeholder(cur.value):
        item.value = seeded
        item.action = "restored"
        item.notes.append("placeholder replaced by the value from the controller store")
    elif seeded is not None and seeded != cur.value:
        item.warnings.append(f"{s.name}: the value on this host differs from the controller store; the host's "
                             "value was kept (never overwritten). Decide which is right and remove the other.")
    if s.persistent and s.kind != "provided" and item.value is None:
        last = latest_current(hist)
        if last is None or _read(last) != cur.value:
            item.keep(run.stamp, "current", cur.value)
            item.notes.append("persistent: the value in use was recorded in the history so a deleted file "
                              "is restored, not replaced")


def _fill_missing(item: Item, cur: Current, hist: list[str], run: _Run) -> None:
    """No usable value: the controller store's, else the history's (persistent secrets), else a
    placeholder (provided secrets), else a new one."""
    s = item.spec
    why = _why_missing(s, cur)
    seeded = run.seeded(s.name)
    latest = latest_current(hist) if s.persistent else None
    if seeded is not None:
        item.value = seeded
        item.action = "restored"
        item.notes.append(f"{why}; value restored from the controller store")
        last = latest_current(hist)
        item.same_as_in_use = last is not None and _read(last) == item.value
        if s.persistent and not item.same_as_in_use:
            item.keep(run.stamp, "current", item.value)   # else the next run records it: a change
    elif latest is not None:
        item.value = _read(latest)
        item.action = "restored"
        item.same_as_in_use = True   # "-current" records the value in use
        msg = (f"{why}; it is persistent (its consumer holds data keyed to it), so the value was restored "
               f"from history {os.path.basename(latest)} instead of generating a different one")
        item.notes.append(msg)
        item.warnings.append(f"{s.name}: {msg}")
    elif s.kind == "provided":
        item.value = placeholder_value(s.name)
        item.action = "placeholder-written"
    else:
        item.value = generate_value(s)
        item.action = "generated"
        if cur.exists:
            item.notes.append(f"{why}; a value was generated in its place")
        if hist:
            item.warnings.append(
                f"{s.name} {why} and was generated anew; earlier values are kept in "
                f"{history_dir(run.secrets_dir, s.relpath)} (mark it persistent: true to restore instead, or "
                f"run with restore: [{s.name}] to roll back)")
        if s.persistent:
            item.keep(run.stamp, "current", item.value)
    if cur.empty_dir:
        item.notes.append(f"removed the empty directory Docker had created at {s.path}")


def _public_key_to_write(s: SecretSpec, private: bytes | None) -> bytes | None:
    """The public key file's content when it is missing or no longer matches the private key."""
    if not s.public_path or private is None:
        return None
    want = public_key_bytes(private, s.public_format)
    if want is None:
        raise HyHomeError(f"secret {s.name}: {s.path} does not hold a PEM private key")
    pub_cur = read_current(s.name + ".pub", s.public_path)
    return want if not pub_cur.exists or pub_cur.value != want else None


def _plan_dirs(specs: list[SecretSpec], items: list[Item], secrets_dir: str,
               manage_dir_modes: bool) -> tuple[list[str], list[tuple[str, int]]]:
    """Directories to create (the secrets dir, parents of files, the history) and existing ones
    that still give other users access."""
    dirs = {secrets_dir}
    for s in specs:
        d = os.path.dirname(s.path)
        while d.startswith(secrets_dir) and d not in dirs:
            dirs.add(d)
            d = os.path.dirname(d)
    hist_root = os.path.join(secrets_dir, HISTORY_DIR)
    if any(i.history for i in items) or os.path.lexists(hist_root):
        dirs.add(hist_root)
    for s in specs:   # history is written there: no symlinked component may lead out of the tree
        ensure_within(secrets_dir, history_dir(secrets_dir, s.relpath), f"history folder of secret {s.name}")
    create, restrict = [], []
    for d in sorted(dirs):
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            create.append(d)
            continue
        if stat.S_ISLNK(st.st_mode) and d != secrets_dir:
            ensure_within(secrets_dir, d, "secrets sub-directory")
        if not stat.S_ISDIR(os.stat(d).st_mode):
            raise HyHomeError(f"{d} is not a directory")
        mode = stat.S_IMODE(os.stat(d).st_mode)
        if manage_dir_modes and mode & 0o007:
            restrict.append((d, mode & ~0o007))
    return create, restrict


def _stale_temps(specs: list[SecretSpec], secrets_dir: str) -> list[str]:
    """Our own temp files (fileops.own_temps: unmistakably named) a killed writer left next to
    secret files and in their history folders; nobody else's file is ever taken for one."""
    temps: set[str] = set()
    for s in specs:
        d = os.path.dirname(s.path)
        base = os.path.basename(s.path)
        for b in (base, base + ".pub"):
            temps.update(os.path.join(d, n) for n in own_temps(d, b))
        hd = history_dir(secrets_dir, s.relpath)
        temps.update(os.path.join(hd, n) for n in own_temps(hd))
    return sorted(temps)


def _seed_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------------------------
# Applying
# --------------------------------------------------------------------------------------------

def _makedirs(path: str) -> bool:
    """Create ``path`` (and missing parents) 0700; True when it was created."""
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        _makedirs(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return False
    os.chmod(path, DIR_MODE)
    fsync_dir(parent)
    return True


def _write_history(secrets_dir: str, relpath: str, suffix: str, value: bytes) -> str:
    d = history_dir(secrets_dir, relpath)
    if not os.path.isdir(d):
        _makedirs(d)
    path = os.path.join(d, suffix)
    n = 1
    while os.path.exists(path):
        path = os.path.join(d, f"{suffix}.{n}")
        n += 1
    atomic_write(path, value, 0o400, *((0, 0) if os.geteuid() == 0 else (-1, -1)))
    return path


def apply(p: Plan) -> None:
    """Perform a plan. Order per secret: history (old value kept) -> atomic write -> public key
    -> owner/mode. A crash between steps leaves complete files only and is finished by a re-run.

    ``p.written`` lists every path written or changed so far, so a failure part-way can say what
    it already did (the module reports it with ``changed: true``)."""
    done = p.written
    for d in p.dirs_to_create:
        if _makedirs(d):
            done.append(d + "/")
    for d, mode in p.dirs_to_restrict:
        os.chmod(d, mode)
        done.append(d + "/")
    for t in p.stale_temps:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(t)
            done.append(t)
    hist_root = os.path.join(p.secrets_dir, HISTORY_DIR)
    st = _lstat(hist_root)
    if st is not None and stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) != DIR_MODE:
        os.chmod(hist_root, DIR_MODE)
    root = os.geteuid() == 0
    for item in p.items:
        s, a = item.spec, item.access
        uid, gid = (a.uid, a.gid) if root else (-1, -1)
        for suffix, value in item.history:
            done.append(_write_history(p.secrets_dir, s.relpath, suffix, value))
        if item.value is not None:
            if item.remove_empty_dir:
                os.rmdir(s.path)
            atomic_write(s.path, item.value, a.mode, uid, gid)
            done.append(s.path)
        elif item.permissions:
            _fix_access(s.name, s.path, a, root)
            done.append(s.path)
        if item.public is not None:
            atomic_write(s.public_path, item.public, PUBLIC_MODE, uid, gid)
            done.append(s.public_path)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _fix_access(name: str, path: str, a: Access, root: bool) -> None:
    """Owner and mode of an existing secret file, set through a descriptor of the very file that
    was checked: never through a symlink, never on an inode with another name (hard link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except PermissionError:   # not root and not readable: check the name, then chmod by name
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise HyHomeError(f"secret {name}: {path} is no longer a regular file") from None
        refuse_hard_link(name, path, st)
        os.chmod(path, a.mode)
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HyHomeError(f"secret {name}: {path} is no longer a regular file")
        refuse_hard_link(name, path, st)
        if root:
            os.fchown(fd, a.uid, a.gid)
        os.fchmod(fd, a.mode)
    finally:
        os.close(fd)
