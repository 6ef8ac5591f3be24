"""Static checks of a compose project (AC-2): pure core over the compose model and the raw files.

``validate(project, lint, raw)`` returns findings in a stable order; ``lint_files(paths)`` runs
yamllint; ``run(project_dir, ...)`` does all of it and builds the report the module, the role and
``scripts/validate-docker-compose.sh`` print. Findings use the shared vocabulary of
``findings.py`` (severity ``error`` | ``warning`` | ``info``, rule id, service, file:line, hint).

Rules that need the text as written (literal credentials, resources two included files declare)
read the raw files, so they work when ``docker compose config`` rejects the project; so does
every other rule, on the model compose_model builds from the raw files then.

Per-service policy declarations live in the service's ``x-hyhome`` extension::

    services:
      db:
        x-hyhome:
          writable: [/var/lib/postgresql/data]   # bind-mount targets the service may write
          exceptions:                            # rule id -> the written reason ("security-"
            security-non-root: "the entrypoint chowns the data dir, then drops to uid 999"   # may be left out)

A finding covered by an exception is still reported, with ``accepted`` set to the reason; it does
not count as an error. An exception without a reason, or for an unknown rule, is itself reported.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from concurrent.futures import ThreadPoolExecutor

import yaml
from ansible_collections.hyhome.bootstrap.plugins.module_utils import compose_up, mounts
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
    EXIT_CODES_HELP,
    EXIT_FINDINGS,
    EXIT_OK,
    SECRETS_DIR,
    Project,
    RawProject,
    Service,
    guarded_cli,
    load_project,
    load_raw,
    quiet_gc,
    read_dotenv,
    scan_interpolations,
    split_compose_stderr,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.env_file import (
    is_sensitive_name,
    looks_like_secret_value,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.findings import (
    ERROR,
    INFO,
    SEVERITY_RANK,
    WARNING,
    Finding,
    counts_text,
    relative,
    summarize,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.findings import (
    render_table as render_findings,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.identity import Identity, IdentityResolver, LocalImages

# rule id -> (severity, one-line description); the table README and the module docs render.
RULES: dict[str, tuple[str, str]] = {
    "yaml-syntax": (ERROR, "a compose file is not valid YAML"),
    "include-missing": (ERROR, "an include: entry names a file that does not exist"),
    "yaml-lint": (WARNING, "yamllint problem (style or duplicate keys)"),
    "compose-config": (ERROR, "`docker compose config` rejects the project (its error line, explained)"),
    "compose-warning": (WARNING, "`docker compose config` printed a warning (each one once)"),
    "resource-redeclared": (ERROR, "two included files declare one service/network/volume/secret/config "
                                   "differently"),
    "credential-literal": (ERROR, "a literal password, token, key or secret in environment:"),
    "secret-undeclared": (ERROR, "a service (command, environment or a mounted script) reads /run/secrets/X "
                                 "without declaring secret X"),
    "secret-unregistered": (ERROR, "a service declares a secret the top-level registry does not have"),
    "secret-unused": (WARNING, "a registry secret no service uses"),
    "secret-alias": (ERROR, "a second name for a shared secret (e.g. alertmanager_smtp_password)"),
    "secret-duplicate": (ERROR, "two registry entries point at the same file"),
    "secret-external-swarm": (ERROR, "an external: true secret, which only Docker Swarm provides"),
    "interpolation-trap": (ERROR, "$VAR in command/entrypoint/healthcheck interpolated by compose at parse time"),
    "bind-missing-file": (ERROR, "a bind-mounted file does not exist (Docker would create a directory)"),
    "security-no-new-privileges": (ERROR, "security_opt lacks no-new-privileges:true"),
    "security-cap-drop-all": (ERROR, "cap_drop lacks ALL"),
    "security-non-root": (ERROR, "the service runs as root (warning when no user: is declared and its image runs as "
                                 "root or its user is unknown)"),
    "security-privileged": (ERROR, "privileged: true"),
    "security-host-namespace": (ERROR, "host pid, network or ipc namespace"),
    "security-writable-bind": (WARNING, "configuration (a file, a read-only or git-tracked directory) "
                                        "bind-mounted writable"),
    "security-healthcheck": (ERROR, "a long-running service without a healthcheck (one-shot jobs need none)"),
    "security-memory-limit": (ERROR, "no memory limit"),
    "security-docker-socket": (ERROR, "the Docker socket is mounted"),
    "x-hyhome": (WARNING, "invalid x-hyhome declaration (exception without reason, unknown rule, ...)"),
}

DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
# Basename suffixes that mark a bind source as a file, when it is missing and we must guess.
FILE_SUFFIXES = {
    "cfg", "cnf", "conf", "crt", "css", "csv", "env", "hcl", "html", "ini", "js", "json", "key", "lua",
    "pem", "properties", "py", "rules", "sh", "sql", "tmpl", "toml", "tpl", "txt", "xml", "yaml", "yml",
}
# Files in a bind-mounted directory that a container runs, so their /run/secrets reads count.
SCRIPT_SUFFIXES = (".sh", ".bash", ".ash", ".ksh", ".zsh", ".py")
MAX_SCRIPT_BYTES = 256 * 1024        # bigger files are not scripts anyone mounts; not read
MAX_SCRIPTS_PER_MOUNT = 200          # a directory with more is not a script directory; the rest is skipped
MAX_SCRIPT_DEPTH = 2                 # directory levels below a bind-mounted directory
_SECRET_READ_RE = re.compile(r"/run/secrets/([A-Za-z0-9][A-Za-z0-9._-]*)")
RESOURCE_SECTIONS = ("services", "networks", "volumes", "secrets", "configs")
# Last words of a variable name that make its value a setting about a credential, not one
# (PASSWORD_MIN_LENGTH, TOKEN_TTL, OAUTH_TOKEN_URL, PASSWORD_ENCRYPTION).
CREDENTIAL_SETTING_WORDS = frozenset({
    "TTL", "LENGTH", "LEN", "EXPIRY", "EXPIRES", "EXPIRATION", "LIFETIME", "LIFESPAN", "TIMEOUT", "AGE",
    "ENABLED", "ENABLE", "DISABLED", "REQUIRED", "TYPE", "ALGORITHM", "ALGO", "METHOD", "MODE", "POLICY",
    "SCHEME", "ENCRYPTION", "URL", "URI", "ENDPOINT", "HOST", "PORT", "HEADER", "PARAM", "COOKIE", "NAME",
    "FORMAT", "STRATEGY", "PROVIDER", "STORE", "ROTATION", "COUNT", "COST", "ROUNDS", "SIZE",
})
# Names that read like credentials but hold identifiers (etcd's cluster token only tells clusters apart).
NOT_CREDENTIAL_NAMES = frozenset({"ETCD_INITIAL_CLUSTER_TOKEN"})
# Values that name where the credential is, not what it is: Grafana's $__file{...}/$__env{...}.
_PROVIDER_REF_RE = re.compile(r"^\$__\w+\{[^}]*\}$")
_NOT_A_CREDENTIAL = frozenset({"true", "false", "yes", "no", "on", "off", "none", "null"})

# yamllint configuration for compose files when the project has none of its own.
DEFAULT_YAMLLINT = """
extends: default
rules:
  document-start: disable
  line-length: {max: 160, level: warning}
  truthy: {allowed-values: ["true", "false"], check-keys: false}
  comments: {min-spaces-from-content: 1}
  comments-indentation: disable
  braces: {max-spaces-inside: 1}
  brackets: {max-spaces-inside: 1}
  octal-values: disable
"""
PROJECT_YAMLLINT_FILES = (".yamllint", ".yamllint.yaml", ".yamllint.yml")


def sort_key(f: Finding):
    """Report order: severity, file, line, service, rule, message."""
    return (SEVERITY_RANK[f.severity], f.file or "", f.line or 0, f.service or "", f.rule, f.message)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


# --------------------------------------------------------------------------------------------
# docker compose config errors in plain words
# --------------------------------------------------------------------------------------------

_EXPLANATIONS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"(\w+)\.([\w.-]+) conflicts with imported resource"),
     "{1} '{2}' is defined both in the root file and in a file it includes (or in two included files), "
     "differently; a resource may be defined only once. Compose names only the first such conflict: the "
     "resource-redeclared findings list every one."),
    (re.compile(r"env file (\S+) not found"),
     "a service's env_file: names {1}, which does not exist. Create it (from its *.example if there is one) "
     "or make it optional with `env_file: [{{path: ..., required: false}}]`."),
    (re.compile(r"required variable (\w+) is missing a value(?::\s*(.*))?"),
     "the compose files require variable {1} (${{{1}:?...}}) and it is unset or empty. Set it in .env "
     "(scripts/preflight-compose.sh lists every missing variable)."),
    (re.compile(r'service "([^"]+)" refers to undefined secret (\S+?):'),
     "service {1} declares secret {2} but no compose file registers it. Add `{2}: {{file: ./secrets/{2}}}` "
     "under the top-level secrets: of the root compose file, or fix the name."),
    (re.compile(r'service "([^"]+)" refers to undefined (volume|network|config) (\S+?):'),
     "service {1} uses {2} {3}, which no top-level {2}s: entry defines. Add it, or fix the name."),
    (re.compile(r'service "([^"]+)" depends on undefined service "?([^":]+)"?'),
     "service {1} depends on {2}, which is not defined (or is in a profile that is not active)."),
    (re.compile(r"Additional property (\S+) is not allowed"),
     "'{1}' is not a compose key here: a typo or a wrong indentation level."),
    (re.compile(r"invalid interpolation format"),
     "a '$' starts a variable reference; write '$$' for a literal dollar sign."),
    (re.compile(r"yaml: line (\d+): (.*)"),
     "a compose file is not valid YAML (see the yaml-syntax finding for the exact file and line)."),
    (re.compile(r"open (\S+): no such file or directory"),
     "{1} does not exist: an include: entry (or -f file) names a missing file."),
    (re.compile(r"mapping key \"?([^\"]+)\"? already defined"),
     "the key '{1}' appears twice in the same mapping; the second would silently win in other tools."),
]


def explain_config_error(stderr: str) -> str | None:
    """A plain-words explanation for the common `docker compose config` failures, else None."""
    for pattern, text in _EXPLANATIONS:
        m = pattern.search(stderr)
        if m:
            groups = [m.group(0), *[g or "" for g in m.groups()]]
            return text.format(*groups)
    return None


# --------------------------------------------------------------------------------------------
# locations
# --------------------------------------------------------------------------------------------

def _root_file(project: Project) -> str | None:
    return project.files[0] if project.files else None


def _svc_loc(project: Project, svc: Service) -> tuple[str | None, int | None]:
    if svc.location:
        return svc.location.file, svc.location.line
    return _root_file(project), None


def _first_refs(project: Project) -> dict[str, tuple[str, int | None]]:
    """Variable name -> where it is first referenced (one pass over the references)."""
    first: dict[str, tuple[str, int | None]] = {}
    for ref in project.env_refs:
        if ref.location and ref.name not in first:
            first[ref.name] = (ref.location.file, ref.location.line)
    return first


def _variable_loc(project: Project, name: str, first: dict | None = None) -> tuple[str | None, int | None]:
    """Where variable ``name`` is first referenced, else the root file. ``first``: ``_first_refs``,
    when the caller asks for many names."""
    return (first if first is not None else _first_refs(project)).get(name) or (_root_file(project), None)


def _declaration_loc(raw: RawProject | None, section: str, key: str) -> tuple[str | None, int | None]:
    """Where ``section.key`` (``networks.edge``) is first declared in the raw files."""
    for rf in raw.compose_files if raw else []:
        for name, _, node in _merged_pairs(rf.node):
            if name == section:
                for k, knode, _ in _merged_pairs(node):
                    if k == key:
                        return rf.path, knode.start_mark.line + 1
    return None, None


def _config_error_loc(project: Project, raw: RawProject | None, text: str) -> tuple[str | None, int | None]:
    m = re.search(r"(\w+)\.([\w.-]+) conflicts with imported resource", text)
    if m:
        file, line = _declaration_loc(raw, m.group(1), m.group(2))
        if file:
            return file, line
    m = re.search(r"required variable (\w+) is missing a value", text)
    if m:
        return _variable_loc(project, m.group(1))
    m = re.search(r'service "([^"]+)"', text)
    if m and m.group(1) in project.services:
        return _svc_loc(project, project.services[m.group(1)])
    return _root_file(project), None


# --------------------------------------------------------------------------------------------
# files and docker compose config
# --------------------------------------------------------------------------------------------

_UNSET_RE = re.compile(r'^The "(\w+)" variable is not set')


def _warning_finding(project: Project, warning: str, first: dict | None = None) -> Finding:
    m = _UNSET_RE.match(warning)
    subject = m.group(1) if m else None
    if m:
        file, line = _variable_loc(project, m.group(1), first)
        hint = f"set {m.group(1)} in .env, or give it a default with ${{{m.group(1)}:-default}}"
    else:
        file, line = _root_file(project), None
        hint = ("delete the top-level version: key, Compose ignores it" if "`version` is obsolete" in warning
                else "change the compose files until `docker compose config` prints no warning")
    return Finding(WARNING, "compose-warning", warning, subject=subject, file=file, line=line, hint=hint)


def _check_files(project: Project, raw: RawProject | None = None) -> list[Finding]:
    out = []
    for err in project.file_errors:
        if err.message.startswith("included file"):
            out.append(Finding(ERROR, "include-missing", err.message, file=err.location.file,
                               line=err.location.line, hint="fix the include: path, or create the file"))
        else:
            out.append(Finding(ERROR, "yaml-syntax", err.message, file=err.location.file, line=err.location.line,
                               hint="fix the YAML at this line (indentation, an unclosed bracket or quote)"))
    warnings = list(project.config_warnings)
    if project.config_error:
        errors, failed_warnings = split_compose_stderr(project.config_error)
        warnings += [w for w in failed_warnings if w not in warnings]
        text = "; ".join(errors) or "docker compose config failed without saying why"
        explanation = explain_config_error(text)
        msg = f"docker compose config failed: {text}" + (f" -- {explanation}" if explanation else "")
        file, line = _config_error_loc(project, raw, text)
        out.append(Finding(ERROR, "compose-config", msg, file=file, line=line,
                           hint="fix the files (the other findings, from the raw files, show where), then run "
                                "`docker compose config` again"))
    first = _first_refs(project) if warnings else {}
    out.extend(_warning_finding(project, w, first) for w in dict.fromkeys(warnings))
    return out


def _merged_pairs(node) -> list[tuple[str, yaml.Node, yaml.Node]]:
    """(key, key node, value node) of a YAML mapping, merge keys (``<<: *anchor``) resolved; an
    explicit key wins over a merged one, as in YAML."""
    if not isinstance(node, yaml.MappingNode):
        return []
    merged: list[tuple[str, yaml.Node, yaml.Node]] = []
    own: list[tuple[str, yaml.Node, yaml.Node]] = []
    for k, v in node.value:
        if k.tag == "tag:yaml.org,2002:merge":
            for m in (v.value if isinstance(v, yaml.SequenceNode) else [v]):
                merged.extend(_merged_pairs(m))
        elif isinstance(k, yaml.ScalarNode):
            own.append((k.value, k, v))
    keys = {k for k, _, _ in own}
    return [p for p in merged if p[0] not in keys] + own


def _raw_services(raw: RawProject):
    """(file, service name, service mapping node) for every service written in a compose file."""
    for rf in raw.compose_files:
        for key, _, section in _merged_pairs(rf.node):
            if key != "services":
                continue
            for name, _, node in _merged_pairs(section):
                yield rf, name, node


# --------------------------------------------------------------------------------------------
# resources two included files declare
# --------------------------------------------------------------------------------------------

def _check_redeclared(project: Project, raw: RawProject | None) -> list[Finding]:
    """Every resource that two files joined by ``include:`` declare differently.

    Compose stops at the first ("secrets.x conflicts with imported resource") and names only it.
    Root files (``-f`` a, ``-f`` b, or compose.yaml + its override) merge instead, so a root file
    redeclaring is fine; identical declarations are accepted by Compose too.
    """
    if raw is None:
        return []
    roots = set(raw.roots)
    declared: dict[tuple[str, str], list[tuple[str, int, object, bool]]] = {}
    for rf in raw.compose_files:
        if rf.data is None or rf.node is None:
            continue
        for section, _, node in _merged_pairs(rf.node):
            if section not in RESOURCE_SECTIONS:
                continue
            values = rf.data.get(section) if isinstance(rf.data.get(section), dict) else {}
            for key, knode, _ in _merged_pairs(node):
                declared.setdefault((section, key), []).append(
                    (rf.path, knode.start_mark.line + 1, values.get(key) or {}, rf.path in roots))
    out = []
    root_dir = project.working_dir
    for (section, key), decls in declared.items():
        first_file, first_line, first_value, _ = decls[0]
        for file, line, value, is_root in decls[1:]:
            if is_root or value == first_value or file == first_file:
                continue
            kind = section[:-1]
            where = f"{relative(first_file, root_dir)}:{first_line}"
            msg = (f"{kind} {key} is declared in {where} and again here, differently: Compose stops at the "
                   f"first such conflict (\"{section}.{key} conflicts with imported resource\") and names only it")
            if section == "services":
                hint = (f"a service is defined by one file: delete this copy of {key}, or rename one of the two; "
                        "to change a service for one host, use an override file (-f), not include:")
            else:
                hint = (f"declare {kind} {key} once, in the root file (shared {section} belong there) or in the "
                        "one included file that owns it, and delete this copy: every included file's services "
                        "can use it")
            out.append(Finding(ERROR, "resource-redeclared", msg, subject=f"{section}.{key}", file=file, line=line,
                               hint=hint))
    return out


# --------------------------------------------------------------------------------------------
# literal credentials
# --------------------------------------------------------------------------------------------

def literal_credential(name: str, value: str | None) -> str | None:
    """Why ``name=value`` in ``environment:`` is a literal credential, else None. Never returns the value.

    A credential by name (``env_file.is_sensitive_name``: *PASSWORD*, *SECRET*, *TOKEN*, *_KEY, ...,
    not *_FILE paths) with a literal, non-empty value; or any value holding a PEM block or a URL with a
    password. Interpolated values (``${VAR}``) come from .env or the shell and are not literal; nor are
    /run/secrets paths, booleans, numbers, or settings about a credential (PASSWORD_MIN_LENGTH).
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text or scan_interpolations(text):
        return None
    text = text.replace("$$", "$")
    if SECRETS_DIR in text or _PROVIDER_REF_RE.match(text):
        return None  # a reference to the value (a secret file, Grafana's $__file{...}), not the value
    by_value = looks_like_secret_value(text)
    if by_value:
        return by_value
    if not is_sensitive_name(name) or name.upper() in NOT_CREDENTIAL_NAMES:
        return None
    words = [w for w in re.split(r"[^A-Z0-9]+", name.upper()) if w]
    if words and words[-1] in CREDENTIAL_SETTING_WORDS:
        return None
    if text.lower() in _NOT_A_CREDENTIAL or re.fullmatch(r"[0-9]+[a-z]{0,2}", text.lower()):
        return None
    return "by its name"


def _env_entries(node) -> list[tuple[str, str | None, int]]:
    """(name, value, line) of an ``environment:`` node, mapping or list form."""
    out = []
    if isinstance(node, yaml.MappingNode):
        for name, _, v in _merged_pairs(node):
            if isinstance(v, yaml.ScalarNode) and v.tag != "tag:yaml.org,2002:null":
                out.append((name, v.value, v.start_mark.line + 1))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            if isinstance(item, yaml.ScalarNode) and "=" in item.value:
                name, _, value = item.value.partition("=")
                out.append((name.strip(), value, item.start_mark.line + 1))
    return out


def _check_credentials(project: Project, raw: RawProject | None) -> list[Finding]:
    if raw is None:
        return []
    out = []
    for rf, service, node in _raw_services(raw):
        if service not in project.services:
            continue  # behind an inactive profile
        for key, _, env_node in _merged_pairs(node):
            if key != "environment":
                continue
            for name, value, line in _env_entries(env_node):
                why = literal_credential(name, value)
                if not why:
                    continue
                secret = re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", name.lower())).strip("_")
                what = "a literal credential" if why == "by its name" else f"a literal credential ({why})"
                out.append(Finding(
                    ERROR, "credential-literal",
                    f"environment {name} is {what}: anyone who reads the compose files or `docker inspect` "
                    "has it, and every host gets the same value",
                    service=service, subject=name, file=rf.path, line=line,
                    hint=(f"move it to a secret: `{secret}: {{file: ./secrets/{secret}}}` in the root secrets:, "
                          f"`secrets: [{secret}]` on {service}, and {name}_FILE=/run/secrets/{secret} if the "
                          "image reads *_FILE (the secrets step creates the file)")))
    return out


# --------------------------------------------------------------------------------------------
# secrets
# --------------------------------------------------------------------------------------------

def _read_script(path: str, root_real: str) -> str | None:
    """The text of a regular file inside the project, or None: no symlink escape, no FIFO or
    device, nothing above MAX_SCRIPT_BYTES, nothing binary."""
    real = os.path.realpath(path)
    if not _within(real, root_real):
        return None
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SCRIPT_BYTES:
            return None
        data = fh.read(MAX_SCRIPT_BYTES + 1)
    if b"\0" in data or len(data) > MAX_SCRIPT_BYTES:
        return None
    return data.decode("utf-8", "replace")


def secret_reads(text: str) -> dict[str, int]:
    """/run/secrets paths a script reads -> first line, comment lines left out."""
    reads: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if stripped.startswith(("#", "//")) and not stripped.startswith("#!"):
            continue
        for m in _SECRET_READ_RE.finditer(line):
            reads.setdefault(SECRETS_DIR + m.group(1).rstrip("."), number)
    return reads


def _is_script_name(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(SCRIPT_SUFFIXES) or "entrypoint" in lower


def _mount_scripts(host: str, root_real: str) -> list[str]:
    """Script files a bind mount brings into the container: the file itself, or the script-named
    files of a directory (MAX_SCRIPT_DEPTH levels, MAX_SCRIPTS_PER_MOUNT files, symlinks not followed)."""
    if not os.path.isdir(host):
        return [host] if os.path.isfile(host) else []
    found: list[str] = []
    stack = [(host, 0)]
    while stack and len(found) < MAX_SCRIPTS_PER_MOUNT:
        directory, depth = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if depth < MAX_SCRIPT_DEPTH:
                        stack.append((entry.path, depth + 1))
                elif _is_script_name(entry.name) and entry.is_file():
                    found.append(entry.path)
            except OSError:
                continue
            if len(found) >= MAX_SCRIPTS_PER_MOUNT:
                break
    return sorted(found)


def _script_reads(project: Project, svc: Service, cache: dict) -> dict[str, tuple[str, int, str]]:
    """/run/secrets path -> (script, line, container path) for the project files bind-mounted into
    ``svc`` that read secrets: mounted scripts, script directories and single mounted files (an
    explicitly mounted file, e.g. alertmanager.yml's ``*_file: /run/secrets/x``, counts)."""
    root_real = os.path.realpath(project.working_dir)
    reads: dict[str, tuple[str, int, str]] = {}
    for m in svc.mounts:
        if m.type != "bind" or not m.host_path or mounts.classify(project, svc, m) != "config":
            continue
        host = os.path.normpath(m.host_path)
        if not _within(os.path.realpath(host), root_real):
            continue  # the host's files, not the project's
        for script in _mount_scripts(host, root_real):
            if script not in cache:
                text = _read_script(script, root_real)
                cache[script] = secret_reads(text) if text else {}
            target = m.target if script == host else m.target.rstrip("/") + "/" + os.path.relpath(script, host)
            for path, line in cache[script].items():
                reads.setdefault(path, (script, line, target))
    return reads


def _env_reads(svc: Service) -> set[str]:
    """/run/secrets paths in any environment value (``PGPASSFILE``, Grafana's ``$__file{...}``)."""
    return {SECRETS_DIR + m.group(1).rstrip(".") for value in svc.environment.values() if value
            for m in _SECRET_READ_RE.finditer(value)}


def _undeclared_hint(svc: Service, name: str, registered: bool) -> str:
    hint = f"add `secrets: [{name}]` to service {svc.name}"
    if not registered:
        hint += f" and `{name}: {{file: ./secrets/{name}}}` to the root secrets: registry"
    return hint


def _check_secrets(project: Project) -> list[Finding]:
    out: list[Finding] = []
    registry = {**project.unused_secrets, **project.secrets}
    cache: dict[str, dict[str, int]] = {}
    for svc in project.services.values():
        file, line = _svc_loc(project, svc)
        targets = {ref.target for ref in svc.secrets}
        inline = (svc.secret_paths_read | _env_reads(svc)) - targets
        for path in sorted(inline):
            name = path.rsplit("/", 1)[1]
            out.append(Finding(ERROR, "secret-undeclared", f"reads {path} but does not declare secret {name}",
                               service=svc.name, subject=name, file=file, line=line,
                               hint=_undeclared_hint(svc, name, name in registry)))
        for path, (script, sline, target) in sorted(_script_reads(project, svc, cache).items()):
            if path in targets or path in inline:
                continue
            name = path.rsplit("/", 1)[1]
            out.append(Finding(
                ERROR, "secret-undeclared",
                f"script {relative(script, project.working_dir)} (mounted at {target}) reads {path}, but service "
                f"{svc.name} does not declare secret {name}", service=svc.name, subject=name, file=script,
                line=sline, hint=_undeclared_hint(svc, name, name in registry)))
        for ref in svc.secrets:
            if ref.source not in registry:
                out.append(Finding(ERROR, "secret-unregistered",
                                   f"declares secret {ref.source}, which the top-level secrets: registry does not have",
                                   service=svc.name, subject=ref.source, file=file, line=line,
                                   hint=f"add `{ref.source}: {{file: ./secrets/{ref.source}}}` under the root file's "
                                        "secrets:, or use the registered name"))
    for name, secret in sorted(project.unused_secrets.items()):
        loc = secret.location
        out.append(Finding(WARNING, "secret-unused", f"registry secret {name} is used by no service",
                           subject=name, file=loc.file if loc else _root_file(project),
                           line=loc.line if loc else None,
                           hint=f"remove {name} from the registry, or declare it on the service that reads it"))
    out.extend(_check_external_secrets(project, registry))
    out.extend(_check_secret_aliases(project, registry))
    return out


def _users(project: Project) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {}
    for svc in project.services.values():
        for ref in svc.secrets:
            users.setdefault(ref.source, []).append(svc.name)
    return users


def _check_external_secrets(project: Project, registry: dict) -> list[Finding]:
    out = []
    users = _users(project)
    for name, secret in sorted(registry.items()):
        if not secret.external:
            continue
        loc = secret.location
        for service in users.get(name) or [None]:
            out.append(Finding(
                ERROR, "secret-external-swarm",
                f"secret {name} is `external: true`: only Docker Swarm (docker stack deploy) provides external "
                f"secrets; `docker compose up` stops with \"unsupported external secret {name}\"",
                service=service, subject=name, file=loc.file if loc else _root_file(project),
                line=loc.line if loc else None,
                hint=f"replace `external: true` with `file: ./secrets/{name}` (the secrets step creates the file)"))
    return out


def _stem(path: str) -> str:
    base = os.path.basename(path)
    return base.split(".", 1)[0] if not base.startswith(".") else base


def _check_secret_aliases(project: Project, registry: dict) -> list[Finding]:
    out: list[Finding] = []
    users = _users(project)
    by_file: dict[str, list[str]] = {}
    for name, secret in sorted(registry.items()):
        if secret.file:
            by_file.setdefault(secret.file, []).append(name)
    for path, names in sorted(by_file.items()):
        if len(names) > 1:
            keep, *others = names
            for other in others:
                loc = registry[other].location
                out.append(Finding(ERROR, "secret-duplicate",
                                   f"secrets {keep} and {other} both read {path}: two names for one value",
                                   subject=other, file=loc.file if loc else _root_file(project),
                                   line=loc.line if loc else None,
                                   hint=f"keep one name ({keep}) and point every service at it"))
    order = {name: i for i, name in enumerate(registry)}
    for name, secret in sorted(registry.items()):
        # the longest other name that this one ends with (after _ or -), or its file's stem names;
        # looked up, not searched: linear in the registry
        candidates = {name[i + 1:] for i, c in enumerate(name) if c in "_-"}
        if secret.file:
            stem = _stem(secret.file)
            if stem in registry and registry[stem].file != secret.file:
                candidates.add(stem)
        candidates = [c for c in candidates if c != name and c in registry]
        if not candidates:
            continue
        shared = min(candidates, key=lambda c: (-len(c), order[c]))
        loc = secret.location
        msg = (f"secret {name} is a second name for the shared secret {shared}"
               + (f" (file {os.path.basename(secret.file)})" if secret.file else ""))
        hint = f"declare `secrets: [{shared}]` on the service and delete {name} from the registry"
        for service in users.get(name) or [None]:
            out.append(Finding(ERROR, "secret-alias", msg, service=service, subject=name,
                               file=loc.file if loc else _root_file(project), line=loc.line if loc else None,
                               hint=hint))
    return out


# --------------------------------------------------------------------------------------------
# $VAR traps, bind mounts
# --------------------------------------------------------------------------------------------

_TRAP_KEYS = ("command", "entrypoint", "healthcheck")


def _meant_for_compose(project: Project) -> set[str]:
    """Variables compose is meant to substitute: set in .env, listed in its ``.env.example`` (the
    env step renders .env from it, so a fresh clone has none yet), or referenced outside command,
    entrypoint and healthcheck (in ``environment:``, ``image:``, labels...)."""
    env_file = project.env_file or os.path.join(project.working_dir, ".env")
    names = set(project.env_file_vars) | set(read_dotenv(env_file + ".example"))
    for ref in project.env_refs:
        parts = (ref.path or "").split(".")
        if not (len(parts) > 2 and parts[0] == "services" and parts[2].split("[")[0] in _TRAP_KEYS):
            names.add(ref.name)
    return names


def _check_interpolation(project: Project) -> list[Finding]:
    out = []
    defined = _meant_for_compose(project)
    for svc in project.services.values():
        for ref in svc.raw_interpolations:
            if ref.has_default or ref.required or ref.name in defined:
                continue  # an explicit default/required marker, or a value from .env: meant for compose
            key = (ref.path or "").split(".")[2].split("[")[0] if ref.path else "command"
            out.append(Finding(
                ERROR, "interpolation-trap",
                f"{ref.text} in {key} is replaced by compose when it parses the file ({ref.name} is not in .env "
                "nor .env.example, so it becomes empty or the value of your shell), not by the container's shell",
                service=svc.name, subject=ref.name, file=ref.location.file, line=ref.location.line,
                hint=f"write ${ref.text} if the container should expand it, or set {ref.name} in .env"))
    return out


def _looks_like_file(path: str) -> bool:
    base = os.path.basename(path)
    if "." not in base.lstrip("."):
        return False
    return base.rsplit(".", 1)[1].lower() in FILE_SUFFIXES


def _example_sibling(path: str) -> str | None:
    base, ext = os.path.splitext(path)
    for candidate in (path + ".example", f"{base}.example{ext}", path + ".sample", path + ".dist"):
        if os.path.isfile(candidate):
            return candidate
    return None


def _check_mounts(project: Project) -> list[Finding]:
    out = []
    for svc in project.services.values():
        file, line = _svc_loc(project, svc)
        for m in svc.mounts:
            if m.type != "bind" or not m.host_path:
                continue
            example = _example_sibling(m.host_path)
            if not os.path.exists(m.host_path) and (example or _looks_like_file(m.host_path)):
                hint = (f"copy {os.path.basename(example)} to {os.path.basename(m.host_path)} and edit it"
                        if example else "create the file before `docker compose up`")
                out.append(Finding(ERROR, "bind-missing-file",
                                   f"bind mount {m.host_path} -> {m.target}: the file does not exist, Docker "
                                   "would create an empty directory in its place",
                                   service=svc.name, file=file, line=line, hint=hint))
            elif os.path.isdir(m.host_path) and example and not os.path.isdir(example):
                out.append(Finding(ERROR, "bind-missing-file",
                                   f"bind mount {m.host_path} -> {m.target} is a directory but "
                                   f"{os.path.basename(example)} is a file: Docker created the directory "
                                   "because the file was missing", service=svc.name, file=file, line=line,
                                   hint=f"remove the empty directory and copy {os.path.basename(example)} in its "
                                        "place"))
    return out


# --------------------------------------------------------------------------------------------
# security baseline
# --------------------------------------------------------------------------------------------

def _is_root(user: str) -> bool:
    name = user.split(":", 1)[0].strip()
    return name in ("root", "0")


def _writable_targets(svc: Service) -> set[str]:
    decl = (svc.extensions.get("x-hyhome") or {}) if isinstance(svc.extensions.get("x-hyhome"), dict) else {}
    value = decl.get("writable") or []
    return {str(v).rstrip("/") or "/" for v in value} if isinstance(value, list) else set()


def one_shot_services(project: Project) -> set[str]:
    """Jobs that run once and exit: others wait on them with service_completed_successfully, they
    declare ``restart: "no"`` or ``on-failure``, or ``x-hyhome: {kind: init}``."""
    out = compose_up.init_services(project)
    out |= {s.name for s in project.services.values() if str(s.restart or "").startswith("on-failure")}
    return out


def _is_docker_socket(m) -> bool:
    return bool(m.host_path) and (m.host_path in DOCKER_SOCKETS or m.target in DOCKER_SOCKETS
                                  or m.host_path.endswith("/docker.sock"))


def _config_bind_reason(svc: Service, m) -> str:
    """Why mounts.classify calls a writable bind configuration."""
    decl = svc.extensions.get("x-hyhome")
    declared = decl.get("config") if isinstance(decl, dict) else None
    if isinstance(declared, list) and (m.target.rstrip("/") or "/") in {str(t).rstrip("/") or "/" for t in declared}:
        return "listed in x-hyhome.config"
    if os.path.isdir(m.host_path):
        return "a directory holding git-tracked files"
    return "a file"


def _non_root_finding(svc: Service, identities: IdentityResolver) -> tuple[str, str, str] | None:
    """(severity, message, hint) of security-non-root for a service, or None when it runs as non-root.

    A declared ``user:`` is the answer (root: an error; a name is taken as non-root, looking it up
    would need a container). Without one, the identity resolver answers from the image (its
    Config.User when present on the engine, else the built-in table and image_users): root or
    unknown is a warning, a known non-root user is fine.
    """
    if svc.user not in (None, ""):
        if _is_root(str(svc.user)):
            return (ERROR, f"runs as root (user: {svc.user})",
                    "run as a non-root uid, or declare an exception with the reason")
        return None
    try:
        ident = identities.service(svc)
    except HyHomeError as e:    # e.g. an image_users entry that is not "uid[:gid]"
        ident = Identity(0, 0, "unresolved", e.msg)
    if ident.source == "unresolved":
        return (WARNING, f"no user: declared, and which user its image runs as could not be determined "
                         f"({ident.detail}): it may be root",
                "declare `user: \"<uid>:<gid>\"` (non-root); if the image already runs as a non-root user, add its "
                "repository to hyhome_image_users (repository: \"uid:gid\"; validate-docker-compose.sh: "
                "--image-user REPOSITORY=UID:GID) so every step knows it")
    if ident.uid == 0:
        how = ("its Config.User" if ident.source == "image-config"
               else "the built-in image table" if ident.source == "image-table" else ident.source)
        return (WARNING, f"no user: declared and image {svc.image} runs as root ({how}: {ident.detail})",
                "declare `user: \"<uid>:<gid>\"` (non-root) if the image works that way, or declare an exception "
                "with the reason")
    return None


def offline_identities(image_users: dict | None = None) -> IdentityResolver:
    """An identity resolver that asks no engine: ``user:``, the built-in table and ``image_users``."""
    return IdentityResolver(image_users=image_users, images=LocalImages())


def _check_security(project: Project, identities: IdentityResolver | None = None) -> list[Finding]:
    out: list[Finding] = []
    one_shot = one_shot_services(project)
    identities = identities if identities is not None else offline_identities()

    def add(svc, rule, msg, hint, severity=ERROR):
        file, line = _svc_loc(project, svc)
        out.append(Finding(severity, rule, msg, service=svc.name, file=file, line=line, hint=hint))

    for svc in project.services.values():
        opts = {o.replace("=", ":").replace(" ", "").lower() for o in svc.security_opt}
        if not opts & {"no-new-privileges:true", "no-new-privileges"}:
            add(svc, "security-no-new-privileges", "security_opt does not contain no-new-privileges:true",
                "add `security_opt: [\"no-new-privileges:true\"]` (or merge the &security-baseline anchor)")
        if "ALL" not in {c.upper() for c in svc.cap_drop}:
            add(svc, "security-cap-drop-all", "cap_drop does not contain ALL",
                "add `cap_drop: [ALL]` and cap_add only the capabilities the service needs")
        non_root = _non_root_finding(svc, identities)
        if non_root:
            add(svc, "security-non-root", non_root[1], non_root[2], non_root[0])
        if svc.privileged:
            add(svc, "security-privileged", "privileged: true gives the container every capability and device",
                "remove privileged and cap_add the specific capabilities needed")
        for what, value in (("network", svc.network_mode), ("pid", svc.pid), ("ipc", svc.ipc)):
            if value == "host":
                key = "network_mode" if what == "network" else what
                add(svc, "security-host-namespace", f"shares the host {what} namespace ({key}: host)",
                    f"remove {key}: host" + (" and publish ports instead" if what == "network" else ""))
        writable = _writable_targets(svc)
        for m in svc.mounts:
            if _is_docker_socket(m):
                add(svc, "security-docker-socket", f"mounts the Docker socket ({m.host_path} -> {m.target}): "
                    "root on the host for anyone inside the container",
                    "use a socket proxy with a read-only API allow-list, or declare an exception with the reason")
                continue
            if (m.host_path and not m.read_only and (m.target.rstrip("/") or "/") not in writable
                    and mounts.classify(project, svc, m) == "config"):
                add(svc, "security-writable-bind",
                    f"bind mount {m.target} is configuration ({_config_bind_reason(svc, m)}) mounted writable: "
                    "the container can change the project's files",
                    f"mount it read-only (:ro), or list {m.target} in x-hyhome.writable if the service writes there",
                    WARNING)
        if (svc.healthcheck is None or svc.healthcheck.get("disable")) and svc.name not in one_shot:
            state = "disabled" if svc.healthcheck else "missing"
            add(svc, "security-healthcheck", f"healthcheck {state}: nothing can tell when it is ready",
                "add a healthcheck so dependants can wait on service_healthy (a one-shot job needs none: "
                "declare restart: \"no\" or on-failure)")
        if not svc.mem_limit:
            add(svc, "security-memory-limit", "no memory limit (mem_limit or deploy.resources.limits.memory)",
                "set mem_limit to what the service needs at peak")
    return out


# --------------------------------------------------------------------------------------------
# exceptions
# --------------------------------------------------------------------------------------------

def _rule_id(key: str) -> str | None:
    """A rule id from an exception key: the id itself, or a security rule without its prefix."""
    if key in RULES:
        return key
    return f"security-{key}" if f"security-{key}" in RULES else None


def _apply_exceptions(project: Project, findings: list[Finding]) -> list[Finding]:
    """Mark findings covered by a service's declared exception; report bad declarations."""
    declared: dict[str, dict[str, str]] = {}
    extra: list[Finding] = []

    def note(svc, severity, msg, hint):
        file, line = _svc_loc(project, svc)
        extra.append(Finding(severity, "x-hyhome", msg, service=svc.name, file=file, line=line, hint=hint))

    for svc in project.services.values():
        decl = svc.extensions.get("x-hyhome")
        if decl is None:
            continue
        if not isinstance(decl, dict):
            note(svc, WARNING, "x-hyhome is not a mapping",
                 "write x-hyhome: {writable: [...], exceptions: {rule: reason}}")
            continue
        exceptions = decl.get("exceptions") or {}
        if not isinstance(exceptions, dict):
            note(svc, WARNING, "x-hyhome.exceptions is not a mapping of rule id to reason",
                 "write exceptions: {security-non-root: \"why\"}")
            exceptions = {}
        for key, reason in exceptions.items():
            rule = _rule_id(str(key))
            if rule is None:  # other roles may own it (e.g. a verify rule): tell, don't warn
                note(svc, INFO, f"exception for {key}, which is not a validate rule (ignored here)",
                     "validate rules: " + ", ".join(sorted(RULES)))
            elif not isinstance(reason, str) or not reason.strip():
                note(svc, WARNING, f"exception for {rule} has no written reason, so it is not applied",
                     f"write why: exceptions: {{{rule}: \"<reason>\"}}")
            else:
                declared.setdefault(svc.name, {})[rule] = reason.strip()
        writable = decl.get("writable")
        if writable is not None and not isinstance(writable, list):
            note(svc, WARNING, "x-hyhome.writable is not a list of container paths",
                 "write writable: [/path/in/container]")
        else:
            binds = {m.target.rstrip("/") or "/" for m in svc.mounts if m.host_path}
            for target in sorted(_writable_targets(svc) - binds):
                note(svc, WARNING, f"x-hyhome.writable lists {target}, which is not a bind mount of this service",
                     "remove it, or fix the path")
    out = []
    used: set[tuple[str, str]] = set()
    for f in findings:
        reason = declared.get(f.service or "", {}).get(f.rule)
        if reason:
            used.add((f.service, f.rule))
            f = f.accept(reason)
        out.append(f)
    for service, rules in declared.items():
        for rule in rules:
            if (service, rule) not in used:
                note(project.services[service], INFO, f"exception for {rule} matches no finding",
                     "remove the stale exception so it cannot hide a future problem")
    return out + extra


def _trap_names(findings: list[Finding]) -> set[str]:
    return {f.subject for f in findings if f.rule == "interpolation-trap" and f.subject}


@quiet_gc()
def validate(project: Project, lint: list[Finding] | None = None, raw: RawProject | None = None,
             identities: IdentityResolver | None = None) -> list[Finding]:
    """Every finding for ``project`` (plus yamllint findings, if given), in a stable order.

    ``raw`` (``compose_model.load_raw``) enables the rules that read the files as written
    (credential-literal, resource-redeclared); without it they are skipped. ``identities`` answers
    which user a service without ``user:`` runs as (default: ``offline_identities()``, no engine).
    """
    findings = [
        *_check_files(project, raw),
        *(lint or []),
        *_check_redeclared(project, raw),
        *_check_credentials(project, raw),
        *_check_secrets(project),
        *_check_interpolation(project),
        *_check_mounts(project),
        *_check_security(project, identities),
    ]
    trapped = _trap_names(findings)   # compose's "variable is not set" warning for a trap says it twice
    findings = [f for f in findings if not (f.rule == "compose-warning" and f.subject in trapped)]
    findings = _apply_exceptions(project, findings)
    unique = {}
    for f in findings:
        unique.setdefault((f.severity, f.rule, f.service, f.file, f.line, f.message), f)
    return sorted(unique.values(), key=sort_key)


def lint_files(paths: list[str], project_dir: str | None = None, config: str | None = None) -> list[Finding]:
    """yamllint on each compose file: the project's .yamllint when it has one, else DEFAULT_YAMLLINT.

    Syntax errors are left to the ``yaml-syntax`` check (reported once, with file:line).
    ``key-duplicates`` is an error (compose files with duplicate keys mean something else than they
    say); every other problem is a warning.
    """
    from yamllint import linter
    from yamllint.config import YamlLintConfig, YamlLintConfigError

    conf_path = None
    if config is None and project_dir:
        for name in PROJECT_YAMLLINT_FILES:
            candidate = os.path.join(project_dir, name)
            if os.path.isfile(candidate):
                conf_path = candidate
                break
    try:
        conf = YamlLintConfig(file=conf_path) if conf_path else YamlLintConfig(config or DEFAULT_YAMLLINT)
    except YamlLintConfigError as e:
        raise HyHomeError(f"invalid yamllint configuration {conf_path or '(given)'}: {e}") from None
    out = []
    for path in paths:
        rel = os.path.relpath(path, project_dir) if project_dir else path
        if conf.is_file_ignored(rel):
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError:
            continue  # the model already reports unreadable files
        for problem in linter.run(text, conf, path):
            if problem.rule is None:
                continue
            severity = ERROR if problem.rule == "key-duplicates" else WARNING
            out.append(Finding(severity, "yaml-lint", f"{problem.desc} ({problem.rule})", file=path,
                               line=problem.line,
                               hint="fix the YAML style; a project .yamllint overrides the default rules"))
    return out


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

def build_report(project: Project, findings: list[Finding]) -> dict:
    summary = summarize(findings)
    return {
        "project": project.name,
        "project_dir": project.working_dir,
        "files": [relative(f, project.working_dir) for f in project.files],
        "source": project.source,
        "ok": summary["error"] == 0,
        "summary": summary,
        "findings": [f.as_dict(project.working_dir) for f in findings],
    }


def render_table(report: dict) -> str:
    """The human table of a report: one row per finding, its fix hint underneath, a summary line."""
    lines = render_findings(report["findings"])
    lines.append(f"validate {report['project']}: {counts_text(report['summary'])} -- "
                 + ("OK" if report["ok"] else "FAILED"))
    return "\n".join(lines)


def run(project_dir, files=None, env_file=None, profiles=("*",), docker="docker", yamllint=True,
        yamllint_config=None, loader=None, image_users=None,
        inspect_images=True) -> tuple[Project, list[Finding], dict]:
    """Load the project once, run every check, return (project, findings, report).

    ``loader`` replaces ``compose_model.load_project`` (modules pass the run's project context);
    it is given the raw files read here (``raw=``), so they are read once.

    yamllint (pure Python) runs in a thread while `docker compose config` (a subprocess) runs: the
    two slowest parts overlap.

    Which user a service without ``user:`` runs as: the image's Config.User when the image is
    already on the engine (one ``docker image inspect`` for the project, never a container; skipped
    with ``inspect_images=False``), else the built-in table plus ``image_users``.
    """
    raw = load_raw(project_dir, files=files, env_file=env_file)
    with ThreadPoolExecutor(max_workers=1) as pool:
        linting = pool.submit(lint_files, raw.paths, raw.project_dir, yamllint_config) if yamllint else None
        project = (loader or load_project)(project_dir, files=files, env_file=env_file,
                                           profiles=list(profiles or []), docker=docker, raw=raw)
        lint = linting.result() if linting else []
    refs = [s.image for s in project.services.values() if s.image and s.user in (None, "")]
    images = LocalImages(refs if inspect_images else (), docker_cli=docker)
    identities = IdentityResolver(image_users=image_users, images=images)
    findings = validate(project, lint, raw, identities)
    return project, findings, build_report(project, findings)


# --------------------------------------------------------------------------------------------
# command line (scripts/validate-docker-compose.sh)
# --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m ...compose_validate PROJECT_DIR [--json PATH] [-f FILE] [--profile P] [--env-file F]``.

    Exit 0 when there is no error, 1 when there are errors, 2 on bad input (one line on stderr, naming
    the file), 3 on an internal error (one line; never a traceback, never 1).
    """
    return guarded_cli("validate", _main, argv)


def _main(argv: list[str] | None) -> int:
    import argparse

    from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import atomic_write

    parser = argparse.ArgumentParser(prog="validate-docker-compose.sh",
                                     description="Static checks of a Docker Compose project (AC-2).",
                                     epilog=EXIT_CODES_HELP)
    parser.add_argument("project_dir", nargs="?", default=os.environ.get("HYHOME_PROJECT_DIR") or ".",
                        help="the compose project (default: $HYHOME_PROJECT_DIR, else the current directory)")
    parser.add_argument("--json", dest="json_path", help="also write the report as JSON to this path")
    parser.add_argument("-f", "--file", dest="files", action="append", help="compose file (repeatable)")
    parser.add_argument("--env-file", help="env file for interpolation (default: PROJECT_DIR/.env)")
    parser.add_argument("--profile", dest="profiles", action="append",
                        help="profile to validate (repeatable; default: every profile)")
    parser.add_argument("--no-yamllint", action="store_true", help="skip yamllint")
    parser.add_argument("--docker", default="docker", help="docker binary (default: docker)")
    parser.add_argument("--image-user", dest="image_users", action="append", default=[], metavar="REPOSITORY=UID:GID",
                        help="the user an image runs as, on top of the built-in table (repeatable; the CLI form of "
                             "hyhome_image_users)")
    parser.add_argument("--strict", action="store_true", help="exit non-zero on warnings too")
    args = parser.parse_args(argv)
    image_users = {}
    for item in args.image_users:
        repo, sep, owner = item.partition("=")
        if not sep or not repo.strip() or not owner.strip():
            parser.error(f"--image-user {item!r}: write REPOSITORY=UID[:GID], e.g. myorg/worker=1500:1500")
        image_users[repo.strip()] = owner.strip()
    _, _, report = run(args.project_dir, files=args.files, env_file=args.env_file,
                       profiles=args.profiles or ["*"], docker=args.docker, yamllint=not args.no_yamllint,
                       image_users=image_users)
    if args.json_path:
        atomic_write(os.path.abspath(args.json_path),
                     (json.dumps(report, indent=2, sort_keys=True) + "\n").encode(), 0o644)
    print(render_table(report))
    failed = not report["ok"] or (args.strict and report["summary"]["warning"] > 0)
    return EXIT_FINDINGS if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
