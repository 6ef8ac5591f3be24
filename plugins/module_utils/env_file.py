"""Pure core of the env job: render a Compose project's ``.env`` from its ``.env.example`` plus
inventory values, without ever writing a secret.

* :func:`parse` reads dotenv text (Compose's syntax: ``KEY=value``, ``export KEY=value``, single-
  and double-quoted values, ``#`` comments) into lines that keep their original text, so comments,
  blank lines and order survive a rewrite.
* :func:`render` starts from the example, replaces the values the inventory sets (only those
  lines change), and appends keys the example does not have at the end, in the given order.
* :func:`secret_problems` refuses values that look like secrets: a non-empty value under a
  sensitive name (``*PASSWORD*``, ``*SECRET*``, ``*TOKEN*``, ``*_KEY``, ``*PASSPHRASE*``, ...; a
  ``*_FILE`` path is fine), or, whatever the name, a value matching ``SECRET_VALUE_PATTERNS`` (a PEM
  block, a URL with a password, vendor key shapes such as ``AKIA…``, ``sk_live_…``, ``ghp_…``).
* :func:`masked` hides secret-looking values and lines, by name and by content, for both sides of a
  diff; :func:`lost_secrets` finds the hand-set ones a rewrite drops, and :func:`apply` keeps the old
  file in ``<project>/.hyhome/env-backups/`` (0600) before it does.
* :func:`missing_required` checks every variable the compose files reference without a default:
  it must end up defined and non-empty (Compose would substitute ``""``), unless listed as allowed
  to stay empty.
* :func:`generate_identifier` makes the values of declared generated identifiers (a Kafka cluster
  id, a uuid): generated once, then kept from the existing ``.env``. Never secrets.
* :func:`plan` ties it together and says which keys change; :func:`apply` writes atomically.

Values of sensitive keys never leave this module: results and diffs carry their names only, and
errors say file:line and the kind of problem, never the text of a line.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import stat
import time
import uuid
from dataclasses import dataclass, field

from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import (
    atomic_write,
    ensure_within,
    refuse_dangerous,
    remove_stale_temps,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_context import STATE_DIR, ensure_state_dir

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
# What a secret looks like whatever its name, as (why, pattern): one table, read by the env job
# (refusal, diff masking, backups) and by validate's credential-literal rule. `why` never holds the
# value. Vendor prefixes are matched at a word start, so a longer identifier that merely contains
# one does not count.
_START = r"(?<![A-Za-z0-9])"
SECRET_VALUE_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("it holds a PEM block (a key or certificate belongs in a file)",
     re.compile(r"-----BEGIN [A-Z0-9 ]+-----")),
    ("it is a URL with a password in it",
     re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:[^/@\s]+@")),
    ("it looks like an AWS access key id", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")),
    ("it looks like a Stripe secret or restricted key", re.compile(_START + r"[sr]k_(?:live|test)_[A-Za-z0-9]{10,}")),
    ("it looks like a Stripe webhook signing secret", re.compile(_START + r"whsec_[A-Za-z0-9+/=]{20,}")),
    ("it looks like a GitHub token",
     re.compile(_START + r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})")),
    ("it looks like a GitLab token", re.compile(_START + r"gl(?:pat|dt|rt|ptt)-[A-Za-z0-9_-]{20,}")),
    ("it looks like a Slack token", re.compile(_START + r"xox[abposr]-[A-Za-z0-9-]{10,}")),
    ("it is a chat webhook URL (the URL is the credential)",
     re.compile(r"https://(?:hooks\.slack\.com/services/[A-Za-z0-9]+/[A-Za-z0-9]+/[A-Za-z0-9]+"
                r"|(?:[a-z]+\.)?discord(?:app)?\.com/api/webhooks/[0-9]+/[A-Za-z0-9_-]+)")),
    ("it looks like a Google API key", re.compile(_START + r"AIza[0-9A-Za-z_-]{35}")),
    ("it looks like an OpenAI or Anthropic API key",
     re.compile(_START + r"sk-(?:(?:proj|ant-[a-z0-9]+)-[A-Za-z0-9_-]{20,}|[A-Za-z0-9]{32,})")),
    ("it looks like an npm or PyPI token", re.compile(_START + r"(?:npm_[A-Za-z0-9]{36}|pypi-AgE[A-Za-z0-9_-]{40,})")),
    ("it looks like a SendGrid API key", re.compile(_START + r"SG\.[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{40,}")),
    ("it looks like a JSON Web Token", re.compile(_START + r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.")),
)
_PEM_BEGIN_RE = re.compile(r"-----BEGIN [A-Z0-9 ]+-----")
_PEM_END_RE = re.compile(r"-----END [A-Z0-9 ]+-----")
HIDDEN = "<hidden>"
HIDDEN_LINE = "<line hidden: it looks like a secret>"
# Bigger .env or .env.example files are not dotenv files anyone writes by hand; not read.
MAX_ENV_BYTES = 1024 * 1024
# Under the project's state dir: a .env that loses hand-set secrets is kept there first (0700 dir, 0600 files).
BACKUP_DIR = "env-backups"
# Characters that need no quoting in a dotenv value (no spaces, quotes, '#', '$' or '\').
_PLAIN_VALUE_RE = re.compile(r"[A-Za-z0-9_./:@,+=%^~-]*")

# Kinds of generated identifiers (env_generated): values a stack needs unique and stable but
# nobody has to choose. kafka-cluster-id is what `kafka-storage random-uuid` prints (KRaft).
GENERATED_KINDS = ("uuid", "hex", "kafka-cluster-id")
_KIND_SHAPES = {
    "uuid": re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I),
    "hex": re.compile(r"[0-9a-f]{32}", re.I),
    "kafka-cluster-id": re.compile(r"[A-Za-z0-9_-]{22}"),
}
WHERE_TO_SET = (
    "set each in the inventory's env_values (env_values: {NAME: value}) or in .env.example; for an identifier "
    "that only has to be unique and stable, such as a cluster id, declare it in env_generated instead "
    "(env_generated: {NAME: KIND}, KIND one of " + ", ".join(GENERATED_KINDS) + ")")
ALLOW_EMPTY_NOTE = "; a variable meant to stay empty (not ${X:?}) goes in env_allow_empty"

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
    generated: list[str] = field(default_factory=list)   # identifiers generated by this plan
    mode: int = 0o640
    uid: int = -1
    gid: int = -1
    warnings: list[str] = field(default_factory=list)
    project_dir: str = ""
    allow: tuple[str, ...] = ()                          # env_allow_keys, for masking
    lost_secrets: list[str] = field(default_factory=list)  # secret-looking lines of `before` the rewrite drops
    backup_file: str | None = None                       # where apply() kept `before` when it drops secrets

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
            raise HyHomeError(f"{source}:{number}: unexpected text after the closing quote")
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


def _split_lines(text: str) -> list[str]:
    """Lines as Compose's dotenv reader sees them: split at \\n only (a stray \\r before it is dropped),
    so a line number here is the line number in an editor."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _shown(text) -> str:
    """An inventory-given name or kind for a message: quoted, unless it is long or looks like a secret."""
    shown = repr(text)
    if len(shown) > 60 or looks_like_secret_value(str(text)):
        return "(not shown: it is long or looks like a secret)"
    return shown


def parse(text: str, source: str = ".env") -> list[EnvLine]:
    """Parse dotenv text into lines; raises HyHomeError on bad input, saying file:line and the kind
    of error only: the offending text may be a secret and is never echoed."""
    if "\x00" in text:
        raise HyHomeError(f"{source}: contains NUL bytes: not a dotenv file")
    lines: list[EnvLine] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(_split_lines(text), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            lines.append(EnvLine(raw, number=number))
            continue
        m = _ASSIGN_RE.match(raw)
        if m:
            key = m.group("key")
            if not KEY_RE.fullmatch(key):
                raise HyHomeError(f"{source}:{number}: the name before '=' is not a valid variable name")
            value = _unquote(m.group("rest"), source, number)
        else:
            bare = _BARE_KEY_RE.match(raw)
            if not bare:
                raise HyHomeError(f"{source}:{number}: not a KEY=value line, a comment or a blank line")
            key, value = bare.group("key"), None
        if key in seen:
            raise HyHomeError(f"{source}:{number}: duplicate key, already set on line {seen[key]}")
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
    """Why a text looks secret whatever its name (a PEM block, credentials in a URL, a vendor key
    shape from SECRET_VALUE_PATTERNS), else None. The answer never holds the text."""
    for why, pattern in SECRET_VALUE_PATTERNS:
        if pattern.search(value):
            return why
    return None


def secret_problems(values: dict[str, str | None], allow=()) -> list[str]:
    """One message per value that must not be written to .env (names only, never values)."""
    problems = []
    for key, value in values.items():
        if looks_like_secret_value(key):
            problems.append("a variable name itself looks like a secret; the line is not shown")
            continue
        if not value:
            continue
        if is_sensitive_name(key, allow):
            problems.append(f"{key}: the name marks a secret and the value is not empty")
            continue
        why = looks_like_secret_value(value)
        if why:
            problems.append(f"{key}: {why}")
    return problems


def log_masking(values, allow=()) -> tuple[set[str], set[str]]:
    """(secret, plain): the texts of the inventory values as Ansible's no_log masking sees them
    (``str(value)`` of strings and numbers). ``secret`` are those that look secret by name or by
    content (refused, and never to be printed); ``plain`` the others (written to .env anyway)."""
    secret: set[str] = set()
    plain: set[str] = set()
    for key, value in (values or {}).items() if isinstance(values, dict) else ():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            continue
        text = str(value)
        name = str(key)
        if is_sensitive_name(name, allow or ()) or looks_like_secret_value(text) or looks_like_secret_value(name):
            secret.add(text)
        else:
            plain.add(text)
    return secret, plain


# ---------------------------------------------------------------------------------------------
# Required variables


def substitutes_empty(ref) -> bool:
    """True for a reference Compose resolves without a value: ``${X:+alt}`` / ``${X+alt}`` give
    ``alt`` or ``""``, by design."""
    text = getattr(ref, "text", None) or ""
    return bool(re.match(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:?\+", text))


def missing_required(values: dict[str, str | None], env_refs, environ: dict[str, str] | None = None,
                     allow_empty=(), hand_set: dict[str, str | None] | None = None) -> list[str]:
    """Variables the compose files reference without a default that would be undefined or empty
    (Compose stops on ``${X:?msg}`` and substitutes ``""`` for ``${X}`` / ``$X``: a stack that boots
    with an empty cluster id or URL fails later, less clearly). ``environ`` counts as defined too
    when given (Compose reads the process environment before .env). ``allow_empty``: names that may
    stay empty on purpose (still must be defined). ``hand_set``: the current .env, to say when a
    value set there by hand is not kept."""
    environ = environ or {}
    allow = set(allow_empty or ())
    problems: dict[str, dict] = {}
    for ref in env_refs:
        if ref.has_default or substitutes_empty(ref):
            continue
        value = values.get(ref.name, environ.get(ref.name))
        if ref.name in values and values[ref.name] is None:   # bare KEY: inherits the environment
            value = environ.get(ref.name)
        undefined = ref.name not in values and ref.name not in environ
        empty = not value and (ref.required or ref.name not in allow)
        if not (undefined or empty):
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
        need = ("a non-empty value is required" if p["required"]
                else "referenced without a default, so Compose would substitute an empty string")
        where = ", ".join(sorted(set(p["where"]))[:3])
        note = ""
        if (hand_set or {}).get(name):
            note = "; the value set by hand in .env is not kept (.env is rendered from the example and the inventory)"
        out.append(f"{name}: {state}; {need}" + (f" ({where})" if where else "") + note)
    return out


# ---------------------------------------------------------------------------------------------
# Generated identifiers


def generate_identifier(kind: str) -> str:
    """A fresh value of a generated kind (see GENERATED_KINDS)."""
    if kind == "uuid":
        return str(uuid.uuid4())
    if kind == "hex":
        return secrets.token_hex(16)
    if kind == "kafka-cluster-id":
        # Kafka's Uuid.randomUuid(): 16 random bytes, base64url without padding; it never hands out
        # an id starting with "-" (it would read as a command-line option).
        while True:
            value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
            if not value.startswith("-"):
                return value
    raise HyHomeError(f"unknown generated kind {_shown(kind)}; choose one of {', '.join(GENERATED_KINDS)}")


def check_generated(generated, values: dict, allow=()) -> dict[str, str]:
    """Validate the env_generated mapping (name -> kind): valid names, known kinds, never a
    secret-looking name, never also set in ``values``. Returns it as str -> str."""
    if not isinstance(generated or {}, dict):
        raise HyHomeError("env generated must be a mapping of variable name to kind")
    out: dict[str, str] = {}
    problems = []
    for name, kind in (generated or {}).items():
        if not isinstance(name, str) or not KEY_RE.fullmatch(name):
            raise HyHomeError(f"generated variable {_shown(name)} is not a valid variable name for .env")
        if kind not in GENERATED_KINDS:
            problems.append(f"{name}: unknown kind {_shown(kind)}; choose one of {', '.join(GENERATED_KINDS)}")
        elif is_sensitive_name(name, allow):
            problems.append(f"{name}: the name marks a secret; generated values are identifiers written to .env, "
                            "secrets are files generated by the secrets role")
        elif name in values:
            problems.append(f"{name}: also set in env_values; keep it in one place")
        else:
            out[name] = kind
    if problems:
        raise HyHomeError("cannot generate these .env values:\n" + "\n".join(f"  - {p}" for p in problems))
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
    """The text of a dotenv file, None when it does not exist. Only a regular file of at most
    MAX_ENV_BYTES is read: opened non-blocking and checked on the open descriptor, so a FIFO swapped
    in cannot block the run, nor a device or a huge file exhaust memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HyHomeError(f"cannot read {what} {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise HyHomeError(f"{what} {path} is a directory, not a file")
        raise HyHomeError(f"{what} {path} is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(MAX_ENV_BYTES + 1)
        except OSError as e:
            raise HyHomeError(f"cannot read {what} {path}: {e.strerror}") from None
    if len(data) > MAX_ENV_BYTES:
        raise HyHomeError(f"{what} {path} is larger than {MAX_ENV_BYTES // 1024} KiB: not a dotenv file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise HyHomeError(f"{what} {path} is not UTF-8 text") from None


def plan(project_dir: str, values: dict | None = None, dest: str | None = None, example: str | None = None,
         env_refs=None, allow=(), mode: int = 0o640, uid: int = -1, gid: int = -1, header: bool = True,
         require_example: bool = False, environ: dict[str, str] | None = None, generated=None,
         allow_empty=(), generate=generate_identifier) -> EnvPlan:
    """Everything :func:`apply` would do, computed without writing. Raises HyHomeError with the
    full list of problems (secrets refused, required variables missing or empty) before anything
    changes.

    ``generated`` (name -> kind): identifiers the stack needs unique and stable; the value already
    in the destination file is kept, otherwise ``generate(kind)`` makes one (this plan's ``generated``
    lists those). ``allow_empty``: names that may stay empty; one the example lacks is written empty.
    """
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
            raise HyHomeError(f"{_shown(key)} is not a valid variable name for .env")
        try:
            wanted[key] = to_text(value)
        except HyHomeError as e:
            raise HyHomeError(f"env value {key}: {e.msg}") from None
    kinds = check_generated(generated, wanted, allow)
    if isinstance(allow_empty, str) or not all(isinstance(n, str) for n in allow_empty or ()):
        raise HyHomeError("env allow_empty must be a list of variable names")

    example_text = _read(example, ".env example")
    if example_text is None and require_example:
        raise HyHomeError(f"{example} does not exist: the project ships no .env.example")
    example_lines = parse(example_text or "", os.path.relpath(example, project_dir))
    before = _read(dest, ".env")
    old_lines = parse(before, os.path.relpath(dest, project_dir)) if before is not None else []
    old = as_dict(old_lines)
    new_ids = []
    warnings = []
    for name, kind in kinds.items():
        current = old.get(name)
        if current:
            wanted[name] = current    # generated once: an id data was created with must not change
            if not _KIND_SHAPES[kind].fullmatch(current):
                warnings.append(f"{name}: kept the value already in .env, although it does not look like a {kind}")
        else:
            wanted[name] = generate(kind)
            new_ids.append(name)
    example_keys = {ln.key for ln in example_lines if ln.key}
    for name in allow_empty or ():
        if name not in example_keys and name not in wanted:
            wanted[name] = ""
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
    missing = missing_required(final, env_refs or [], environ, allow_empty, hand_set=old)
    if missing:
        raise HyHomeError(
            "the compose files need variables that .env would leave undefined or empty:\n"
            + "\n".join(f"  - {m}" for m in missing)
            + "\n" + WHERE_TO_SET
            + (ALLOW_EMPTY_NOTE if any("substitute an empty string" in m for m in missing) else ""))

    p = EnvPlan(dest=dest, content=content, before=before, mode=mode, uid=uid, gid=gid,
                generated=new_ids, warnings=warnings, project_dir=project_dir, allow=tuple(allow))
    numbers = {ln.key: ln.number for ln in old_lines if ln.key}
    p.added = [k for k in final if k not in old]
    p.changed = [k for k in final if k in old and old[k] != final[k]]
    p.removed = [_reported_key(k, numbers[k]) for k in old if k not in final]
    p.content_changed = before != content
    if before is not None:
        st = os.lstat(dest)
        p.mode_changed = stat.S_IMODE(st.st_mode) != mode
        p.owner_changed = (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid)
        if st.st_nlink > 1 and not p.content_changed:
            # chmod/chown would reach every path of the inode: write a file of its own instead.
            p.content_changed = True
            p.warnings.append(f"{os.path.relpath(dest, project_dir)} was a hard link to another file; "
                              "it is rewritten as a file of its own")
    if p.content_changed:
        p.lost_secrets = lost_secrets(before, content, p.allow)
    return p


def _reported_key(key: str, number: int) -> str:
    """A key as results and messages show it: a name that itself looks like a secret (a token pasted
    alone on a line) becomes its line number."""
    return f"(line {number}: a name that looks like a secret)" if looks_like_secret_value(key) else key


def _mask_lines(text: str, allow=()):
    """(number, line, shown, key) for each line of a dotenv text, ``shown`` being the line fit for a
    diff or a log. Hidden by name: the value of a sensitive-looking key (``KEY=<hidden>``). Hidden by
    content: any value, comment or stray line holding something from SECRET_VALUE_PATTERNS (a whole
    line is replaced when the name or a comment is the secret), and every line of a PEM block.
    ``key`` is the name when it can be shown, else None."""
    in_pem = False
    for number, raw in enumerate(_split_lines(text), start=1):
        if in_pem:
            in_pem = not _PEM_END_RE.search(raw)
            yield number, raw, HIDDEN_LINE, None
            continue
        begin = _PEM_BEGIN_RE.search(raw)
        in_pem = bool(begin) and not _PEM_END_RE.search(raw, begin.end())
        m = _ASSIGN_RE.match(raw)
        if m and not raw.lstrip().startswith("#") and not looks_like_secret_value(m.group("key")):
            key, rest = m.group("key"), m.group("rest")
            if rest and (is_sensitive_name(key, allow) or looks_like_secret_value(rest)):
                yield number, raw, f"{'export ' if m.group('export') else ''}{key}={HIDDEN}", key
            else:
                yield number, raw, raw, key
        elif looks_like_secret_value(raw):
            yield number, raw, HIDDEN_LINE, None
        else:
            yield number, raw, raw, None


def masked(text: str | None, allow=()) -> str:
    """A dotenv text fit for a diff: secret-looking values and lines hidden, by name and by content
    (see :func:`_mask_lines`). Both sides of every diff go through this one function."""
    if text is None:
        return ""
    out = [shown for _, _, shown, _ in _mask_lines(text, allow)]
    return "\n".join(out) + ("\n" if out else "")


def diff(p: EnvPlan) -> dict:
    """The diff-mode view of a plan: before and after, both masked the same way."""
    return {"before_header": p.dest, "after_header": p.dest,
            "before": masked(p.before, p.allow), "after": masked(p.content, p.allow)}


def lost_secrets(before: str | None, after: str, allow=()) -> list[str]:
    """The secret-looking lines of ``before`` (see :func:`masked`) that ``after`` no longer holds, as
    key names or ``line N``: a hand-set secret the rewrite would delete."""
    if not before:
        return []
    kept = set(_split_lines(after))
    return [key if key else f"line {number}" for number, raw, shown, key in _mask_lines(before, allow)
            if shown != raw and raw not in kept]


def backup_dir(project_dir: str) -> str:
    """Where a .env is kept before a rewrite drops secret-looking values: in the project's state dir."""
    return os.path.join(project_dir, STATE_DIR, BACKUP_DIR)


def _backup(p: EnvPlan) -> str:
    """Keep ``p.before`` as a 0600 file in a 0700 directory under the project's state dir; its path."""
    try:
        ensure_state_dir(p.project_dir)
        directory = backup_dir(p.project_dir)
        with contextlib.suppress(FileExistsError):  # checked next, whoever made it
            os.mkdir(directory, 0o700)
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise HyHomeError(f"{directory} is not a directory of this user (a symlink, a file or another "
                              "user's); remove it so it can be recreated")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(directory, 0o700)
        base = f"{os.path.basename(p.dest)}.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        path = next(c for c in (os.path.join(directory, base if n == 0 else f"{base}.{n}") for n in range(1000))
                    if not os.path.lexists(c))
        atomic_write(path, (p.before or "").encode("utf-8"), mode=0o600)
    except HyHomeError as e:
        raise HyHomeError(f"cannot back up {p.dest} before dropping secret-looking values from it, so it is "
                          f"left unchanged: {e.msg}") from None
    except (OSError, StopIteration) as e:
        reason = getattr(e, "strerror", None) or "no free backup name"
        raise HyHomeError(f"cannot back up {p.dest} before dropping secret-looking values from it, so it is "
                          f"left unchanged: {reason}") from None
    return path


def lost_secrets_note(p: EnvPlan) -> str | None:
    """The one-line warning naming the secret-looking values a rewrite drops and where the old file is
    (or, in check mode, would be) kept. Names and line numbers only."""
    if not p.lost_secrets:
        return None
    where = (f"the previous file is kept in {p.backup_file} (mode 0600)" if p.backup_file
             else f"the previous file would be kept under {backup_dir(p.project_dir)}/ (mode 0600)")
    return (f"{p.dest}: hand-set value(s) that look like secrets are removed ({', '.join(p.lost_secrets)}); "
            f"{where}: move each to a secret file under secrets/, then delete the backup")


def apply(p: EnvPlan) -> None:
    """Write the planned file atomically (mode/owner set before the rename), or fix its attributes.
    A file that loses secret-looking values is first kept in :func:`backup_dir` (``p.backup_file``)."""
    directory = os.path.dirname(p.dest)
    remove_stale_temps(directory, os.path.basename(p.dest))
    if p.content_changed:
        if p.lost_secrets:
            p.backup_file = _backup(p)
        atomic_write(p.dest, p.content.encode("utf-8"), p.mode, p.uid, p.gid)
        return
    if p.owner_changed:
        os.chown(p.dest, p.uid, p.gid, follow_symlinks=False)
    if p.mode_changed:
        os.chmod(p.dest, p.mode)
