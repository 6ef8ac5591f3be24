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
  - "Project checks: C(docker compose config) succeeds (its error line is shown, not its warnings),
    C(.env) present when variables need it, variables referenced without a default set and not empty
    (one nothing will set, neither C(.env.example) nor the inventory, blocks with where to set it),
    secret files present and non-empty, provided secrets (declared in the registry or inferred from
    names such as C(slack_webhook)) named with who must supply them, certificate files present,
    bind-mount directories and files present (saying whether a C(*.example) sibling exists), external
    networks (left to the compose step, which creates them) and volumes exist."
  - When C(docker compose config) fails, the checks read the raw compose files (includes followed),
    so an OpenSearch service still needs C(vm.max_map_count)."
  - The module never writes anything and never reports a secret or C(.env) value. It does not fail
    when something blocks; it returns RV(blocks_boot) and leaves the decision to the caller (the
    C(hyhome.bootstrap.preflight) role fails the play on blockers). It fails only on bad input (no
    such directory, not a Compose project), with one clear message.
author:
  - Hy-Home Bootstrap maintainers (@hyhome)
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
extends_documentation_fragment:
  - hyhome.bootstrap.project
options:
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
    choices: [docker_engine, secrets, tls, data_dirs, env, compose]
    default: []
  env_example:
    description: The env step's template, read to know which variables it will set. Default
      C(<project_dir>/.env.example).
    type: path
  env_supplied:
    description:
      - Variables the env step sets from the inventory (C(env_values) with a value, C(env_generated)). A
        variable referenced without a default that neither these nor O(env_example) give a value is a
        blocker no later step fixes, with where to set it.
    type: list
    elements: str
    default: []
  env_allow_empty:
    description: Variables referenced without a default that may stay empty on purpose (the env role's
      C(env_allow_empty)).
    type: list
    elements: str
    default: []
  start_stack:
    description:
      - Whether the stack is started after the preparation steps. When false (day0 with
        C(hyhome_start_stack=false)), what only matters at boot (published ports in use,
        C(vm.max_map_count), missing external networks and volumes) is a warning, "needed before the
        stack starts", instead of a blocker.
    type: bool
    default: true
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

- name: Preflight before the steps that create secrets, certificates, directories, .env and networks
  hyhome.bootstrap.compose_preflight:
    project_dir: /srv/stack
    deferred_steps: [secrets, tls, data_dirs, env, compose]
    env_supplied: [KAFKA_CLUSTER_ID, HYHOME_DOMAIN]
    min_disk_free_gb: 20

- name: Preflight of a run that prepares the project without starting it
  hyhome.bootstrap.compose_preflight:
    project_dir: /srv/stack
    deferred_steps: [secrets, tls, data_dirs, env]
    start_stack: false
"""

RETURN = r"""
changed:
  description: Always false; preflight never changes anything.
  returned: always
  type: bool
blocks_boot:
  description: True when at least one error (not left to a deferred step) stops first boot.
  returned: success
  type: bool
findings:
  description:
    - Every finding, in stable order (check order, then severity, then subject), in the vocabulary validate and
      verify share.
  returned: success
  type: list
  elements: dict
  contains:
    rule:
      description: Stable check id, such as C(host.docker_engine) or C(project.secrets).
      type: str
    severity:
      description: C(error) (blocks first boot), C(warning) or C(info) (ok / informational).
      type: str
    subject:
      description: What the finding is about (secret name, path, port, variable).
      type: str
    message:
      description: What was found, with the evidence.
      type: str
    hint:
      description: How to fix it; empty for info findings.
      type: str
    fixed_by:
      description: The bootstrap step that fixes it, when one does; null otherwise.
      type: str
    service:
      description: Always null here (preflight names what a finding is about in RV(findings[].subject)).
      type: str
    file:
      description:
        - Where to fix it, relative to the project directory when inside it; null when nothing in the project
          causes it (most host checks).
        - The compose file that declares, mounts or references what the finding is about (the secrets registry
          entry, the first C(volumes:) entry mounting a path, the external network or volume, the reference of a
          variable, the search service for C(host.vm_max_map_count)); C(.env) for C(project.env_file).
      type: str
    line:
      description: The 1-based line in RV(findings[].file); null when only the file is known.
      type: int
    accepted:
      description: Always null here (preflight has no exceptions).
      type: str
  sample:
    - rule: project.secrets
      severity: error
      subject: db_password
      message: "secret file secrets/db_password.txt is missing; used by db"
      hint: "run the secrets step (hyhome.bootstrap.secrets) to create it, or create secrets/db_password.txt yourself"
      fixed_by: secrets
      service: null
      file: docker-compose.yml
      line: 12
      accepted: null
summary:
  description: Counts per severity, how many errors block first boot now, how many later steps fix.
  returned: success
  type: dict
  sample: {error: 2, warning: 1, info: 9, accepted: 0, blocking: 2, deferred: 0, blocks_boot: true}
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
  description: The human table without the info rows (errors and warnings only).
  returned: success
  type: list
  elements: str
report:
  description: The JSON report (schema 2) with project, summary and findings; deterministic, no timestamps.
  returned: success
  type: dict
host_facts:
  description: What the host probes found (versions, free space, listeners, engine networks...).
  returned: success
  type: dict
project_context:
  description:
    - Whether this call reused the run's project context (V(hit)) or ran C(docker compose config) (V(miss)),
      and a short form of the context key. Counting V(miss) over a run counts the computations.
  returned: success
  type: dict
  sample: {cache: miss, key: 3f2a9c01b7de}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the docs, as Ansible expects
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.preflight import (  # noqa: E402
    STEPS,
    Options,
    load,
    preflight,
    render_table,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_options import (  # noqa: E402
    context_result,
    loader,
    project_argspec,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            **project_argspec(),
            min_docker_version=dict(type="str", default="20.10"),
            warn_compose_below=dict(type="str", default="2.20"),
            min_disk_free_gb=dict(type="float", default=5),
            min_memory_available_mb=dict(type="int", default=1024),
            vm_max_map_count=dict(type="int", default=262144),
            search_images=dict(type="list", elements="str", default=["opensearch", "elasticsearch"]),
            check_ports=dict(type="bool", default=True),
            deferred_steps=dict(type="list", elements="str", choices=list(STEPS), default=[]),
            secrets_registry_file=dict(type="path"),
            env_example=dict(type="path"),
            env_supplied=dict(type="list", elements="str", default=[]),
            env_allow_empty=dict(type="list", elements="str", default=[]),
            start_stack=dict(type="bool", default=True),
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
        env_example=p["env_example"],
        env_supplied=tuple(p["env_supplied"]),
        env_allow_empty=tuple(p["env_allow_empty"]),
        start_stack=p["start_stack"],
    )
    try:
        result = preflight(p["project_dir"], files=p["files"], profiles=p["profiles"], docker=p["docker_cli"],
                           options=options, deferred_steps=p["deferred_steps"],
                           loader=loader(module.check_mode, load))
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
        project_context=context_result(result.project),
    )


if __name__ == "__main__":
    main()
