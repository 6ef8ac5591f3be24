#!/usr/bin/python
"""Ansible module: publish a Compose project's built images to a registry, pinned by digest."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_publish
short_description: Push the images a Compose project builds to a registry and return their digests
version_added: "0.2.0"
description:
  - For each service with a C(build:) section (or each of O(services)), tags its local image
    (C(hyhome/api:local)) as C(<registry>/<repository>:<tag>) (C(127.0.0.1:5000/hyhome/api:local)), pushes
    it, checks the registry now answers the pushed manifest digest for that tag, and returns the reference
    pinned by digest (C(127.0.0.1:5000/hyhome/api@sha256:...)) that a rollout deploys
    (C(playbooks/rollout.yml -e service=api -e image=<pinned>)).
  - Builds first per O(build), with C(docker compose build) (so the image is the one the project runs).
  - Talks to the registry through the Docker engine, so the engine's settings apply. A registry on the
    loopback (127.0.0.0/8, C(localhost)) is reachable over plain HTTP with the engine's defaults; any other
    needs TLS or an C(insecure-registries) entry in C(daemon.json).
  - The registry itself comes from the C(hyhome.bootstrap.registry) role (C(playbooks/registry.yml)).
author: Hy-Home Bootstrap maintainers (@hyhome)
requirements:
  - the Python C(docker) SDK on the managed host
  - Docker Engine with the Compose v2 CLI plugin
attributes:
  check_mode:
    support: full
    description: Reports what would be built and pushed (action V(push)) without building, tagging or
      pushing; digests of images not pushed yet are unknown then (null).
  diff_mode:
    support: full
    description: Per image, the reference and the digest the registry had before and has after.
  idempotent:
    support: full
    description: Nothing is built (O(build=missing)) or pushed when the registry's tag already holds this
      image's digest; C(changed=false). Pushing the same image again yields the same digest.
extends_documentation_fragment:
  - hyhome.bootstrap.project
options:
  project_name:
    description: Compose project name. Default is the name Compose derives.
    type: str
  services:
    description: Services whose image to publish. Default every service with a C(build:) section.
    type: list
    elements: str
    default: []
  registry:
    description: The registry, C(host[:port]), no scheme.
    type: str
    default: 127.0.0.1:5000
  tag:
    description: Tag in the registry. Default the tag of the service's image (C(local) for C(hyhome/api:local)).
    type: str
  build:
    description:
      - V(missing) builds an image that is not on the engine; V(always) builds again (a new build after a
        source change; a build that changes nothing keeps the image id); V(never) fails on a missing image.
    type: str
    choices: [never, missing, always]
    default: missing
  force:
    description: Push even when the registry already holds the digest (the digest stays the same).
    type: bool
    default: false
seealso:
  - module: hyhome.bootstrap.compose_rollout
"""

EXAMPLES = r"""
- name: Publish the API's image and deploy it by digest
  hyhome.bootstrap.image_publish:
    project_dir: /srv/hyhome/stack
    services: [api]
    tag: "2"
    build: always
  register: published

- name: Roll it out by digest (what playbooks/rollout.yml -e service=api -e image=... does)
  hyhome.bootstrap.compose_rollout:
    project_dir: /srv/hyhome/stack
    service: api
    image: "{{ published.pinned.api }}"

- name: What would be pushed
  hyhome.bootstrap.image_publish:
    project_dir: /srv/hyhome/stack
  check_mode: true
  diff: true
"""

RETURN = r"""
images:
  description:
    - Per service, C(source) (the local image), C(image_id), C(reference) (registry tag), C(before) (the
      digest the registry had for it, or null), C(digest) (after; null in check mode when not pushed yet),
      C(pinned) (C(<repository>@<digest>), when the digest is known) and C(action) (V(pushed), V(unchanged),
      or V(push) in check mode).
  returned: always
  type: dict
  sample:
    api:
      source: hyhome/api:local
      image_id: sha256:9779f1045ca4...
      reference: 127.0.0.1:5000/hyhome/api:local
      before: null
      digest: sha256:0f3c...
      pinned: 127.0.0.1:5000/hyhome/api@sha256:0f3c...
      action: pushed
pinned:
  description: Service -> the reference by digest to deploy (the same as C(images.<service>.pinned)).
  returned: always
  type: dict
  sample: {api: "127.0.0.1:5000/hyhome/api@sha256:0f3c..."}
built:
  description: Services built (or that would be, in check mode).
  returned: always
  type: list
  elements: str
project_context:
  description: Whether the project context was reused (V(hit)) or computed (V(miss)).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the documentation, as Ansible expects
from ansible_collections.hyhome.bootstrap.plugins.module_utils import image_registry as core  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_up import Engine  # noqa: E402
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
            project_name=dict(type="str"),
            services=dict(type="list", elements="str", default=[]),
            registry=dict(type="str", default=core.DEFAULT_REGISTRY),
            tag=dict(type="str"),
            build=dict(type="str", choices=list(core.BUILD_CHOICES), default="missing"),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        project = load_checked(p, module.check_mode)
        if p["project_name"]:
            project.name = p["project_name"]
        targets = core.plan(project, p["services"], p["registry"], p["tag"])
        engine = Engine(project.working_dir, project.name, files=p["files"], profiles=p["profiles"],
                        docker=p["docker_cli"], env_file=p["env_file"])
        result = core.publish(core.DockerImages(engine), targets, build=p["build"], force=p["force"],
                              check_mode=module.check_mode)
    except HyHomeError as e:
        module.fail_json(msg=e.msg)
    if module._diff:
        result["diff"] = core.diff(result)
    result["project_context"] = context_result(project)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
