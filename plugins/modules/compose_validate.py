#!/usr/bin/python
# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compose_validate
short_description: Static checks of a Docker Compose project (config, lint, secrets, $VAR traps, security)
description:
  - Loads the project once with C(docker compose config --format json) (no Docker daemon needed) plus the raw
    files, and reports findings with a severity, a rule id, the service, file and line where known, and a fix hint.
  - "Checks: YAML syntax errors with file and line; C(docker compose config) errors verbatim with a plain-words
    explanation of the common ones (a resource defined both in the root file and in an included file, a missing
    C(env_file), a required variable); yamllint problems; a service reading C(/run/secrets/X) without declaring
    C(X); a declared secret missing from the registry; registry secrets nobody uses; two names for one secret
    value (C(alertmanager_smtp_password) where C(smtp_password) exists, or two entries reading one file);
    C($VAR) in C(command), C(entrypoint) or C(healthcheck) that Compose interpolates when it parses the file
    (C($$VAR) was meant); bind mounts of files that do not exist; the security baseline
    (C(no-new-privileges:true), C(cap_drop: [ALL]), non-root C(user), no C(privileged), no host pid, network or
    ipc namespace, writable bind mounts only where declared, a healthcheck, a memory limit, no Docker socket)."
  - "Per-service declarations in the C(x-hyhome) extension: C(writable: [<container path>, ...]) lists the bind
    mounts the service may write; C(exceptions: {<rule id>: <reason>}) accepts a finding with a written reason.
    Accepted findings stay in the report with RV(findings[].accepted) set, and do not count as errors."
  - The module only reads. It never reports C(changed) and fails only on bad input (not a compose project, missing
    directory, no docker binary), not on findings; the C(hyhome.bootstrap.validate) role decides what fails.
version_added: 0.1.0
author: Hy-Home Bootstrap maintainers
requirements:
  - docker CLI with the Compose v2 plugin (C(docker compose config) needs no running daemon)
  - PyYAML
  - yamllint (when O(yamllint=true))
options:
  project_dir:
    description: The directory holding the root compose file (C(compose.yaml), C(docker-compose.yml), ...).
    type: path
    required: true
  files:
    description: Compose files relative to O(project_dir), instead of Compose's own lookup.
    type: list
    elements: str
    default: []
  env_file:
    description: Env file used for interpolation. Default is C(.env) in O(project_dir).
    type: path
  profiles:
    description: Profiles whose services are checked. V(*) means every profile, so no service escapes validation.
    type: list
    elements: str
    default: ["*"]
  docker:
    description: The docker binary (name in C(PATH) or absolute path).
    type: str
    default: docker
  yamllint:
    description: Run yamllint on every compose file.
    type: bool
    default: true
  yamllint_config:
    description:
      - yamllint configuration (YAML text). Default is the project's C(.yamllint) when it has one, else a
        compose-friendly default (the yamllint C(default) preset, no document start, octal file modes allowed).
    type: str
attributes:
  check_mode:
    support: full
    description: The module never writes; check mode runs every check.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
  idempotent:
    support: full
    description: Read-only; RV(changed) is always false.
notes:
  - Findings are ordered by severity, file, line, service and rule, so two runs on the same project give the same
    report.
seealso:
  - module: hyhome.bootstrap.compose_project
"""

EXAMPLES = r"""
- name: Validate the compose project
  hyhome.bootstrap.compose_validate:
    project_dir: /srv/hyhome
  register: validate_result

- name: Fail on errors
  ansible.builtin.fail:
    msg: "{{ validate_result.table }}"
  when: not validate_result.ok

- name: Only the default profile, no yamllint
  hyhome.bootstrap.compose_validate:
    project_dir: /srv/hyhome
    profiles: []
    yamllint: false
"""

RETURN = r"""
ok:
  description: True when no finding of severity C(error) remains (accepted exceptions do not count).
  returned: success
  type: bool
  sample: false
summary:
  description: Counts of findings per severity (not counting accepted ones) and of accepted exceptions.
  returned: success
  type: dict
  sample: {error: 2, warning: 1, info: 0, accepted: 1}
findings:
  description: Every finding, in a stable order.
  returned: success
  type: list
  elements: dict
  contains:
    severity:
      description: C(error), C(warning) or C(info).
      type: str
    rule:
      description: Rule id, e.g. C(secret-undeclared), C(security-cap-drop-all). Use it in C(x-hyhome.exceptions).
      type: str
    service:
      description: The service concerned, or null for project-level findings.
      type: str
    file:
      description: Compose file, relative to O(project_dir) when inside it.
      type: str
    line:
      description: 1-based line, or null when unknown.
      type: int
    message:
      description: What is wrong.
      type: str
    hint:
      description: How to fix it.
      type: str
    accepted:
      description: The written reason of the declared exception that accepts this finding, else null.
      type: str
  sample:
    - {severity: error, rule: secret-undeclared, service: api, file: compose.yaml, line: 12,
       message: reads /run/secrets/api_token but does not declare secret api_token,
       hint: "add `secrets: [api_token]` to service api", accepted: null}
report:
  description: The whole report (project, files, source, ok, summary, findings), as the role writes it as JSON.
  returned: success
  type: dict
table:
  description: The findings as a human-readable table with a summary line.
  returned: success
  type: str
source:
  description: C(config) when C(docker compose config) succeeded, C(raw) when the checks ran on the raw files.
  returned: success
  type: str
  sample: config
"""

import traceback  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402

try:  # PyYAML (compose model) must exist where the module runs
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_validate import render_table, run
except ImportError:
    YAML_IMPORT_ERROR = traceback.format_exc()
else:
    YAML_IMPORT_ERROR = None
try:
    import yamllint  # noqa: F401
except ImportError:
    YAMLLINT_IMPORT_ERROR = traceback.format_exc()
else:
    YAMLLINT_IMPORT_ERROR = None


def main():
    module = AnsibleModule(
        argument_spec={
            "project_dir": {"type": "path", "required": True},
            "files": {"type": "list", "elements": "str", "default": []},
            "env_file": {"type": "path"},
            "profiles": {"type": "list", "elements": "str", "default": ["*"]},
            "docker": {"type": "str", "default": "docker"},
            "yamllint": {"type": "bool", "default": True},
            "yamllint_config": {"type": "str"},
        },
        supports_check_mode=True,
    )
    p = module.params
    if YAML_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("PyYAML (Debian: python3-yaml)"), exception=YAML_IMPORT_ERROR)
    if p["yamllint"] and YAMLLINT_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("yamllint (Debian: yamllint), or set yamllint=false"),
                         exception=YAMLLINT_IMPORT_ERROR)
    try:
        project, _, report = run(p["project_dir"], files=p["files"] or None, env_file=p["env_file"],
                                 profiles=p["profiles"], docker=p["docker"], yamllint=p["yamllint"],
                                 yamllint_config=p["yamllint_config"])
    except HyHomeError as e:
        module.fail_json(msg=e.msg)
    module.exit_json(changed=False, ok=report["ok"], summary=report["summary"], findings=report["findings"],
                     report=report, table=render_table(report), source=project.source)


if __name__ == "__main__":
    main()
