#!/usr/bin/python
"""Ansible module: read-only preflight of a Compose project and its host (thin adapter)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compose_preflight
short_description: Report every missing prerequisite of a Compose project's first boot, read-only
version_added: "0.1.0"
description:
  - Loads the Compose project through the collection's one compose model (C(docker compose config),
    with the raw files standing in when that fails), probes the host once, and returns every finding
    of one run in a stable order, each with a check id, a severity, a subject, a message and a fix.
  - "Host checks: Docker Engine reachable and its version (docker SDK), Compose v2 present and its
    version, C(vm.max_map_count) when a service runs OpenSearch or Elasticsearch, free disk on the
    project filesystem and the Docker root, available memory, host ports the project publishes that
    something else holds (a port held by this project's own container is not a conflict)."
  - "Project checks: C(docker compose config) succeeds, C(.env) present when variables need it,
    variables referenced without a default set and not empty, secret files present and non-empty,
    certificate files present, bind-mount directories and files present (saying whether a
    C(*.example) sibling exists), external networks and volumes exist."
  - The module never writes anything and never reports a secret or C(.env) value. It does not fail
    when something blocks; it returns RV(blocks_boot) and leaves the decision to the caller (the
    C(hyhome.bootstrap.preflight) role fails the play on blockers). It fails only on bad input (no
    such directory, not a Compose project), with one clear message.
author:
  - Hy-Home Bootstrap maintainers
requirements:
  - docker CLI with the Compose v2 plugin on the target (its absence is reported as a finding)
  - the docker SDK for Python and PyYAML on the target
attributes:
  check_mode:
    support: full
    description: Read-only; check mode runs the same checks.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to diff.
  idempotent:
    support: full
    description: Never changes anything; always returns C(changed=false).
options:
  project_dir:
    description: Directory holding the root compose file.
    type: path
    required: true
  files:
    description: Compose files relative to O(project_dir), instead of Compose's own lookup.
    type: list
    elements: path
    default: []
  env_file:
    description: Env file used for interpolation and checked for variables. Default C(<project_dir>/.env).
    type: path
  profiles:
    description: Compose profiles to activate.
    type: list
    elements: str
    default: []
  docker_cli:
    description: The docker CLI to run C(docker compose) with.
    type: str
    default: docker
  min_docker_version:
    description: Docker Engine older than this is a blocker.
    type: str
    default: "20.10"
  warn_compose_below:
    description: Compose v2 older than this is a warning (Compose v1 or none is a blocker).
    type: str
    default: "2.20"
  min_disk_free_gb:
    description: Less free space than this (GiB) on the project filesystem or the Docker root is a blocker.
    type: float
    default: 5
  min_memory_available_mb:
    description: Less available memory than this (MiB) is a warning.
    type: int
    default: 1024
  vm_max_map_count:
    description: Minimum C(vm.max_map_count) when a service image is one of O(search_images).
    type: int
    default: 262144
  search_images:
    description: Image names (last path component, without tag) that need O(vm_max_map_count).
    type: list
    elements: str
    default: [opensearch, elasticsearch]
  check_ports:
    description: Check that the host ports the project publishes are free.
    type: bool
    default: true
  secrets_registry_file:
    description:
      - "The secrets role's registry. Secrets of C(kind: provided) are values only a person can supply:
        missing, they block and no later step fixes them; with C(optional: true) the secrets step writes a
        placeholder, so they are a warning (also while the placeholder is still there)."
      - Default C(<project_dir>/hyhome-secrets.yml); absent means no provided secrets.
    type: path
  deferred_steps:
    description:
      - Bootstrap steps that will run after preflight. Blockers one of them fixes (for example a
        missing secret file, fixed by C(secrets)) stay in the findings but do not count in
        RV(blocks_boot). Use it when preflight runs before those steps, as in C(day0.yml).
    type: list
    elements: str
    choices: [docker_engine, secrets, tls, data_dirs, env]
    default: []
"""

EXAMPLES = r"""
- name: Preflight the project
  hyhome.bootstrap.compose_preflight:
    project_dir: /srv/stack
  register: preflight

- name: Stop when something blocks first boot
  ansible.builtin.fail:
    msg: "{{ preflight.table_lines }}"
  when: preflight.blocks_boot

- name: Preflight before the steps that create secrets, certificates, directories and .env
  hyhome.bootstrap.compose_preflight:
    project_dir: /srv/stack
    deferred_steps: [secrets, tls, data_dirs, env]
    min_disk_free_gb: 20
"""

RETURN = r"""
changed:
  description: Always false; preflight never changes anything.
  returned: always
  type: bool
blocks_boot:
  description: True when at least one blocker (not left to a deferred step) stops first boot.
  returned: success
  type: bool
findings:
  description: Every finding, in stable order (check order, then severity, then subject).
  returned: success
  type: list
  elements: dict
  contains:
    check:
      description: Stable check id, such as C(host.docker_engine) or C(project.secrets).
      type: str
    severity:
      description: C(blocker), C(warning) or C(info) (ok / informational).
      type: str
    subject:
      description: What the finding is about (secret name, path, port, variable).
      type: str
    message:
      description: What was found, with the evidence.
      type: str
    fix:
      description: How to fix it; empty for info findings.
      type: str
    fixed_by:
      description: The bootstrap step that fixes it, when one does; null otherwise.
      type: str
  sample:
    - check: project.secrets
      severity: blocker
      subject: db_password
      message: "secret file secrets/db_password.txt is missing; used by db"
      fix: "run the secrets step (hyhome.bootstrap.secrets) to create it, or create secrets/db_password.txt yourself"
      fixed_by: secrets
summary:
  description: Counts per severity, how many blockers block, how many are deferred.
  returned: success
  type: dict
  sample: {blocker: 2, warning: 1, info: 9, blocking: 2, deferred: 0, blocks_boot: true}
table:
  description: The human table (one string, lines separated by newlines).
  returned: success
  type: str
table_lines:
  description: The human table, one line per element (reads well in C(fail) and C(debug) output).
  returned: success
  type: list
  elements: str
problem_lines:
  description: The human table without the info rows (blockers and warnings only).
  returned: success
  type: list
  elements: str
report:
  description: The JSON report (schema 1) with project, summary and findings; deterministic, no timestamps.
  returned: success
  type: dict
host_facts:
  description: What the host probes found (versions, free space, listeners, engine networks...).
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the docs, as Ansible expects
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.preflight import (  # noqa: E402
    STEPS,
    Options,
    preflight,
    render_table,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            project_dir=dict(type="path", required=True),
            files=dict(type="list", elements="path", default=[]),
            env_file=dict(type="path"),
            profiles=dict(type="list", elements="str", default=[]),
            docker_cli=dict(type="str", default="docker"),
            min_docker_version=dict(type="str", default="20.10"),
            warn_compose_below=dict(type="str", default="2.20"),
            min_disk_free_gb=dict(type="float", default=5),
            min_memory_available_mb=dict(type="int", default=1024),
            vm_max_map_count=dict(type="int", default=262144),
            search_images=dict(type="list", elements="str", default=["opensearch", "elasticsearch"]),
            check_ports=dict(type="bool", default=True),
            deferred_steps=dict(type="list", elements="str", choices=list(STEPS), default=[]),
            secrets_registry_file=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    options = Options(
        min_docker_version=p["min_docker_version"],
        warn_compose_below=p["warn_compose_below"],
        min_disk_free_gb=p["min_disk_free_gb"],
        min_memory_available_mb=p["min_memory_available_mb"],
        vm_max_map_count=p["vm_max_map_count"],
        search_images=tuple(p["search_images"]),
        check_ports=p["check_ports"],
        env_file=p["env_file"],
        secrets_registry_file=p["secrets_registry_file"],
    )
    try:
        result = preflight(p["project_dir"], files=p["files"], profiles=p["profiles"], docker=p["docker_cli"],
                           options=options, deferred_steps=p["deferred_steps"])
    except HyHomeError as exc:
        module.fail_json(msg=exc.msg)
    module.exit_json(
        changed=False,
        blocks_boot=bool(result.blocking),
        findings=result.report["findings"],
        summary=result.report["summary"],
        table="\n".join(result.table),
        table_lines=result.table,
        problem_lines=render_table(result.project, result.findings, p["deferred_steps"], problems_only=True),
        report=result.report,
        host_facts=result.facts.as_dict(),
    )


if __name__ == "__main__":
    main()
