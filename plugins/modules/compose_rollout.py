#!/usr/bin/python
"""Ansible module: roll one service of a Compose project out to a new release with zero downtime."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compose_rollout
short_description: Zero-downtime rollout of one service behind the gateway, with automatic rollback
version_added: "0.2.0"
description:
  - Starts the new release of O(service) beside the running container (C(docker compose create --scale
    <service>=2) with the release's variables, so Compose labels it as part of the project), waits until it
    is healthy, moves the gateway's traffic to it with an nginx reload (never a restart), waits until every
    nginx worker that could still use the old container has exited, then stops and removes the old one.
  - The gateway proxies each service through one line, C(set $upstream_<service> http://host:port;), in
    C(/tmp/nginx/upstreams/<service>.conf) inside its tmpfs (written by the gateway's entrypoint with the
    service name). The rollout points it at the old container first (so the new one gets no traffic before
    it is healthy), then at the new container, and finally back at the service name.
  - The release is recorded in O(release_file) (C(HYHOME_<SERVICE>_IMAGE), C(HYHOME_<SERVICE>_VERSION)),
    which the compose files read, so a later day0 finds the running container up to date and changes
    nothing.
  - When the new container is not healthy within O(health_timeout) (or stops, or reports unhealthy), it is
    removed, the gateway points back at the service name (only the old container answers it) and the
    release file is left as it was, then the module fails with C(rolled_back=true), the new container's
    health-check output and its last log lines.
  - No other container is started, stopped or recreated.
author: Hy-Home Bootstrap maintainers (@hyhome)
requirements:
  - Docker Engine with the Compose v2 CLI plugin (C(docker compose))
  - the Python C(docker) SDK on the managed host
attributes:
  check_mode:
    support: full
    description: Checks the input, the service and the gateway, and returns the plan (RV(plan)) without
      building, pulling, starting a container, touching the gateway or writing the release file.
  diff_mode:
    support: full
    description: The release before and after (image and version), never anything else.
  idempotent:
    support: full
    description: Rolling out the release already running changes nothing (it only records it in
      O(release_file) when that file does not say so yet). O(build=true) always builds a new release.
extends_documentation_fragment:
  - hyhome.bootstrap.project
options:
  service:
    description: The service to roll out. It must have a healthcheck, publish no host port and sit behind
      O(gateway).
    type: str
    required: true
  gateway:
    description: The service that proxies O(service) (nginx, with the upstream files described above).
    type: str
    default: gateway
  tag:
    description:
      - New tag of the service's image (same repository). Built from the service's C(build:) section when no
        image with that tag exists locally (C(pull_policy=never) projects), else pulled.
    type: str
  image:
    description:
      - The image reference to run as is, for example C(registry.lan:5000/hyhome/api@sha256:<digest>). Pulled
        when missing locally. Mutually exclusive with O(tag) and O(build).
    type: str
  build:
    description: Build a new image from the service's C(build:) section (tagged O(tag), or
      C(build-<UTC timestamp>)) and roll it out.
    type: bool
    default: false
  version:
    description: The version the service reports (C(X-Hyhome-Version)). Default the tag, or C(sha256-<12 hex>)
      for an image by digest.
    type: str
  release_file:
    description: The env file, relative to O(project_dir), where the release is recorded. The compose files
      must read it (an C(include:) entry's C(env_file)) and use C(${HYHOME_<SERVICE>_IMAGE:-...}).
    type: str
    default: app/release.env
  health_timeout:
    description: Seconds the new container has to become healthy before the rollout is rolled back.
    type: int
    default: 90
  drain_timeout:
    description: Seconds to wait, after each nginx reload, for the workers of the previous configuration
      to finish their requests. When they have not, the rollout goes on and warns.
    type: int
    default: 30
  stop_timeout:
    description: Seconds the old container gets to stop (SIGTERM) before it is killed.
    type: int
    default: 10
notes:
  - A rollout interrupted hard (the controller killed) can leave two containers of the service; the module
    then refuses to start and names them. Remove the one that does not serve and run day0.
"""

EXAMPLES = r"""
- name: Roll the API out to the image tagged 2
  hyhome.bootstrap.compose_rollout:
    project_dir: /srv/hyhome/stack
    service: api
    tag: "2"

- name: Roll the API out to an image from the local registry, by digest
  hyhome.bootstrap.compose_rollout:
    project_dir: /srv/hyhome/stack
    service: api
    image: 127.0.0.1:5000/hyhome/api@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    version: "2.1"

- name: Build the web image again and roll it out, giving it 30 s to become healthy
  hyhome.bootstrap.compose_rollout:
    project_dir: /srv/hyhome/stack
    service: web
    build: true
    health_timeout: 30
"""

RETURN = r"""
service:
  description: The service rolled out.
  returned: always
  type: str
rolled_back:
  description: True when the new release was not healthy in time and the old container kept serving.
  returned: always
  type: bool
previous:
  description: The container, image and version serving before.
  returned: always
  type: dict
  sample: {container: hyhome-api-1, image: "hyhome/api:local", version: local}
current:
  description: The container, image and version serving now.
  returned: success, or failure after rollback
  type: dict
  sample: {container: hyhome-api-2, image: "hyhome/api:2", version: "2"}
release:
  description: The release asked for (image, version, build) and the file it is recorded in.
  returned: always
  type: dict
plan:
  description: What the rollout does (or, in check mode, would do), in order.
  returned: always
  type: list
  elements: str
steps:
  description: The steps done, each with its duration in seconds.
  returned: always
  type: list
  elements: dict
  sample: [{step: "gateway -> hyhome-api-1", seconds: 0.4}]
seconds:
  description: Duration of the whole rollout in seconds.
  returned: always
  type: float
drain_warnings:
  description: Gateway workers that had not finished within O(drain_timeout).
  returned: always
  type: list
  elements: str
commands:
  description: The docker and docker compose commands run.
  returned: always
  type: list
  elements: list
project_context:
  description: Whether the project model was reused (C(cache=hit)) or computed.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the documentation, as Ansible expects
from ansible_collections.hyhome.bootstrap.plugins.module_utils import rollout as core  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_options import (  # noqa: E402
    context_result,
    load_checked,
    project_argspec,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **project_argspec(),
            service=dict(type="str", required=True),
            gateway=dict(type="str", default="gateway"),
            tag=dict(type="str"),
            image=dict(type="str"),
            build=dict(type="bool", default=False),
            version=dict(type="str"),
            release_file=dict(type="str", default=core.RELEASE_FILE),
            health_timeout=dict(type="int", default=90),
            drain_timeout=dict(type="int", default=30),
            stop_timeout=dict(type="int", default=10),
        ),
        mutually_exclusive=[("image", "tag"), ("image", "build")],
        supports_check_mode=True,
    )
    p = module.params
    result = {"service": p["service"], "rolled_back": False, "previous": {}, "current": {}, "release": {},
              "plan": [], "steps": [], "drain_warnings": [], "seconds": 0.0, "commands": [], "project_context": {}}
    ops = None
    try:
        for name in ("health_timeout", "drain_timeout"):
            if p[name] <= 0:
                raise HyHomeError(f"{name} must be a positive number of seconds")
        if p["stop_timeout"] < 0:
            raise HyHomeError("stop_timeout must be 0 or more seconds")
        project = load_checked(p, module.check_mode)
        result["project_context"] = context_result(project)
        # Checked before the engine is reached: a wrong name fails the same way everywhere.
        core.check_service(project, p["service"], p["gateway"])
        ops = core.Ops(project, p["release_file"], files=p["files"], env_file=p["env_file"],
                       profiles=p["profiles"], docker=p["docker_cli"])
        req = core.Request(service=p["service"], gateway=p["gateway"], tag=p["tag"], image=p["image"],
                           version=p["version"], build=p["build"], health_timeout=float(p["health_timeout"]),
                           drain_timeout=float(p["drain_timeout"]), stop_timeout=p["stop_timeout"],
                           release_file=p["release_file"])
        out = core.run(ops, req, check_mode=module.check_mode)
        result.update(out.as_dict())
    except HyHomeError as e:
        result.update(e.details.get("result") or {})
        result["commands"] = [list(c) for c in getattr(getattr(ops, "engine", None), "commands", [])]
        module.fail_json(msg=e.msg, **{k: v for k, v in result.items() if k not in ("msg", "failed", "changed")})
    result["commands"] = [list(c) for c in ops.engine.commands]
    for w in result.get("drain_warnings") or []:
        module.warn(w)
    if module._diff:
        before = {k: result["previous"].get(k) for k in ("image", "version")}
        after = {k: result["release"].get(k) for k in ("image", "version")} if result["changed"] else before
        result["diff"] = {"before": before, "after": after}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
