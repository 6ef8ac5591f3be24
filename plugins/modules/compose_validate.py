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
  - "Rules (id, severity): C(yaml-syntax) (error) a compose file is not valid YAML, with file and line;
    C(include-missing) (error) an C(include:) entry names a missing file; C(yaml-lint) (warning; C(key-duplicates):
    error) yamllint problems; C(compose-config) (error) C(docker compose config) rejects the project: its error line
    (not its warning lines), explained in plain words for the common cases, located where possible;
    C(compose-warning) (warning) each Compose warning once, at the first reference of an unset variable."
  - "C(resource-redeclared) (error) every service, network, volume, secret or config that two files joined by
    C(include:) declare differently, with both file:line locations (Compose stops at the first and names only it;
    root files merged with C(-f) and identical copies are fine); C(credential-literal) (error) a literal password,
    token, secret or key in C(environment:) (by name, or a URL with a password, or a PEM block), never its value;
    C(secret-undeclared) (error) a service reads C(/run/secrets/X) (command, entrypoint, healthcheck, environment,
    or a script or file bind-mounted from the project) without declaring secret C(X); C(secret-unregistered)
    (error); C(secret-unused) (warning); C(secret-alias) (error) a second name for a shared secret;
    C(secret-duplicate) (error) two registry entries reading one file; C(secret-external-swarm) (error) an
    C(external: true) secret, which only Docker Swarm provides."
  - "C(interpolation-trap) (error) C($VAR) in C(command), C(entrypoint) or C(healthcheck) that Compose interpolates
    when it parses the file (C($$VAR) was meant); C(bind-missing-file) (error) a bind-mounted file that does not
    exist; the security baseline: C(security-no-new-privileges), C(security-cap-drop-all), C(security-non-root)
    (see below), C(security-privileged), C(security-host-namespace),
    C(security-healthcheck) (not for one-shot jobs: a dependant waits for C(service_completed_successfully), or
    C(restart) is C(no) or C(on-failure)), C(security-memory-limit), C(security-docker-socket) (all errors) and
    C(security-writable-bind) (warning) configuration (a file, a read-only or git-tracked directory, or
    C(x-hyhome.config)) bind-mounted writable; writable data directories are fine."
  - "C(security-non-root): a declared C(user:) that is root is an error. Without C(user:), the identity resolver
    data_dirs, secrets and tls use answers which user the image runs as: its C(Config.User) when the image is
    already on the engine (one C(docker image inspect) for the project; no container is created, so a user
    name is not looked up), else the built-in table of well-known images plus O(image_users). Known non-root:
    no finding; known root: a warning; unknown: a warning saying so, with the fix (C(user:) or O(image_users))."
  - "When C(docker compose config) fails, every other rule runs on the model built from the raw files."
  - "Per-service declarations in the C(x-hyhome) extension: C(writable: [<container path>, ...]) lists the bind
    mounts the service writes (data, even when a file or tracked by git); C(config: [<container path>, ...]) marks
    bind mounts as configuration; C(exceptions: {<rule id>: <reason>}) accepts a finding with a written reason.
    Accepted findings stay in the report with RV(findings[].accepted) set, and do not count as errors."
  - The module only reads. It never reports C(changed) and fails only on bad input (not a compose project, missing
    directory, no docker binary), not on findings; the C(hyhome.bootstrap.validate) role decides what fails.
version_added: 0.1.0
author: Hy-Home Bootstrap maintainers (@hyhome)
requirements:
  - docker CLI with the Compose v2 plugin (C(docker compose config) needs no running daemon)
  - PyYAML
  - yamllint (when O(yamllint=true))
extends_documentation_fragment:
  - hyhome.bootstrap.project
options:
  yamllint:
    description: Run yamllint on every compose file.
    type: bool
    default: true
  yamllint_config:
    description:
      - yamllint configuration (YAML text). Default is the project's C(.yamllint) when it has one, else a
        compose-friendly default (the yamllint C(default) preset, no document start, octal file modes allowed).
    type: str
  image_users:
    description:
      - The user each image runs as, C("uid[:gid]") per image repository (C(myorg/worker)), on top of the
        built-in table; the same table as the C(image_users) of M(hyhome.bootstrap.data_dirs) and
        M(hyhome.bootstrap.secret_files) (role variable C(hyhome_image_users)).
      - Used by C(security-non-root) for services without C(user:).
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
    description: The module never writes; check mode runs every check.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
  idempotent:
    support: full
    description: Read-only; C(changed) is always false.
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
      description: C(error), C(warning) or C(info) (the vocabulary preflight and verify share).
      type: str
    rule:
      description: Rule id, e.g. C(secret-undeclared), C(security-cap-drop-all). Use it in C(x-hyhome.exceptions).
      type: str
    service:
      description: The service concerned, or null for project-level findings.
      type: str
    subject:
      description: What else it is about when known (a variable, a secret, C(networks.edge)), else null.
      type: str
    file:
      description: The file to fix (a compose file, or a mounted script), relative to O(project_dir) when inside it.
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
    fixed_by:
      description: Always null here (no bootstrap step fixes a validate finding for you).
      type: str
  sample:
    - {severity: error, rule: secret-undeclared, service: api, subject: api_token, file: compose.yaml, line: 12,
       message: reads /run/secrets/api_token but does not declare secret api_token,
       hint: "add `secrets: [api_token]` to service api", accepted: null, fixed_by: null}
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
project_context:
  description:
    - Whether this call reused the run's project context (V(hit)) or ran C(docker compose config) (V(miss)),
      and a short form of the context key. Counting V(miss) over a run counts the computations.
  returned: success
  type: dict
  sample: {cache: hit, key: 3f2a9c01b7de}
"""

import traceback  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_options import (  # noqa: E402
    context_result,
    loader,
    project_argspec,
)

try:  # PyYAML (compose model) must exist where the module runs
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_validate import render_table, run
except ImportError:
    YAML_IMPORT_ERROR = traceback.format_exc()
else:
    YAML_IMPORT_ERROR = None
try:
    import yamllint  # noqa: F401  # pylint: disable=unused-import
except ImportError:
    YAMLLINT_IMPORT_ERROR = traceback.format_exc()
else:
    YAMLLINT_IMPORT_ERROR = None


def main():
    module = AnsibleModule(
        argument_spec={
            **project_argspec(),
            "yamllint": {"type": "bool", "default": True},
            "yamllint_config": {"type": "str"},
            "image_users": {"type": "dict", "default": {}},
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
                                 profiles=p["profiles"], docker=p["docker_cli"], yamllint=p["yamllint"],
                                 yamllint_config=p["yamllint_config"], loader=loader(module.check_mode),
                                 image_users=p["image_users"])
    except HyHomeError as e:
        module.fail_json(msg=e.msg)
    module.exit_json(changed=False, ok=report["ok"], summary=report["summary"], findings=report["findings"],
                     report=report, table=render_table(report), source=project.source,
                     project_context=context_result(project))


if __name__ == "__main__":
    main()
