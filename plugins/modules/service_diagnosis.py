#!/usr/bin/python
"""Ansible module: why a Compose service is down, and what recovers it (read-only)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: service_diagnosis
short_description: Diagnose a Compose service - the likely cause of its state and the action that recovers it
version_added: "0.1.0"
description:
  - Reads the service's containers (C(docker inspect) state, exit code, OOM kill, restart count, health
    log), its last log lines, whether the secret files it mounts exist, and the same for every service it
    depends on. It never changes anything.
  - The likely cause is one of C(healthy), C(absent), C(missing-secret), C(oom), C(dependency-down),
    C(hung) (health checks time out), C(failed-healthcheck), C(killed) (exit 137 without OOM),
    C(crashed), C(stopped), C(restarting), C(paused), C(created), C(dead).
  - The action that recovers it is one of C(none), C(start), C(secrets) (restore the secret files, then
    recreate), C(recreate), C(kill) (SIGKILL, then start). RV(recover) lists the services to recover in
    order, unhealthy dependencies first; the playbook C(playbooks/recover-service.yml) carries it out.
  - Diagnosis logic lives in C(plugins/module_utils/service_diagnosis.py) (pure, unit-tested).
author: Hy-Home Bootstrap maintainers (@hyhome)
requirements:
  - the Python C(docker) SDK on the managed host
  - Docker Engine with the Compose v2 CLI plugin (to load the project model)
attributes:
  check_mode:
    support: full
    description: Read-only; check mode runs the same reads.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
  idempotent:
    support: full
    description: Never changes anything.
extends_documentation_fragment:
  - hyhome.bootstrap.project
options:
  service:
    description: The service to diagnose. An unknown name fails, listing the known services.
    type: str
    required: true
  project_name:
    description: Compose project name. Default is the name Compose derives.
    type: str
  log_lines:
    description: How many of the last log lines to return for each service that is down.
    type: int
    default: 20
  fail_when_down:
    description: Fail (with the finding as the message) when the service is not healthy, instead of returning.
    type: bool
    default: false
notes:
  - A finding never holds a secret value; secrets are named, and their files only checked for existence and size.
seealso:
  - module: hyhome.bootstrap.compose_project
  - module: hyhome.bootstrap.stack_verify
"""

EXAMPLES = r"""
- name: Why is the API down?
  hyhome.bootstrap.service_diagnosis:
    project_dir: /srv/hyhome/stack
    service: api
  register: diagnosis

- name: Say it
  ansible.builtin.debug:
    msg: "{{ diagnosis.finding }} -> {{ diagnosis.recover | map(attribute='service') | zip(diagnosis.recover
           | map(attribute='action')) | map('join', ': ') | join(', ') }}"
"""

RETURN = r"""
service:
  description: The service diagnosed.
  returned: success
  type: str
healthy:
  description: Whether it is running healthy (or completed, for a one-shot service) with its dependencies.
  returned: success
  type: bool
cause:
  description: The likely cause (see the description for the values).
  returned: success
  type: str
  sample: dependency-down
action:
  description: The action that recovers the service itself, once its dependencies are back.
  returned: success
  type: str
  sample: start
finding:
  description: One line naming the cause and, when a dependency is the reason, the root cause.
  returned: success
  type: str
  sample: "api: dependency-down: postgres is hung (running but not answering: ...) -- root cause postgres: hung: ..."
report:
  description: Lines for a person - per service to recover, its state, the last health checks and log lines.
  returned: success
  type: list
  elements: str
state:
  description: >-
    The service's details - C(status), C(exit_code), C(oom_killed), C(restart_count), C(health_log) (the last
    checks), C(log_tail), C(down_since) (ISO time the failure began, when known), C(memory_limit),
    C(missing_secrets), C(dependencies_down), C(cause), C(action), C(message).
  returned: success
  type: dict
recover:
  description: The services to recover, in order (dependencies first), each with the keys of RV(state).
  returned: success
  type: list
  elements: dict
findings:
  description: The findings, in the shared vocabulary (rule C(recover-<cause>)), one per service in RV(recover).
  returned: success
  type: list
  elements: dict
checked_at:
  description: When the diagnosis was made (seconds since the epoch), to time a recovery.
  returned: success
  type: float
down_for:
  description: Seconds from the start of the failure (C(down_since) in RV(state)) to RV(checked_at); null when unknown.
  returned: success
  type: float
project_context:
  description: Whether this call reused the run's project context (V(hit)) or ran C(docker compose config) (V(miss)).
  returned: success
  type: dict
"""

import os  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the documentation, as Ansible expects
from ansible_collections.hyhome.bootstrap.plugins.module_utils import service_diagnosis as sd  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils import stack_verify as sv  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_options import (  # noqa: E402
    context_result,
    load_checked,
    project_argspec,
)


def _has_content(path: str) -> bool:
    try:
        return os.path.isfile(path) and os.path.getsize(path) > 0
    except OSError:
        return False


def run(p: dict, check_mode: bool = False) -> dict:
    if not shutil.which(p["docker_cli"]):
        raise HyHomeError(f"{p['docker_cli']} is not installed: install Docker Engine with the Compose v2 plugin")
    project = load_checked(p, check_mode)
    if p["project_name"]:
        project.name = p["project_name"]
    if p["service"] not in project.services:   # before any engine call: a clear error, nothing read
        sd.diagnose(project, p["service"], [], {})
    client = sv.engine_client(project.name)
    inspects = sv.collect(client, project.name, want_stats=False)[0]
    files = {s.file: _has_content(s.file) for s in project.secrets.values() if s.file}

    def logs(cid: str) -> str:
        raw = client.api.logs(cid, stdout=True, stderr=True, tail=p["log_lines"], timestamps=False)
        return raw.decode("utf-8", "replace")

    diagnosis = sd.diagnose(project, p["service"], inspects, files, logs=logs)
    checked_at = time.time()
    return {"changed": False, **diagnosis.as_dict(), "checked_at": checked_at,
            "down_for": sd.seconds_between(diagnosis.state.down_since, checked_at),
            "project_context": context_result(project)}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **project_argspec(),
            service=dict(type="str", required=True),
            project_name=dict(type="str"),
            log_lines=dict(type="int", default=20),
            fail_when_down=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module.params, module.check_mode)
    except HyHomeError as e:
        module.fail_json(msg=e.msg)
    if module.params["fail_when_down"] and not result["healthy"]:
        module.fail_json(msg=result["finding"], **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
