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
import dataclasses
import datetime
import hmac
import math
import os
import secrets as _secrets
import stat
import string
import uuid
from dataclasses import dataclass, field

from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import (
    atomic_write,
    ensure_within,
    fsync_dir,
    refuse_dangerous,
    remove_stale_temps,
    resolve_owner,
)

# Every random byte comes from the OS CSPRNG through these two (tests assert it; keys come from
# OpenSSL's CSPRNG through ``cryptography``).
_token_bytes = _secrets.token_bytes
_rng = _secrets.SystemRandom()

KINDS = ("password", "hex", "base64", "token", "uuid", "htpasswd", "rsa", "ed25519", "fernet", "provided")
GENERATED_KINDS = ("password", "hex", "base64", "token", "uuid", "rsa", "ed25519", "fernet")
HTPASSWD_SCHEMES = ("bcrypt", "apr1", "sha512_crypt")

# Defaults and floors. ``length`` means characters for password/hex and random bytes for
# base64/token; ``size`` is the RSA modulus in bits.
DEFAULT_LENGTH = {"password": 32, "hex": 64, "base64": 32, "token": 32}
MIN_LENGTH = {"password": 16, "hex": 32, "base64": 16, "token": 16}
MIN_PASSWORD_BITS = 80
DEFAULT_RSA_SIZE = 3072
MIN_RSA_SIZE = 2048
DEFAULT_ROUNDS = {"bcrypt": 12, "sha512_crypt": 5000}
MIN_ROUNDS = {"bcrypt": 10, "sha512_crypt": 5000}

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
    gid: int | None     # None when ``user:`` gave no group
    groups: tuple[int, ...] = ()   # numeric ``group_add`` entries


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

    @property
    def public_path(self) -> str | None:
        return self.path + ".pub" if self.kind in ("rsa", "ed25519") and self.public_key else None


def _as_int(name: str, key: str, value) -> int:
    if isinstance(value, bool):
        raise HyHomeError(f"secret {name}: {key} must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise HyHomeError(f"secret {name}: {key} must be an integer, got {value!r}") from None


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
            raise HyHomeError(f"secret {name}: mode {value!r} is not an octal file mode such as '0440'") from None
    if mode < 0 or mode > 0o7777:
        raise HyHomeError(f"secret {name}: mode {value!r} is out of range")
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


def _spec_from(name: str, path: str, relpath: str, origin: str, entry: dict, default_kind: str,
               consumers: tuple[str, ...], persistent_default: bool = True) -> SecretSpec:
    kind = str(entry.get("kind") or default_kind)
    if kind not in KINDS:
        raise HyHomeError(f"secret {name}: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    kw: dict = {}
    if kind in DEFAULT_LENGTH:
        length = _as_int(name, "length", entry["length"]) if entry.get("length") is not None else DEFAULT_LENGTH[kind]
        if length < MIN_LENGTH[kind]:
            unit = "characters" if kind in ("password", "hex") else "random bytes"
            raise HyHomeError(f"secret {name}: length {length} is below the floor of {MIN_LENGTH[kind]} {unit} "
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
    if kind == "rsa":
        size = _as_int(name, "size", entry["size"]) if entry.get("size") is not None else DEFAULT_RSA_SIZE
        if size < MIN_RSA_SIZE:
            raise HyHomeError(f"secret {name}: RSA size {size} is below the floor of {MIN_RSA_SIZE} bits")
        kw["size"] = size
    if kind in ("rsa", "ed25519"):
        kw["public_key"] = bool(entry.get("public_key", True))
        fmt = str(entry.get("public_format") or "pem")
        if fmt not in ("pem", "openssh"):
            raise HyHomeError(f"secret {name}: public_format must be pem or openssh, not {fmt!r}")
        kw["public_format"] = fmt
    if kind == "htpasswd":
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
        kw.update(source=str(source), scheme=scheme, username=username,
                  rounds=rounds if rounds is not None else DEFAULT_ROUNDS.get(scheme))
    if entry.get("optional") and kind != "provided":
        raise HyHomeError(f"secret {name}: optional applies to kind provided only (generated secrets always exist)")
    if entry.get("consumers") is not None:
        raw = entry["consumers"]
        if not isinstance(raw, list | tuple):
            raise HyHomeError(f"secret {name}: consumers must be a list of service names")
        consumers = tuple(str(c) for c in raw)
    return SecretSpec(
        name=name, path=path, relpath=relpath, kind=kind, origin=origin,
        owner=entry.get("owner"), group=entry.get("group"), mode=parse_mode(name, entry.get("mode")),
        consumers=tuple(sorted(set(consumers))),
        persistent=bool(entry.get("persistent", persistent_default and kind != "provided")),
        optional=bool(entry.get("optional", False)), hint=entry.get("hint") or entry.get("description"),
        **kw,
    )


def build_specs(project, registry: dict | None, secrets_dir: str, default_kind: str = "password",
                persistent_default: bool = True, exclude=()) -> list[SecretSpec]:
    """The secrets to manage: compose file-based secrets merged with the registry (pure, no I/O
    beyond path checks). Registry-only entries are managed when they have a ``file``.

    ``persistent`` (per entry, else ``persistent_default``): the current value is recorded in the
    history so a deleted file is restored instead of silently replaced by a different value.
    ``exclude``: glob patterns (relative to the secrets dir) of files another job owns, such as the
    TLS role's ``certs/*``; matching compose secrets are left alone."""
    registry = dict(registry or {})
    if default_kind not in (*GENERATED_KINDS, "provided"):
        raise HyHomeError(f"default kind {default_kind!r} is not one of {', '.join(GENERATED_KINDS)}, provided")
    root = os.path.abspath(secrets_dir)
    for name, entry in registry.items():
        if entry is None:
            registry[name] = {}
        elif not isinstance(entry, dict):
            raise HyHomeError(f"secrets registry entry {name!r} must be a mapping, got {type(entry).__name__}")
        unknown = set(registry[name]) - REGISTRY_KEYS
        if unknown:
            raise HyHomeError(f"secrets registry entry {name!r}: unknown key(s) {', '.join(sorted(unknown))}; "
                              f"allowed: {', '.join(sorted(REGISTRY_KEYS))}")

    consumers: dict[str, set[str]] = {}
    compose_files: dict[str, str] = {}
    if project is not None:
        for svc in project.services.values():
            for ref in svc.secrets:
                consumers.setdefault(ref.source, set()).add(svc.name)
        for name, sec in project.secrets.items():
            if sec.file and not sec.external and not sec.environment:
                compose_files[name] = sec.file

    def place(name: str, file: str, what: str) -> tuple[str, str]:
        candidate = file if os.path.isabs(file) else os.path.join(root, file)
        path = ensure_within(root, candidate, f"secret {name} ({what})")
        if path == os.path.normpath(root):
            raise HyHomeError(f"secret {name}: its file is the secrets directory itself")
        rel = os.path.relpath(path, root)
        if rel.split(os.sep)[0] == HISTORY_DIR:
            raise HyHomeError(f"secret {name}: {path} is inside the rotation history folder")
        return path, rel

    specs: list[SecretSpec] = []
    for name, file in sorted(compose_files.items()):
        entry = registry.get(name, {})
        path, rel = place(name, file, "compose file:")
        if is_excluded(rel, exclude):
            continue
        if entry.get("file"):
            other, _ = place(name, str(entry["file"]), "registry file")
            if other != path:
                raise HyHomeError(f"secret {name}: the registry says file {entry['file']} but compose declares {file}; "
                                  "compose is authoritative, drop 'file' from the registry entry")
        specs.append(_spec_from(name, path, rel, "compose", entry, default_kind,
                                tuple(consumers.get(name, ())), persistent_default))
    for name, entry in sorted(registry.items()):
        if name in compose_files or not entry.get("file"):
            continue
        path, rel = place(name, str(entry["file"]), "registry file")
        specs.append(_spec_from(name, path, rel, "registry", entry, default_kind,
                                tuple(consumers.get(name, ())), persistent_default))

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
        if spec.kind == "htpasswd":
            src = by_name.get(spec.source)
            if src is None:
                raise HyHomeError(f"secret {spec.name}: its source secret {spec.source!r} is not declared in compose "
                                  "nor in the registry with a file; declare it so the password exists")
            if src.kind in ("htpasswd", "rsa", "ed25519"):
                raise HyHomeError(f"secret {spec.name}: source {spec.source} is of kind {src.kind}; "
                                  "an htpasswd line derives from a password-like secret")
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

def parse_user(service: str, user: str | None, default_uid: int) -> Reader:
    """``user:`` of a service -> its numeric identity. Names other than root only exist in the
    image, so they cannot be resolved on the host: the registry must give the owner then."""
    if user is None or str(user).strip() == "":
        return Reader(service, default_uid, None)
    text = str(user).strip()
    u, _, g = text.partition(":")

    def num(part: str, what: str) -> int:
        if part == "root":
            return 0
        if part.isdigit():
            return int(part)
        raise HyHomeError(f"service {service} runs as {what} {part!r} (user: {text}), a name only its image knows; "
                          f"use a numeric user: in compose or set owner/group in the secrets registry")

    return Reader(service, num(u, "user"), num(g, "group") if g else None)


@dataclass(frozen=True)
class Access:
    uid: int
    gid: int
    mode: int
    note: str | None = None


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
    gids = {r.gid for r in readers}
    common_gid = next(iter(gids)) if len(gids) == 1 and None not in gids else None
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


def readers_for(spec: SecretSpec, project, default_uid: int) -> list[Reader]:
    out = []
    services = project.services if project is not None else {}
    for name in spec.consumers:
        svc = services.get(name)
        if svc is None and project is not None:
            raise HyHomeError(f"secret {spec.name}: consumer {name!r} is not a service of the compose project")
        reader = parse_user(name, svc.user if svc is not None else None, default_uid)
        if svc is not None:
            reader = dataclasses.replace(reader, groups=tuple(int(g) for g in svc.group_add if str(g).isdigit()))
        out.append(reader)
    return sorted(out, key=lambda r: r.service)


def data_held_by_consumers(spec: SecretSpec, project) -> list[str]:
    """The writable bind-mounted directories of ``spec``'s consumers that already hold data
    ("service:path"), i.e. where a value generated anew would not match what the data was made with."""
    if project is None:
        return []
    held = []
    for name in spec.consumers:
        svc = project.services.get(name)
        for m in svc.mounts if svc is not None else ():
            if m.read_only or not m.host_path or not os.path.isdir(m.host_path):
                continue
            try:
                with os.scandir(m.host_path) as it:
                    if next(it, None) is not None:
                        held.append(f"{name}:{m.host_path}")
            except OSError:
                continue
    return sorted(set(held))


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
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        value = fh.read()
    if not value.strip():
        return Current(False, None, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), empty_file=True)
    return Current(True, value, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))


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


def _is_temp(name: str) -> bool:
    """A temp file atomic_write left behind when its writer was killed."""
    return name.startswith(".") and ".tmp" in name


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

    def keep(self, stamp: str, why: str, value: bytes) -> None:
        """Queue a history record; names sort in the order they were queued."""
        self.history.append((f"{stamp}-{len(self.history) + 1}-{why}", value))

    @property
    def changed(self) -> bool:
        return self.action != "ok" or self.permissions or self.public is not None or bool(self.history)

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
    stale_temp_dirs: list[tuple[str, str | None]]   # (dir, base or None for a history dir) with
    # leftovers of a crashed writer
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.dirs_to_create or self.dirs_to_restrict or self.stale_temp_dirs
                    or any(i.changed for i in self.items))

    def recreate_services(self) -> list[str]:
        """Services reading a secret whose content changed in this run."""
        return sorted({c for i in self.items if i.content_changed for c in i.spec.consumers})

    def results(self) -> list[dict]:
        return [i.report() for i in self.items]

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


def describe_missing(specs: list[SecretSpec]) -> list[str]:
    """One line per missing provided secret: name, hint, the file to put it in, who reads it."""
    lines = []
    for s in specs:
        users = f", read by {', '.join(s.consumers)}" if s.consumers else ""
        hint = f" ({s.hint})" if s.hint else ""
        lines.append(f"{s.name}{hint}: put the value in {s.path}{users}")
    return lines


def _stamp(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y%m%dT%H%M%S.%fZ")


def plan(specs: list[SecretSpec], secrets_dir: str, project=None, *, rotate=(), restore=(), seed=None,
         default_owner=0, default_group=0, shared_group=None, manage_dir_modes: bool = True) -> Plan:
    """Decide everything (reading only). Raises HyHomeError for any bad input, listing every
    missing provided secret at once."""
    secrets_dir = os.path.abspath(secrets_dir)
    refuse_dangerous(secrets_dir, "secrets directory")
    seed = dict(seed or {})
    default_uid, default_gid = resolve_owner(default_owner, default_group)
    default_uid = 0 if default_uid == -1 else default_uid
    default_gid = 0 if default_gid == -1 else default_gid
    shared_gid = resolve_owner(None, shared_group)[1] if shared_group not in (None, "") else None
    by_name = {s.name: s for s in specs}
    rotate, restore = list(rotate or []), list(restore or [])

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

    # Read every file first: symlinks, directories and other bad paths fail before any write.
    currents = {s.name: read_current(s.name, s.path) for s in specs}
    missing = missing_provided(specs, seed, currents)
    if missing:
        raise HyHomeError(
            f"{len(missing)} provided secret(s) missing; only a person can supply them, nothing was "
            "changed:\n" + "\n".join(f"  - {line}" for line in describe_missing(missing))
            + "\nWrite each value to its file (one line, no trailing newline needed), or mark the secret "
              "optional: true in the secrets registry to get a placeholder.")

    # A persistent secret that is gone with nothing to restore it from, while its consumers already
    # hold data made with the old value: refuse rather than lock them out with a new value.
    refused = []
    for s in specs:
        cur = currents[s.name]
        if (s.persistent and s.kind != "provided" and not cur.exists
                and not seed.get(s.name) and s.name not in rotate
                and latest_current(history_entries(secrets_dir, s.relpath)) is None):
            holders = data_held_by_consumers(s, project)
            if holders:
                refused.append(
                    f"{s.name} is missing and has no history to restore it from, but its consumers already hold "
                    f"data keyed to the old value ({', '.join(holders)}); a new value would lock them out. "
                    f"Put the old value back in {s.path} (backup or controller store), or, to start that "
                    f"data afresh on purpose, empty the directories listed")
    if refused:
        raise HyHomeError("refusing to generate a different value for a persistent secret, nothing was changed:\n"
                          + "\n".join(f"  - {r}" for r in refused))

    items: dict[str, Item] = {}
    stamp = _stamp()
    # Sources before derived secrets, so a derived value follows a source generated in this run.
    order = sorted(specs, key=lambda s: (s.kind == "htpasswd", s.name))
    for s in order:
        cur = currents[s.name]
        readers = readers_for(s, project, default_uid)
        access = resolve_access(s, readers, default_uid, default_gid, shared_gid)
        item = Item(s, "ok", access, remove_empty_dir=cur.empty_dir)
        hist = history_entries(secrets_dir, s.relpath)

        if s.kind == "htpasswd":
            src = items[s.source]
            src_value = src.final_value
            if not src_value or is_placeholder(src_value):
                raise HyHomeError(f"secret {s.name}: its source {s.source} has no value ({src.action}); "
                                  f"put one in {src.spec.path}")
            base, origin = (cur.value, None) if cur.exists else (None, None)
            if base is None and seed.get(s.name):
                base, origin = _seed_bytes(seed[s.name]), "the controller store"
            elif base is None and s.persistent and latest_current(hist):
                base, origin = _read(latest_current(hist)), "the history"
            new = htpasswd_update(base, s.username, password_of(src_value), s.scheme, s.rounds)
            if new is None and origin is not None:
                # The stored line still matches its source: bring it back instead of re-salting.
                item.value = base
                item.action = "restored"
                item.notes.append(f"was missing; restored from {origin} (still matches {s.source})")
            elif new is not None:
                item.value = new
                item.action = "rederived" if cur.exists else "generated"
                if cur.exists:
                    item.keep(stamp, "rederived-out", cur.value)
                    item.notes.append(f"{s.username}'s line no longer matched {s.source} (or its scheme changed)")
                if s.persistent:
                    item.keep(stamp, "current", new)
            item.final_value = item.value if item.value is not None else cur.value
        elif s.name in rotate:
            item.value = generate_value(s)
            if cur.exists:
                item.action = "rotated"
                item.keep(stamp, "rotated-out", cur.value)
            else:
                item.action = "generated"
            if s.persistent:
                item.keep(stamp, "current", item.value)
        elif s.name in restore:
            previous = None
            for path in reversed(hist):
                old = _read(path)
                if old.strip() and old != cur.value:
                    previous = (path, old)
                    break
            if previous is None:
                raise HyHomeError(f"restore: {s.name} has no earlier value in its history "
                                  f"({history_dir(secrets_dir, s.relpath)})")
            item.value = previous[1]
            item.action = "rolled-back"
            item.notes.append(f"value restored from {os.path.basename(previous[0])}")
            if cur.exists:
                item.keep(stamp, "rolled-back-out", cur.value)
            if s.persistent:
                item.keep(stamp, "current", item.value)
        elif cur.exists:
            if s.kind == "provided" and is_placeholder(cur.value):
                item.warnings.append(f"{s.name} is still a placeholder: put the real value in {s.path}")
                item.notes.append("placeholder: the real value is still missing")
            if seed.get(s.name) and _seed_bytes(seed[s.name]) != cur.value and not is_placeholder(cur.value):
                item.warnings.append(f"{s.name}: the value on this host differs from the controller store; the "
                                     "host's value was kept (never overwritten). Decide which is right and remove "
                                     "the other.")
            elif seed.get(s.name) and is_placeholder(cur.value):
                item.value = _seed_bytes(seed[s.name])
                item.action = "restored"
                item.notes.append("placeholder replaced by the value from the controller store")
            if s.persistent and s.kind != "provided" and item.value is None:
                last = latest_current(hist)
                if last is None or _read(last) != cur.value:
                    item.keep(stamp, "current", cur.value)
                    item.notes.append("persistent: the value in use was recorded in the history so a deleted file "
                                      "is restored, not replaced")
        else:
            why = "was an empty directory (Docker creates one when a secret file is missing)" if cur.empty_dir \
                else "was empty" if cur.empty_file else "was missing"
            if seed.get(s.name):
                item.value = _seed_bytes(seed[s.name])
                item.action = "restored"
                item.notes.append(f"{why}; value restored from the controller store")
                last = latest_current(hist)
                item.same_as_in_use = last is not None and _read(last) == item.value
            elif s.persistent and latest_current(hist):
                latest = latest_current(hist)
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
                item.warnings.append(f"{s.name} is optional and missing: it gets a placeholder at {s.path}; "
                                     "put the real value there")
            else:
                item.value = generate_value(s)
                item.action = "generated"
                if hist:
                    item.warnings.append(
                        f"{s.name} {why} and was generated anew; earlier values are kept in "
                        f"{history_dir(secrets_dir, s.relpath)} (mark it persistent: true to restore instead, or "
                        f"run with restore: [{s.name}] to roll back)")
                if s.persistent:
                    item.keep(stamp, "current", item.value)
            if cur.empty_dir:
                item.notes.append(f"removed the empty directory Docker had created at {s.path}")
        if item.final_value is None:
            item.final_value = item.value if item.value is not None else cur.value

        # Public key alongside a private key.
        if s.public_path and item.final_value is not None:
            want = public_key_bytes(item.final_value, s.public_format)
            if want is None:
                raise HyHomeError(f"secret {s.name}: {s.path} does not hold a PEM private key")
            pub_cur = read_current(s.name + ".pub", s.public_path)
            if not pub_cur.exists or pub_cur.value != want:
                item.public = want

        # Owner/mode drift, separate from content.
        if item.value is None and cur.exists and (cur.uid, cur.gid, cur.mode) != (access.uid, access.gid, access.mode):
            item.permissions = True
        items[s.name] = item

    # Directories: create missing, remove world access from existing (secrets dir + parents of files).
    dirs = {secrets_dir}
    for s in specs:
        d = os.path.dirname(s.path)
        while d.startswith(secrets_dir) and d not in dirs:
            dirs.add(d)
            d = os.path.dirname(d)
    if any(i.history for i in items.values()):
        dirs.add(os.path.join(secrets_dir, HISTORY_DIR))
    create, restrict, temps = [], [], []
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
    for s in specs:
        d = os.path.dirname(s.path)
        base = os.path.basename(s.path)
        for b in (base, base + ".pub"):
            if os.path.isdir(d) and any(n.startswith(f".{b}.tmp") for n in os.listdir(d)):
                temps.append((d, b))
        hd = history_dir(secrets_dir, s.relpath)
        if os.path.isdir(hd) and any(_is_temp(n) for n in os.listdir(hd)):
            temps.append((hd, None))

    ordered = [items[s.name] for s in specs]
    warnings = [w for i in ordered for w in i.warnings]
    return Plan(secrets_dir, ordered, create, restrict, temps, warnings)


def _seed_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------------------------
# Applying
# --------------------------------------------------------------------------------------------

def _makedirs(path: str) -> None:
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        _makedirs(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)
    fsync_dir(parent)


def _write_history(secrets_dir: str, relpath: str, suffix: str, value: bytes) -> None:
    d = history_dir(secrets_dir, relpath)
    if not os.path.isdir(d):
        _makedirs(d)
    path = os.path.join(d, suffix)
    n = 1
    while os.path.exists(path):
        path = os.path.join(d, f"{suffix}.{n}")
        n += 1
    atomic_write(path, value, 0o400, *((0, 0) if os.geteuid() == 0 else (-1, -1)))


def apply(p: Plan) -> None:
    """Perform a plan. Order per secret: history (old value kept) -> atomic write -> public key
    -> owner/mode. A crash between steps leaves complete files only and is finished by a re-run."""
    for d in p.dirs_to_create:
        _makedirs(d)
    for d, mode in p.dirs_to_restrict:
        os.chmod(d, mode)
    for d, base in p.stale_temp_dirs:
        if base is not None:
            remove_stale_temps(d, base)
            continue
        for name in os.listdir(d):
            if _is_temp(name):
                os.unlink(os.path.join(d, name))
    hist_root = os.path.join(p.secrets_dir, HISTORY_DIR)
    if os.path.isdir(hist_root) and stat.S_IMODE(os.stat(hist_root).st_mode) != DIR_MODE:
        os.chmod(hist_root, DIR_MODE)
    root = os.geteuid() == 0
    for item in p.items:
        s, a = item.spec, item.access
        uid, gid = (a.uid, a.gid) if root else (-1, -1)
        for suffix, value in item.history:
            _write_history(p.secrets_dir, s.relpath, suffix, value)
        if item.value is not None:
            if item.remove_empty_dir:
                os.rmdir(s.path)
            atomic_write(s.path, item.value, a.mode, uid, gid)
        elif item.permissions:
            if root:
                os.chown(s.path, a.uid, a.gid, follow_symlinks=False)
            os.chmod(s.path, a.mode)
        if item.public is not None:
            atomic_write(s.public_path, item.public, PUBLIC_MODE, uid, gid)
