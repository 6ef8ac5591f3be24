#!/usr/bin/python
"""Ansible module: bring a Compose project to a state and report truthfully."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compose_project
short_description: Bring a Docker Compose project up, wait for health, recreate on mounted-content change
version_added: "0.1.0"
description:
  - Brings a Compose v2 project to O(state) by driving the C(docker compose) CLI, reads container
    state with the Docker SDK, and reports C(changed) only when containers were created, recreated,
    started or stopped (container ids and C(State.StartedAt) compared before and after).
  - Keeps a per-service SHA-256 fingerprint of the content of everything a service mounts from the
    host (file secrets, bind-mounted files, read-only bind-mounted directories) plus Compose's
    config hash, in C(<project_dir>/.hyhome/state.json) (mode 0600, atomic writes). A rotated secret,
    renewed certificate or edited configuration file recreates exactly the services that mount it.
    Compose's own config hash ignores that content.
  - Passes Compose only the services that need creating, starting or recreating, so a one-shot init
    service that already exited 0 is not run again by a no-op run.
  - Waits with its own poller until long-running services are healthy (or running when they have no
    healthcheck) and one-shot init services exited 0. An unhealthy service is retried until
    O(wait_timeout); on failure the message names the service, its last health-check outputs and its
    last 20 log lines.
  - Creates the external (C(external=true)) networks the services attach to that do not exist yet (a plain bridge,
    labelled C(org.hyhome.bootstrap.created-by)), since Compose refuses to start without them; reported in
    RV(networks_created) and as a change. O(create_networks=false) fails instead, naming the command.
  - Writable bind-mounted directories are data and are not fingerprinted. Exclude further paths with
    C(x-hyhome.fingerprint_exclude) (host or container paths) on the service.
author: Hy-Home Bootstrap maintainers (@hyhome)
requirements:
  - Docker Engine with the Compose v2 CLI plugin (C(docker compose))
  - the Python C(docker) SDK on the managed host
attributes:
  check_mode:
    support: full
    description: Reports the per-service plan (create, recreate, start, stop, remove and why) and the
      external networks it would create, without touching containers or networks, building or pulling
      images, or writing the state file.
  diff_mode:
    support: full
    description: Per-service before/after summary (status, short config hash, short fingerprint,
      planned action), plus the external networks under C(external networks) (absent/present). Never
      file content or stored digests.
  idempotent:
    support: full
    description: A second run with nothing changed reports C(changed=false) and restarts nothing.
extends_documentation_fragment:
  - hyhome.bootstrap.project
options:
  project_name:
    description:
      - Compose project name (C(docker compose -p)). Default is the name Compose derives (C(name:) in the
        file or the directory name).
    type: str
  services:
    description:
      - Act on these services only. With O(state=present) or O(state=restarted) their dependencies are
        brought up too. Default is every service of the active profiles.
    type: list
    elements: str
    default: []
  state:
    description:
      - V(present) creates, recreates (configuration, image or mounted content changed) and starts what
        is needed. V(stopped) stops running containers. V(restarted) restarts running long-running
        services and brings up the rest. V(absent) removes containers and networks; volumes only with
        O(remove_volumes=true).
    type: str
    choices: [present, stopped, restarted, absent]
    default: present
  pull:
    description: When to pull images of services without a C(build) section.
    type: str
    choices: [missing, always, never]
    default: missing
  build:
    description: When to build images of services with a C(build) section. Never done in check mode.
    type: str
    choices: [never, missing, always]
    default: missing
  remove_orphans:
    description: Remove containers of services no longer in the project (or behind inactive profiles).
    type: bool
    default: false
  remove_volumes:
    description: With O(state=absent), also remove named and anonymous volumes. Data is lost.
    type: bool
    default: false
  wait:
    description: Wait until the services are ready (healthy, running, or one-shot exited 0).
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for readiness before failing.
    type: int
    default: 300
  recreate:
    description:
      - Services to recreate even when nothing changed.
      - Names that are not services of the active project are ignored with a warning.
    type: list
    elements: str
    default: []
  fingerprints:
    description:
      - Recreate services whose mounted content changed (see description).
      - Disable to rely on the Compose config hash only.
    type: bool
    default: true
  create_networks:
    description:
      - With O(state=present) or O(state=restarted), create the external networks the services use that do
        not exist. When false, a missing one fails the run with the C(docker network create) command to run.
    type: bool
    default: true
notes:
  - The host daemon resolves bind-mount paths on the host. When running inside a container that drives
    the host's engine, mount the project directory at the same path.
seealso:
  - module: community.docker.docker_compose_v2
"""

EXAMPLES = r"""
- name: Bring the stack up and wait for health
  hyhome.bootstrap.compose_project:
    project_dir: /srv/hyhome
    wait_timeout: 600

- name: Show what a run would do (no container touched)
  hyhome.bootstrap.compose_project:
    project_dir: /srv/hyhome
  check_mode: true
  diff: true

- name: Recreate the gateway after a manual change
  hyhome.bootstrap.compose_project:
    project_dir: /srv/hyhome
    recreate: [gateway]

- name: Tear down, keeping volumes
  hyhome.bootstrap.compose_project:
    project_dir: /srv/hyhome
    state: absent
"""

RETURN = r"""
project:
  description: Compose project name.
  returned: always
  type: str
  sample: hyhome
plan:
  description: Per service, the planned action (none, create, start, recreate, restart, stop, remove) and why.
  returned: always
  type: dict
  sample: {db: {action: recreate, reasons: ["mounted content changed: /srv/hyhome/secrets/db/pg.txt"]}}
actions:
  description:
    - Per service, what happened (created, recreated, started, stopped, removed), from container ids and
      C(StartedAt) before and after. In check mode, the planned actions.
  returned: always
  type: dict
  sample: {db: [recreated]}
services:
  description: Per service, status and containers (name, short id, StartedAt) after the run.
  returned: always
  type: dict
fingerprints:
  description: Per service, a short display form of the content fingerprint (not the digest itself).
  returned: when O(state) is present or restarted and O(fingerprints=true)
  type: dict
networks_created:
  description: External networks that were created (or would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [proxy]
orphans:
  description: Orphan containers removed (or to remove in check mode).
  returned: always
  type: list
  elements: str
images_built:
  description: Services whose image was built (or would be, in check mode).
  returned: always
  type: list
  elements: str
images_pulled:
  description: Services whose image was pulled (or would be, in check mode).
  returned: always
  type: list
  elements: str
recreate_ignored:
  description:
    - Names in O(recreate) that are not services of the active project (ignored, with a warning).
    - In check mode too. Empty in check mode before Docker is installed (the project cannot be read then).
  returned: always
  type: list
  elements: str
commands:
  description: The C(docker compose) command lines that were run.
  returned: always
  type: list
  elements: list
project_context:
  description:
    - Whether this call reused the run's project context (V(hit)) or ran C(docker compose config) (V(miss)),
      and a short form of the context key. Counting V(miss) over a run counts the computations.
  returned: when the project was read
  type: dict
  sample: {cache: hit, key: 3f2a9c01b7de}
"""

import shutil  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the documentation, as Ansible expects
from ansible_collections.hyhome.bootstrap.plugins.module_utils import compose_up as core  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import refuse_dangerous  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_options import (  # noqa: E402
    context_result,
    load_checked,
    project_argspec,
)


def _warn_ignored(module, result):
    if result.get("recreate_ignored"):
        module.warn("recreate lists services not in the active project, ignored: "
                    + ", ".join(result["recreate_ignored"]))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **project_argspec(),
            project_name=dict(type="str"),
            services=dict(type="list", elements="str", default=[]),
            state=dict(type="str", choices=["present", "stopped", "restarted", "absent"], default="present"),
            pull=dict(type="str", choices=["missing", "always", "never"], default="missing"),
            build=dict(type="str", choices=["never", "missing", "always"], default="missing"),
            remove_orphans=dict(type="bool", default=False),
            remove_volumes=dict(type="bool", default=False),
            wait=dict(type="bool", default=True),
            wait_timeout=dict(type="int", default=300),
            recreate=dict(type="list", elements="str", default=[]),
            fingerprints=dict(type="bool", default=True),
            create_networks=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        refuse_dangerous(p["project_dir"], "project_dir")
        if module.check_mode and p["state"] == "present" and not shutil.which(p["docker_cli"]):
            # --check on a new machine: Docker is installed by an earlier step that only simulated.
            module.warn(f"{p['docker_cli']} is not installed yet; check mode assumes the whole project is created")
            module.exit_json(changed=True, state=p["state"], project=p["project_name"] or "", plan={}, actions={},
                             services={}, orphans=[], images_built=[], images_pulled=[], commands=[],
                             recreate_ignored=[], networks_created=[])
        if p["wait_timeout"] <= 0:
            raise HyHomeError("wait_timeout must be a positive number of seconds")
        project = load_checked(p, module.check_mode)
        if p["project_name"]:
            project.name = p["project_name"]
        try:
            engine = core.Engine(project.working_dir, project.name, files=p["files"], profiles=p["profiles"],
                                 docker=p["docker_cli"], env_file=p["env_file"])
        except HyHomeError as e:
            if not module.check_mode or p["state"] != "present":
                raise
            # --check on a fresh host: the engine is installed by an earlier (skipped) step.
            module.warn(f"{e.msg}; check mode assumes every service would be created")
            plan = {n: {"action": "create", "reasons": ["no Docker engine reachable yet"]}
                    for n in sorted(project.services)}
            result = dict(changed=True, state=p["state"], project=project.name, plan=plan,
                          actions={n: ["create"] for n in plan}, services={}, orphans=[], images_built=[],
                          images_pulled=[], commands=[], recreate_ignored=core.recreate_ignored(project, p["recreate"]),
                          networks_created=core.external_networks(project, project.services),
                          project_context=context_result(project))
            _warn_ignored(module, result)
            module.exit_json(**result)
        opts = core.Options(
            state=p["state"], services=p["services"], pull=p["pull"], build=p["build"],
            remove_orphans=p["remove_orphans"], remove_volumes=p["remove_volumes"], wait=p["wait"],
            wait_timeout=float(p["wait_timeout"]), recreate=p["recreate"], fingerprints=p["fingerprints"],
            create_networks=p["create_networks"], check_mode=module.check_mode, diff=module._diff,
        )
        result = core.apply(engine, project, opts)
        result["project_context"] = context_result(project)
        _warn_ignored(module, result)
    except HyHomeError as e:
        partial = e.details.get("result") or {}
        module.fail_json(msg=e.msg, **{k: v for k, v in partial.items() if k not in ("msg", "failed")})
    module.exit_json(**result)


if __name__ == "__main__":
    main()
