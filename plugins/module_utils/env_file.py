"""Pure core of the env job: render a Compose project's ``.env`` from its ``.env.example`` plus
inventory values, without ever writing a secret.

* :func:`parse` reads dotenv text (Compose's syntax: ``KEY=value``, ``export KEY=value``, single-
  and double-quoted values, ``#`` comments) into lines that keep their original text, so comments,
  blank lines and order survive a rewrite.
* :func:`render` starts from the example, replaces the values the inventory sets (only those
  lines change), and appends keys the example does not have at the end, in the given order.
* :func:`secret_problems` refuses values that look like secrets: a non-empty value under a
  sensitive name (``*PASSWORD*``, ``*SECRET*``, ``*TOKEN*``, ``*_KEY``, ``*PASSPHRASE*``, ...; a
  ``*_FILE`` path is fine), a PEM block, or a URL with a password in it.
* :func:`missing_required` checks every variable the compose files reference without a default.
* :func:`plan` ties it together and says which keys change; :func:`apply` writes atomically.

Values of sensitive keys never leave this module: results and diffs carry their names only.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field

from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import (
    atomic_write,
    ensure_within,
    refuse_dangerous,
    remove_stale_temps,
)

KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_ASSIGN_RE = re.compile(r"^\s*(?P<export>export\s+)?(?P<key>[^=\s#]+)\s*=\s*(?P<rest>.*?)\s*$")
_BARE_KEY_RE = re.compile(r"^\s*(?P<export>export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)\s*$")

# Name fragments that mark a value as sensitive. Matched on the upper-cased name split into
# "_"-separated words, so DB_PASSWORD and SMTP_PASSWD match but PASSENGER_COUNT does not.
SENSITIVE_SUBSTRINGS = ("PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "CREDENTIAL", "PRIVATE",
                        "APIKEY", "WEBHOOK")
SENSITIVE_WORDS = ("PASS", "PWD", "SALT")
# Words that mark a secret only at the end of the name: API_KEY, REDIS_AUTH (not KEY_TYPE).
SENSITIVE_LAST_WORDS = ("KEY", "AUTH")
# Suffixes that mark a *path* or a reference to a secret, not the secret itself.
SAFE_SUFFIXES = ("_FILE", "_PATH", "_DIR", "_FILENAME")
_PEM_RE = re.compile(r"-----BEGIN [A-Z0-9 ]+-----")
_URL_CREDENTIALS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:[^/@\s]+@")
# Characters that need no quoting in a dotenv value (no spaces, quotes, '#', '$' or '\').
_PLAIN_VALUE_RE = re.compile(r"[A-Za-z0-9_./:@,+=%^~-]*")

HEADER = "# Managed by hyhome.bootstrap.env: edit {example} or the inventory's env_values, not this file."
EXTRA_HEADER = "# Set by the inventory (env_values), not in {example}:"


@dataclass
class EnvLine:
    """One line of a dotenv file. ``key`` is None for comments and blank lines."""

    text: str                        # the line as written (no trailing newline)
    key: str | None = None
    value: str | None = None         # unquoted value; None for a bare ``KEY`` (inherits the env)
    number: int = 0                  # 1-based line number in its source


@dataclass
class EnvPlan:
    dest: str
    content: str                     # the rendered file
    before: str | None               # the current file, None when it does not exist
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    content_changed: bool = False
    mode_changed: bool = False
    owner_changed: bool = False
    mode: int = 0o640
    uid: int = -1
    gid: int = -1
    warnings: list[str] = field(default_factory=list)

    @property
    def changed_any(self) -> bool:
        return self.content_changed or self.mode_changed or self.owner_changed


# ---------------------------------------------------------------------------------------------
# Parsing and formatting


def _unquote(rest: str, source: str, number: int) -> str:
    """The value of an assignment's right-hand side, as Compose reads it."""
    if not rest:
        return ""
    quote = rest[0]
    if quote in ("'", '"'):
        end = _closing_quote(rest, quote)
        if end < 0:
            raise HyHomeError(f"{source}:{number}: unterminated {quote} quote (multi-line values are not supported)")
        tail = rest[end + 1:].strip()
        if tail and not tail.startswith("#"):
            raise HyHomeError(f"{source}:{number}: unexpected text after the closing quote: {tail[:20]!r}")
        body = rest[1:end]
        if quote == "'":
            return body
        return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), body)
    # Unquoted: an inline comment starts at a '#' preceded by whitespace.
    m = re.search(r"\s#", rest)
    return (rest[:m.start()] if m else rest).strip()


def _closing_quote(rest: str, quote: str) -> int:
    i = 1
    while i < len(rest):
        if quote == '"' and rest[i] == "\\":
            i += 2
            continue
        if rest[i] == quote:
            return i
        i += 1
    return -1


def parse(text: str, source: str = ".env") -> list[EnvLine]:
    """Parse dotenv text into lines; raises HyHomeError (with file:line) on bad input."""
    if "\x00" in text:
        raise HyHomeError(f"{source}: contains NUL bytes: not a dotenv file")
    lines: list[EnvLine] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            lines.append(EnvLine(raw, number=number))
            continue
        m = _ASSIGN_RE.match(raw)
        if m:
            key = m.group("key")
            if not KEY_RE.fullmatch(key):
                raise HyHomeError(f"{source}:{number}: {key!r} is not a valid variable name")
            value = _unquote(m.group("rest"), source, number)
        else:
            bare = _BARE_KEY_RE.match(raw)
            if not bare:
                raise HyHomeError(f"{source}:{number}: not a KEY=value line: {stripped[:40]!r}")
            key, value = bare.group("key"), None
        if key in seen:
            raise HyHomeError(f"{source}:{number}: {key} is already set on line {seen[key]} (duplicate key)")
        seen[key] = number
        lines.append(EnvLine(raw, key=key, value=value, number=number))
    return lines


def as_dict(lines: list[EnvLine]) -> dict[str, str | None]:
    return {ln.key: ln.value for ln in lines if ln.key is not None}


def to_text(value) -> str:
    """An inventory value as the string .env will hold; only scalars are allowed."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    raise HyHomeError(f"a .env value must be a string, number or boolean, got {type(value).__name__}")


def format_value(key: str, value: str) -> str:
    """Quote a value so Compose reads it back exactly (single quotes: no interpolation)."""
    if any(c in value for c in "\n\r\x00"):
        raise HyHomeError(f"{key}: multi-line values cannot be written to .env")
    if _PLAIN_VALUE_RE.fullmatch(value):
        return value
    if "'" not in value:
        return f"'{value}'"
    if not any(c in value for c in '$"\\'):
        return f'"{value}"'
    raise HyHomeError(f"{key}: the value mixes ' with $, \" or \\ and cannot be written to .env unambiguously")


# ---------------------------------------------------------------------------------------------
# Secrets


def is_sensitive_name(name: str, allow: tuple[str, ...] | list[str] = ()) -> bool:
    """True when a variable name suggests its value is a secret (``*_FILE`` paths are not)."""
    if name in allow:
        return False
    upper = name.upper()
    if upper.endswith(SAFE_SUFFIXES):
        return False
    if any(s in upper for s in SENSITIVE_SUBSTRINGS):
        return True
    words = [w for w in re.split(r"[^A-Z0-9]+", upper) if w]
    return any(w in SENSITIVE_WORDS for w in words) or bool(words and words[-1] in SENSITIVE_LAST_WORDS)


def looks_like_secret_value(value: str) -> str | None:
    """Why a value looks secret whatever its name (a PEM block, credentials in a URL), else None."""
    if _PEM_RE.search(value):
        return "it holds a PEM block (a key or certificate belongs in a file)"
    if _URL_CREDENTIALS_RE.match(value):
        return "it is a URL with a password in it"
    return None


def secret_problems(values: dict[str, str | None], allow=()) -> list[str]:
    """One message per value that must not be written to .env (names only, never values)."""
    problems = []
    for key, value in values.items():
        if not value:
            continue
        if is_sensitive_name(key, allow):
            problems.append(f"{key}: the name marks a secret and the value is not empty")
            continue
        why = looks_like_secret_value(value)
        if why:
            problems.append(f"{key}: {why}")
    return problems


# ---------------------------------------------------------------------------------------------
# Required variables


def missing_required(values: dict[str, str | None], env_refs, environ: dict[str, str] | None = None) -> list[str]:
    """Variables the compose files reference without a default that the .env leaves undefined
    (or empty where the reference requires a value: ``${X:?msg}``). ``environ`` counts as defined
    too when given (Compose reads the process environment before .env)."""
    environ = environ or {}
    problems: dict[str, dict] = {}
    for ref in env_refs:
        if ref.has_default:
            continue
        value = values.get(ref.name, environ.get(ref.name))
        if ref.name in values and values[ref.name] is None:   # bare KEY: inherits the environment
            value = environ.get(ref.name)
        undefined = ref.name not in values and ref.name not in environ
        empty_but_required = ref.required and not value
        if not (undefined or empty_but_required):
            continue
        entry = problems.setdefault(ref.name, {"required": False, "where": [], "undefined": undefined})
        entry["required"] = entry["required"] or ref.required
        loc = ref.location
        if loc is not None:
            entry["where"].append(f"{loc.file}:{loc.line}" if loc.line else loc.file)
    out = []
    for name in sorted(problems):
        p = problems[name]
        state = "not defined" if p["undefined"] else "empty"
        need = "a non-empty value is required" if p["required"] else "referenced without a default"
        where = ", ".join(sorted(set(p["where"]))[:3])
        out.append(f"{name}: {state}; {need}" + (f" ({where})" if where else ""))
    return out


@dataclass(frozen=True)
class _Where:
    file: str
    line: int | None = None


@dataclass(frozen=True)
class RequiredRef:
    """A variable that must be non-empty, shaped like the compose model's EnvRef (duck-typed, so
    this module needs no YAML parser when the compose files are not read)."""

    name: str
    has_default: bool = False
    required: bool = True
    location: _Where = _Where("required option")


def required_refs(names) -> list[RequiredRef]:
    return [RequiredRef(str(n)) for n in names or []]


def compose_env_refs(project_dir: str, files=None) -> tuple[list, list[str]]:
    """Env references of a compose project read from its raw files (no Docker needed: the .env
    this module writes is what makes ``docker compose config`` work). Returns (refs, warnings)."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import load_raw, raw_env_refs

    raw = load_raw(project_dir, files=files)
    warnings = [f"{e.location.file}:{e.location.line}: {e.message}" if getattr(e, "location", None) else str(e)
                for e in getattr(raw, "errors", [])]
    return raw_env_refs(raw), warnings


# ---------------------------------------------------------------------------------------------
# Rendering, planning, writing


def render(example_lines: list[EnvLine], values: dict[str, str], header: str | None = None,
           extra_header: str | None = None) -> str:
    """The .env text: the example's lines in order with the given values replaced, then the
    keys the example lacks, in the order given."""
    out: list[str] = []
    if header:
        out.append(header)
    example_keys = set()
    for ln in example_lines:
        if ln.key is None:
            out.append(ln.text)
            continue
        example_keys.add(ln.key)
        if ln.key in values and values[ln.key] != ln.value:
            export = "export " if ln.text.lstrip().startswith("export ") else ""
            out.append(f"{export}{ln.key}={format_value(ln.key, values[ln.key])}")
        else:
            out.append(ln.text)
    extra = [k for k in values if k not in example_keys]
    if extra:
        if out and out[-1].strip():
            out.append("")
        if extra_header:
            out.append(extra_header)
        out.extend(f"{k}={format_value(k, values[k])}" for k in extra)
    return "\n".join(out) + "\n" if out else ""


def _read(path: str, what: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise HyHomeError(f"{what} {path} is a directory, not a file") from None
    except OSError as e:
        raise HyHomeError(f"cannot read {what} {path}: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise HyHomeError(f"{what} {path} is not UTF-8 text") from None


def plan(project_dir: str, values: dict | None = None, dest: str | None = None, example: str | None = None,
         env_refs=None, allow=(), mode: int = 0o640, uid: int = -1, gid: int = -1, header: bool = True,
         require_example: bool = False, environ: dict[str, str] | None = None) -> EnvPlan:
    """Everything :func:`apply` would do, computed without writing. Raises HyHomeError with the
    full list of problems (secrets refused, required variables missing) before anything changes."""
    if not project_dir:
        raise HyHomeError("no project directory given")
    refuse_dangerous(project_dir, "project directory")
    project_dir = os.path.abspath(project_dir)
    if not os.path.isdir(project_dir):
        raise HyHomeError(f"project directory {project_dir} does not exist or is not a directory")
    dest = ensure_within(project_dir, dest or ".env", ".env destination")
    example = ensure_within(project_dir, example or ".env.example", ".env example")
    if os.path.islink(dest):
        raise HyHomeError(f"refusing .env destination {dest}: it is a symlink")
    if not isinstance(values or {}, dict):
        raise HyHomeError("env values must be a mapping of variable name to value")
    wanted: dict[str, str] = {}
    for key, value in (values or {}).items():
        if not isinstance(key, str) or not KEY_RE.fullmatch(key):
            raise HyHomeError(f"{key!r} is not a valid variable name for .env")
        try:
            wanted[key] = to_text(value)
        except HyHomeError as e:
            raise HyHomeError(f"env value {key}: {e.msg}") from None

    example_text = _read(example, ".env example")
    if example_text is None and require_example:
        raise HyHomeError(f"{example} does not exist: the project ships no .env.example")
    example_lines = parse(example_text or "", os.path.relpath(example, project_dir))
    rel_example = os.path.relpath(example, os.path.dirname(dest))
    content = render(example_lines, wanted,
                     HEADER.format(example=rel_example) if header else None,
                     EXTRA_HEADER.format(example=rel_example))
    final = as_dict(parse(content, os.path.relpath(dest, project_dir)))

    problems = [f"  - {p}" for p in secret_problems(final, allow)]
    if problems:
        raise HyHomeError(
            "refusing to write secrets to .env (0 secrets in .env: sensitive values are Docker secrets, "
            "files under <project>/secrets/ declared in the compose secrets registry and generated by the "
            "secrets role):\n" + "\n".join(problems)
            + "\nmove each value to a secret file (and read it with a *_FILE variable), or, if a name is "
              "wrongly taken for a secret, list it in env_allow_keys")
    missing = missing_required(final, env_refs or [], environ)
    if missing:
        raise HyHomeError(
            "the compose files need variables that .env would not define:\n"
            + "\n".join(f"  - {m}" for m in missing)
            + "\nset them in the inventory's env_values or give them a value in .env.example")

    before = _read(dest, ".env")
    p = EnvPlan(dest=dest, content=content, before=before, mode=mode, uid=uid, gid=gid)
    old = as_dict(parse(before, os.path.relpath(dest, project_dir))) if before is not None else {}
    p.added = [k for k in final if k not in old]
    p.changed = [k for k in final if k in old and old[k] != final[k]]
    p.removed = [k for k in old if k not in final]
    p.content_changed = before != content
    if before is not None:
        st = os.stat(dest)
        p.mode_changed = stat.S_IMODE(st.st_mode) != mode
        p.owner_changed = (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid)
    if old:
        leaked = [k for k in old if old[k] and is_sensitive_name(k, allow) and (k not in final or final[k] != old[k])]
        if leaked:
            p.warnings.append("removed value(s) that looked like secrets from .env: " + ", ".join(leaked))
    return p


def masked(text: str | None, allow=()) -> str:
    """A dotenv text for diffs: values of sensitive keys replaced by a marker."""
    if text is None:
        return ""
    out = []
    for raw in text.splitlines():
        m = _ASSIGN_RE.match(raw)
        if m and not raw.strip().startswith("#") and is_sensitive_name(m.group("key"), allow) and m.group("rest"):
            out.append(f"{m.group('key')}=<hidden>")
        else:
            out.append(raw)
    return "\n".join(out) + ("\n" if out else "")


def apply(p: EnvPlan) -> None:
    """Write the planned file atomically (mode/owner set before the rename), or fix its attributes."""
    directory = os.path.dirname(p.dest)
    remove_stale_temps(directory, os.path.basename(p.dest))
    if p.content_changed:
        atomic_write(p.dest, p.content.encode("utf-8"), p.mode, p.uid, p.gid)
        return
    if p.owner_changed:
        os.chown(p.dest, p.uid, p.gid, follow_symlinks=False)
    if p.mode_changed:
        os.chmod(p.dest, p.mode)
