"""Static checks of a compose project (AC-2): pure core over the compose model.

``validate(project)`` returns findings in a stable order; ``lint_files(paths)`` runs yamllint;
``run(project_dir, ...)`` does both and builds the report the module, the role and
``scripts/validate-docker-compose.sh`` print.

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
import sys
from dataclasses import asdict, dataclass

from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
    Project,
    Service,
    load_project,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

SEVERITIES = ("error", "warning", "info")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}

# rule id -> (severity, one-line description); the table README and the module docs render.
RULES: dict[str, tuple[str, str]] = {
    "yaml-syntax": ("error", "a compose file is not valid YAML"),
    "include-missing": ("error", "an include: entry names a file that does not exist"),
    "yaml-lint": ("warning", "yamllint problem (style or duplicate keys)"),
    "compose-config": ("error", "`docker compose config` rejects the project"),
    "compose-warning": ("warning", "`docker compose config` printed a warning"),
    "secret-undeclared": ("error", "a service reads /run/secrets/X without declaring secret X"),
    "secret-unregistered": ("error", "a service declares a secret the top-level registry does not have"),
    "secret-unused": ("warning", "a registry secret no service uses"),
    "secret-alias": ("error", "a second name for a shared secret (e.g. alertmanager_smtp_password)"),
    "secret-duplicate": ("error", "two registry entries point at the same file"),
    "interpolation-trap": ("error", "$VAR in command/entrypoint/healthcheck interpolated by compose at parse time"),
    "bind-missing-file": ("error", "a bind-mounted file does not exist (Docker would create a directory)"),
    "security-no-new-privileges": ("error", "security_opt lacks no-new-privileges:true"),
    "security-cap-drop-all": ("error", "cap_drop lacks ALL"),
    "security-non-root": ("error", "the service runs as root (warning when no user is declared)"),
    "security-privileged": ("error", "privileged: true"),
    "security-host-namespace": ("error", "host pid, network or ipc namespace"),
    "security-writable-bind": ("error", "writable bind mount not declared in x-hyhome.writable"),
    "security-healthcheck": ("error", "no healthcheck (or disabled)"),
    "security-memory-limit": ("error", "no memory limit"),
    "security-docker-socket": ("error", "the Docker socket is mounted"),
    "x-hyhome": ("warning", "invalid x-hyhome declaration (exception without reason, unknown rule, ...)"),
}

DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
# Basename suffixes that mark a bind source as a file, when it is missing and we must guess.
FILE_SUFFIXES = {
    "cfg", "cnf", "conf", "crt", "css", "csv", "env", "hcl", "html", "ini", "js", "json", "key", "lua",
    "pem", "properties", "py", "rules", "sh", "sql", "tmpl", "toml", "tpl", "txt", "xml", "yaml", "yml",
}

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


@dataclass(frozen=True)
class Finding:
    severity: str            # error | warning | info
    rule: str                # a key of RULES
    service: str | None
    file: str | None         # absolute path when known
    line: int | None         # 1-based when known
    message: str
    hint: str
    accepted: str | None = None   # the written reason of a declared exception

    def sort_key(self):
        return (_RANK[self.severity], self.file or "", self.line or 0, self.service or "", self.rule, self.message)

    def as_dict(self, project_dir: str | None = None) -> dict:
        d = asdict(self)
        if project_dir and self.file:
            d["file"] = _rel(self.file, project_dir)
        return d


def _rel(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)
    return path if rel.startswith("..") else rel


# --------------------------------------------------------------------------------------------
# docker compose config errors in plain words
# --------------------------------------------------------------------------------------------

_EXPLANATIONS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"(\w+)\.([\w.-]+) conflicts with imported resource"),
     "{1} '{2}' is defined both in the root file and in a file it includes; a resource may be defined only "
     "once. Keep shared resources (secrets, networks, volumes) in the root file and delete the copy from the "
     "included file."),
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
# checks
# --------------------------------------------------------------------------------------------

def _root_file(project: Project) -> str | None:
    return project.files[0] if project.files else None


def _svc_loc(project: Project, svc: Service) -> tuple[str | None, int | None]:
    if svc.location:
        return svc.location.file, svc.location.line
    return _root_file(project), None


def _check_files(project: Project) -> list[Finding]:
    out = []
    for err in project.file_errors:
        if err.message.startswith("included file"):
            out.append(Finding("error", "include-missing", None, err.location.file, err.location.line, err.message,
                               "fix the include: path, or create the file"))
        else:
            out.append(Finding("error", "yaml-syntax", None, err.location.file, err.location.line, err.message,
                               "fix the YAML at this line (indentation, an unclosed bracket or quote)"))
    if project.config_error:
        explanation = explain_config_error(project.config_error)
        msg = f"docker compose config failed: {project.config_error}"
        if explanation:
            msg += f" -- {explanation}"
        out.append(Finding("error", "compose-config", None, _root_file(project), None, msg,
                           "run `docker compose config` in the project directory after fixing; the checks "
                           "below ran on the raw files"))
    for warning in project.config_warnings:
        out.append(Finding("warning", "compose-warning", None, _root_file(project), None, warning,
                           "set the variable in .env, or give it a default with ${VAR:-default}"))
    return out


def _check_secrets(project: Project) -> list[Finding]:
    out: list[Finding] = []
    registry = {**project.unused_secrets, **project.secrets}
    for svc in project.services.values():
        file, line = _svc_loc(project, svc)
        targets = {ref.target for ref in svc.secrets}
        for path in sorted(svc.secret_paths_read - targets):
            name = path.rsplit("/", 1)[1]
            registered = name in registry
            hint = f"add `secrets: [{name}]` to service {svc.name}"
            if not registered:
                hint += f" and `{name}: {{file: ./secrets/{name}}}` to the root secrets: registry"
            out.append(Finding("error", "secret-undeclared", svc.name, file, line,
                               f"reads {path} but does not declare secret {name}", hint))
        for ref in svc.secrets:
            if ref.source not in registry:
                out.append(Finding("error", "secret-unregistered", svc.name, file, line,
                                   f"declares secret {ref.source}, which the top-level secrets: registry does not have",
                                   f"add `{ref.source}: {{file: ./secrets/{ref.source}}}` under the root file's "
                                   "secrets:, or use the registered name"))
    for name, secret in sorted(project.unused_secrets.items()):
        loc = secret.location
        out.append(Finding("warning", "secret-unused", None, loc.file if loc else _root_file(project),
                           loc.line if loc else None, f"registry secret {name} is used by no service",
                           f"remove {name} from the registry, or declare it on the service that reads it"))
    out.extend(_check_secret_aliases(project, registry))
    return out


def _stem(path: str) -> str:
    base = os.path.basename(path)
    return base.split(".", 1)[0] if not base.startswith(".") else base


def _check_secret_aliases(project: Project, registry: dict) -> list[Finding]:
    out: list[Finding] = []
    users: dict[str, list[str]] = {}
    for svc in project.services.values():
        for ref in svc.secrets:
            users.setdefault(ref.source, []).append(svc.name)
    by_file: dict[str, list[str]] = {}
    for name, secret in sorted(registry.items()):
        if secret.file:
            by_file.setdefault(secret.file, []).append(name)
    for path, names in sorted(by_file.items()):
        if len(names) > 1:
            keep, *others = names
            for other in others:
                loc = registry[other].location
                out.append(Finding("error", "secret-duplicate", None, loc.file if loc else _root_file(project),
                                   loc.line if loc else None,
                                   f"secrets {keep} and {other} both read {path}: two names for one value",
                                   f"keep one name ({keep}) and point every service at it"))
    for name, secret in sorted(registry.items()):
        shared = None
        for other in sorted(registry, key=len, reverse=True):
            if other == name:
                continue
            if name.endswith(("_" + other, "-" + other)) or (
                secret.file and _stem(secret.file) == other and registry[other].file != secret.file
            ):
                shared = other
                break
        if not shared:
            continue
        loc = secret.location
        msg = (f"secret {name} is a second name for the shared secret {shared}"
               + (f" (file {os.path.basename(secret.file)})" if secret.file else ""))
        hint = f"declare `secrets: [{shared}]` on the service and delete {name} from the registry"
        for service in users.get(name) or [None]:
            out.append(Finding("error", "secret-alias", service, loc.file if loc else _root_file(project),
                               loc.line if loc else None, msg, hint))
    return out


def _check_interpolation(project: Project) -> list[Finding]:
    out = []
    defined = set(project.env_file_vars)
    for svc in project.services.values():
        for ref in svc.raw_interpolations:
            if ref.has_default or ref.required or ref.name in defined:
                continue  # an explicit default/required marker, or a value from .env: meant for compose
            key = (ref.path or "").split(".")[2].split("[")[0] if ref.path else "command"
            out.append(Finding(
                "error", "interpolation-trap", svc.name, ref.location.file, ref.location.line,
                f"{ref.text} in {key} is replaced by compose when it parses the file ({ref.name} is not in .env, "
                "so it becomes empty or the value of your shell), not by the container's shell",
                f"write ${ref.text} if the container should expand it, or set {ref.name} in .env"))
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
                out.append(Finding("error", "bind-missing-file", svc.name, file, line,
                                   f"bind mount {m.host_path} -> {m.target}: the file does not exist, Docker "
                                   "would create an empty directory in its place", hint))
            elif os.path.isdir(m.host_path) and example and not os.path.isdir(example):
                out.append(Finding("error", "bind-missing-file", svc.name, file, line,
                                   f"bind mount {m.host_path} -> {m.target} is a directory but "
                                   f"{os.path.basename(example)} is a file: Docker created the directory "
                                   "because the file was missing",
                                   f"remove the empty directory and copy {os.path.basename(example)} in its place"))
    return out


def _is_root(user: str) -> bool:
    name = user.split(":", 1)[0].strip()
    return name in ("root", "0")


def _writable_targets(svc: Service) -> set[str]:
    decl = (svc.extensions.get("x-hyhome") or {}) if isinstance(svc.extensions.get("x-hyhome"), dict) else {}
    value = decl.get("writable") or []
    return {str(v).rstrip("/") or "/" for v in value} if isinstance(value, list) else set()


def _one_shot(project: Project) -> set[str]:
    """Init sidecars: services others wait on with service_completed_successfully."""
    return {dep for svc in project.services.values() for dep, spec in svc.depends_on.items()
            if (spec or {}).get("condition") == "service_completed_successfully"}


def _check_security(project: Project) -> list[Finding]:
    out: list[Finding] = []
    one_shot = _one_shot(project)

    def add(svc, rule, msg, hint, severity="error"):
        file, line = _svc_loc(project, svc)
        out.append(Finding(severity, rule, svc.name, file, line, msg, hint))

    for svc in project.services.values():
        opts = {o.replace("=", ":").replace(" ", "").lower() for o in svc.security_opt}
        if not opts & {"no-new-privileges:true", "no-new-privileges"}:
            add(svc, "security-no-new-privileges", "security_opt does not contain no-new-privileges:true",
                "add `security_opt: [\"no-new-privileges:true\"]` (or merge the &security-baseline anchor)")
        if "ALL" not in {c.upper() for c in svc.cap_drop}:
            add(svc, "security-cap-drop-all", "cap_drop does not contain ALL",
                "add `cap_drop: [ALL]` and cap_add only the capabilities the service needs")
        if svc.user is None:
            add(svc, "security-non-root", "no user: declared; the image's default user may be root",
                "declare `user: \"<uid>:<gid>\"` (non-root)", "warning")
        elif _is_root(svc.user):
            add(svc, "security-non-root", f"runs as root (user: {svc.user})",
                "run as a non-root uid, or declare an exception with the reason")
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
            if m.host_path and (m.host_path in DOCKER_SOCKETS or m.target in DOCKER_SOCKETS
                                or m.host_path.endswith("/docker.sock")):
                add(svc, "security-docker-socket", f"mounts the Docker socket ({m.host_path} -> {m.target}): "
                    "root on the host for anyone inside the container",
                    "use a socket proxy with a read-only API allow-list, or declare an exception with the reason")
            if m.host_path and not m.read_only and (m.target.rstrip("/") or "/") not in writable:
                add(svc, "security-writable-bind", f"bind mount {m.target} is writable but not declared writable",
                    f"mount it read-only (:ro), or add {m.target} to x-hyhome.writable if the service writes there")
        if (svc.healthcheck is None or svc.healthcheck.get("disable")) and svc.name not in one_shot:
            state = "disabled" if svc.healthcheck else "missing"
            add(svc, "security-healthcheck", f"healthcheck {state}: nothing can tell when it is ready",
                "add a healthcheck so dependants can wait on service_healthy")
        if not svc.mem_limit:
            add(svc, "security-memory-limit", "no memory limit (mem_limit or deploy.resources.limits.memory)",
                "set mem_limit to what the service needs at peak")
    return out


def _rule_id(key: str) -> str | None:
    """A rule id from an exception key: the id itself, or a security rule without its prefix."""
    if key in RULES:
        return key
    return f"security-{key}" if f"security-{key}" in RULES else None


def _apply_exceptions(project: Project, findings: list[Finding]) -> list[Finding]:
    """Mark findings covered by a service's declared exception; report bad declarations."""
    declared: dict[str, dict[str, str]] = {}
    extra: list[Finding] = []
    for svc in project.services.values():
        decl = svc.extensions.get("x-hyhome")
        if decl is None:
            continue
        file, line = _svc_loc(project, svc)
        if not isinstance(decl, dict):
            extra.append(Finding("warning", "x-hyhome", svc.name, file, line, "x-hyhome is not a mapping",
                                 "write x-hyhome: {writable: [...], exceptions: {rule: reason}}"))
            continue
        exceptions = decl.get("exceptions") or {}
        if not isinstance(exceptions, dict):
            extra.append(Finding("warning", "x-hyhome", svc.name, file, line,
                                 "x-hyhome.exceptions is not a mapping of rule id to reason",
                                 "write exceptions: {security-non-root: \"why\"}"))
            exceptions = {}
        for key, reason in exceptions.items():
            rule = _rule_id(str(key))
            if rule is None:  # other roles may own it (e.g. a verify rule): tell, don't warn
                extra.append(Finding("info", "x-hyhome", svc.name, file, line,
                                     f"exception for {key}, which is not a validate rule (ignored here)",
                                     "validate rules: " + ", ".join(sorted(RULES))))
            elif not isinstance(reason, str) or not reason.strip():
                extra.append(Finding("warning", "x-hyhome", svc.name, file, line,
                                     f"exception for {rule} has no written reason, so it is not applied",
                                     f"write why: exceptions: {{{rule}: \"<reason>\"}}"))
            else:
                declared.setdefault(svc.name, {})[rule] = reason.strip()
        writable = decl.get("writable")
        if writable is not None and not isinstance(writable, list):
            extra.append(Finding("warning", "x-hyhome", svc.name, file, line,
                                 "x-hyhome.writable is not a list of container paths",
                                 "write writable: [/path/in/container]"))
        else:
            binds = {m.target.rstrip("/") or "/" for m in svc.mounts if m.host_path}
            for target in sorted(_writable_targets(svc) - binds):
                extra.append(Finding("warning", "x-hyhome", svc.name, file, line,
                                     f"x-hyhome.writable lists {target}, which is not a bind mount of this service",
                                     "remove it, or fix the path"))
    out = []
    used: set[tuple[str, str]] = set()
    for f in findings:
        reason = declared.get(f.service or "", {}).get(f.rule)
        if reason:
            used.add((f.service, f.rule))
            f = Finding(f.severity, f.rule, f.service, f.file, f.line, f.message, f.hint, reason)
        out.append(f)
    for service, rules in declared.items():
        for rule in rules:
            if (service, rule) not in used:
                file, line = _svc_loc(project, project.services[service])
                extra.append(Finding("info", "x-hyhome", service, file, line,
                                     f"exception for {rule} matches no finding",
                                     "remove the stale exception so it cannot hide a future problem"))
    return out + extra


def _trap_names(findings: list[Finding]) -> set[str]:
    return {f.message.split(" in ", 1)[0].strip("${}") for f in findings if f.rule == "interpolation-trap"}


def validate(project: Project, lint: list[Finding] | None = None) -> list[Finding]:
    """Every finding for ``project`` (plus yamllint findings, if given), in a stable order."""
    findings = [
        *_check_files(project),
        *(lint or []),
        *_check_secrets(project),
        *_check_interpolation(project),
        *_check_mounts(project),
        *_check_security(project),
    ]
    trapped = {f"The \"{name}\" variable is not set" for name in _trap_names(findings)}
    findings = [f for f in findings
                if not (f.rule == "compose-warning" and any(f.message.startswith(t) for t in trapped))]
    findings = _apply_exceptions(project, findings)
    unique = {}
    for f in findings:
        unique.setdefault((f.severity, f.rule, f.service, f.file, f.line, f.message), f)
    return sorted(unique.values(), key=Finding.sort_key)


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
            severity = "error" if problem.rule == "key-duplicates" else "warning"
            out.append(Finding(severity, "yaml-lint", None, path, problem.line,
                               f"{problem.desc} ({problem.rule})",
                               "fix the YAML style; a project .yamllint overrides the default rules"))
    return out


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

def summarize(findings: list[Finding]) -> dict:
    counts = {s: 0 for s in SEVERITIES}
    accepted = 0
    for f in findings:
        if f.accepted:
            accepted += 1
        else:
            counts[f.severity] += 1
    return {**counts, "accepted": accepted}


def build_report(project: Project, findings: list[Finding]) -> dict:
    summary = summarize(findings)
    return {
        "project": project.name,
        "project_dir": project.working_dir,
        "files": [_rel(f, project.working_dir) for f in project.files],
        "source": project.source,
        "ok": summary["error"] == 0,
        "summary": summary,
        "findings": [f.as_dict(project.working_dir) for f in findings],
    }


def render_table(report: dict) -> str:
    """The human table: one row per finding, its fix hint underneath."""
    rows = [("SEVERITY", "RULE", "SERVICE", "WHERE", "MESSAGE")]
    hints = []
    for f in report["findings"]:
        where = f["file"] or "-"
        if f["line"]:
            where += f":{f['line']}"
        severity = "accepted" if f["accepted"] else f["severity"]
        rows.append((severity, f["rule"], f["service"] or "-", where, f["message"]))
        hints.append(f"accepted: {f['accepted']}" if f["accepted"] else f"fix: {f['hint']}")
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
        if i:
            lines.append(" " * (sum(widths) + 8) + hints[i - 1])
    s = report["summary"]
    lines.append(f"validate {report['project']}: {s['error']} error(s), {s['warning']} warning(s), "
                 f"{s['info']} info, {s['accepted']} accepted exception(s) -- "
                 + ("OK" if report["ok"] else "FAILED"))
    return "\n".join(lines if report["findings"] else lines[-1:])


def run(project_dir, files=None, env_file=None, profiles=("*",), docker="docker", yamllint=True,
        yamllint_config=None) -> tuple[Project, list[Finding], dict]:
    """Load the project once, run every check, return (project, findings, report)."""
    project = load_project(project_dir, files=files, env_file=env_file, profiles=list(profiles or []),
                           docker=docker)
    lint = lint_files(project.files, project.working_dir, yamllint_config) if yamllint else []
    findings = validate(project, lint)
    return project, findings, build_report(project, findings)


# --------------------------------------------------------------------------------------------
# command line (scripts/validate-docker-compose.sh)
# --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m ...compose_validate PROJECT_DIR [--json PATH] [-f FILE] [--profile P] [--env-file F]``.

    Exit 0 when there is no error, 1 when there are errors, 2 on bad input.
    """
    import argparse

    from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import atomic_write

    parser = argparse.ArgumentParser(prog="validate-docker-compose.sh",
                                     description="Static checks of a Docker Compose project (AC-2).")
    parser.add_argument("project_dir", nargs="?", default=os.environ.get("HYHOME_PROJECT_DIR") or ".",
                        help="the compose project (default: $HYHOME_PROJECT_DIR, else the current directory)")
    parser.add_argument("--json", dest="json_path", help="also write the report as JSON to this path")
    parser.add_argument("-f", "--file", dest="files", action="append", help="compose file (repeatable)")
    parser.add_argument("--env-file", help="env file for interpolation (default: PROJECT_DIR/.env)")
    parser.add_argument("--profile", dest="profiles", action="append",
                        help="profile to validate (repeatable; default: every profile)")
    parser.add_argument("--no-yamllint", action="store_true", help="skip yamllint")
    parser.add_argument("--docker", default="docker", help="docker binary (default: docker)")
    parser.add_argument("--strict", action="store_true", help="exit non-zero on warnings too")
    args = parser.parse_args(argv)
    try:
        _, _, report = run(args.project_dir, files=args.files, env_file=args.env_file,
                           profiles=args.profiles or ["*"], docker=args.docker, yamllint=not args.no_yamllint)
        if args.json_path:
            atomic_write(os.path.abspath(args.json_path),
                         (json.dumps(report, indent=2, sort_keys=True) + "\n").encode(), 0o644)
    except HyHomeError as e:
        print(f"validate: {e.msg}", file=sys.stderr)
        return 2
    print(render_table(report))
    failed = not report["ok"] or (args.strict and report["summary"]["warning"] > 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
