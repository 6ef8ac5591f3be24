#!/usr/bin/python
# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0 (see galaxy.yml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_daemon_config
short_description: Merge the settings a Compose host needs into /etc/docker/daemon.json
version_added: "0.2.0"
description:
  - Merges log rotation (C(log-driver) C(json-file) with C(log-opts) C(max-size)/C(max-file)), C(live-restore),
    C(default-address-pools) and optional C(registry-mirrors), plus any O(settings), into the Docker daemon's
    configuration file, keeping every other key the file already has.
  - A wanted key replaces the file's value, except mappings, which are merged key by key (a C(log-opts.tag)
    you set survives); when the log driver changes, the old driver's C(log-opts) are dropped. Lists are
    replaced as a whole.
  - Validates before writing; types of known keys, every address pool a valid CIDR network with a C(size)
    between its prefix length and the address length, every mirror an http(s) URL without credentials.
    Where the installed dockerd has C(dockerd --validate) (23.0 and later), the result is also checked by
    dockerd itself; on older engines (20.10) RV(dockerd_validation) says that it was not available.
  - A malformed existing file (not JSON, not an object, duplicate keys) fails with line and column and is
    left untouched. Nothing is written when the merged content equals the file's (formatting aside).
  - Writes atomically (temporary file in the same directory, fsync, rename), mode 0644.
  - Does not restart the daemon; RV(restart_needed) and RV(reload_needed) tell the caller what to do
    (the hyhome.bootstrap.docker_engine role restarts through a handler).
author:
  - Hy-Home Bootstrap maintainers (@hyhome)
options:
  path:
    description: The daemon configuration file.
    type: path
    default: /etc/docker/daemon.json
  log_driver:
    description: The default logging driver. Empty leaves C(log-driver) and C(log-opts) unmanaged.
    type: str
    default: json-file
  log_max_size:
    description: C(log-opts.max-size), the size at which a container's log file is rotated (C(10m), C(100k), C(1g)).
      Empty leaves it unmanaged.
    type: str
    default: 10m
  log_max_file:
    description: C(log-opts.max-file), how many rotated log files to keep. 0 leaves it unmanaged.
    type: int
    default: 3
  live_restore:
    description: C(live-restore), containers keep running while dockerd restarts (upgrades, config changes).
    type: bool
    default: true
  default_address_pools:
    description:
      - C(default-address-pools), where Docker carves networks from (C(docker network create), Compose's
        networks). Empty leaves the key unmanaged.
    type: list
    elements: dict
    default: []
    suboptions:
      base:
        description: A CIDR network such as C(172.80.0.0/16).
        type: str
        required: true
      size:
        description: The prefix length of each network carved from O(default_address_pools[].base).
        type: int
        required: true
  registry_mirrors:
    description: C(registry-mirrors), http(s) URLs of Docker Hub pull-through mirrors. Empty leaves the key unmanaged.
    type: list
    elements: str
    default: []
  settings:
    description: More top-level keys to set, in dockerd's names (for example C(mtu) or C(storage-driver)); they win
      over the options above.
    type: dict
    default: {}
  validate_with_dockerd:
    description: Also run C(dockerd --validate --config-file) on the result when that dockerd supports it.
    type: bool
    default: true
  dockerd:
    description: The dockerd binary used for O(validate_with_dockerd) (a name in PATH or an absolute path).
    type: str
    default: dockerd
attributes:
  check_mode:
    support: full
    description: Computes and validates the result (dockerd's check included); writes nothing.
  diff_mode:
    support: full
    description: Shows the file before and after.
  idempotent:
    support: full
    description: A second run with the same options changes nothing.
notes:
  - The file holds no secret (mirror URLs with credentials are refused), so the diff shows it in full.
"""

EXAMPLES = r"""
- name: Log rotation, live-restore and our address pools
  hyhome.bootstrap.docker_daemon_config:
    default_address_pools:
      - {base: 172.80.0.0/16, size: 24}
  register: daemon_config

- name: Restart dockerd when a setting it reads only at start changed
  ansible.builtin.service:
    name: docker
    state: restarted
  when: daemon_config.restart_needed
"""

RETURN = r"""
changed_keys:
  description: Top-level keys whose value changed (or appeared, or went away).
  returned: always
  type: list
  elements: str
  sample: [live-restore, log-opts]
restart_needed:
  description: A changed key is only read when dockerd starts; restart it for the change to apply.
  returned: always
  type: bool
reload_needed:
  description: Every changed key is applied by a reload (SIGHUP); no restart needed.
  returned: always
  type: bool
config:
  description: The merged configuration (what the file holds after the run, or would hold in check mode).
  returned: always
  type: dict
unchecked_keys:
  description: Keys this module does not know the type of; kept as they are and left to dockerd to judge.
  returned: always
  type: list
  elements: str
dockerd_validation:
  description: >-
    V(passed), V(unsupported) (this dockerd has no C(--validate), before 23.0), V(not found) (no dockerd yet),
    V(skipped) (O(validate_with_dockerd=false), or nothing changed).
  returned: always
  type: str
  sample: unsupported
"""

import os  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the documentation, as Ansible expects
from ansible_collections.hyhome.bootstrap.plugins.module_utils import docker_engine, fileops, procs  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402


def dockerd_validate(dockerd: str, text: str) -> str:
    """Run ``dockerd --validate`` on ``text``: 'passed', 'unsupported' or 'not found'; raises on rejection."""
    with tempfile.TemporaryDirectory(prefix="hyhome-daemon-json-") as tmp:
        path = os.path.join(tmp, "daemon.json")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            res = procs.run([dockerd, "--validate", "--config-file", path], timeout=30)
        except FileNotFoundError:
            return "not found"
    if res.returncode == 0:
        return "passed"
    out = (res.stderr or res.stdout or "").strip()
    if "unknown flag" in out and "validate" in out:
        return "unsupported"
    last = out.splitlines()[-1] if out else f"exit code {res.returncode}"
    raise HyHomeError(f"dockerd rejects the merged configuration: {last.replace(path, 'daemon.json')}")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/etc/docker/daemon.json"),
            log_driver=dict(type="str", default="json-file"),
            log_max_size=dict(type="str", default="10m"),
            log_max_file=dict(type="int", default=3),
            live_restore=dict(type="bool", default=True),
            default_address_pools=dict(type="list", elements="dict", default=[], options=dict(
                base=dict(type="str", required=True), size=dict(type="int", required=True))),
            registry_mirrors=dict(type="list", elements="str", default=[]),
            settings=dict(type="dict", default={}),
            validate_with_dockerd=dict(type="bool", default=True),
            dockerd=dict(type="str", default="dockerd"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    path = p["path"]
    try:
        existing = fileops.read_bytes(path, "Docker daemon configuration")
        wanted = docker_engine.wanted_config(
            log_driver=p["log_driver"], log_max_size=p["log_max_size"] or None,
            log_max_file=p["log_max_file"] or None, live_restore=p["live_restore"],
            default_address_pools=p["default_address_pools"], registry_mirrors=p["registry_mirrors"],
            settings=p["settings"])
        plan = docker_engine.plan(existing, wanted, source=path)
        validation = "skipped"
        if plan.changed and p["validate_with_dockerd"]:
            validation = dockerd_validate(p["dockerd"], plan.text)
        if plan.changed and not module.check_mode:
            directory = os.path.dirname(path) or "."
            os.makedirs(directory, mode=0o755, exist_ok=True)
            fileops.atomic_write(path, plan.text.encode("utf-8"), mode=0o644)
    except HyHomeError as exc:
        module.fail_json(msg=exc.msg)
    except OSError as exc:
        module.fail_json(msg=f"cannot write the Docker daemon configuration: {fileops.os_error_text(exc, path)}")
    result = dict(changed=plan.changed, changed_keys=plan.changed_keys, restart_needed=plan.restart_needed,
                  reload_needed=plan.reload_needed, config=plan.after, unchecked_keys=plan.unchecked,
                  dockerd_validation=validation)
    if module._diff and plan.changed:
        before = "" if existing is None else existing.decode("utf-8", "replace")
        result["diff"] = dict(before=before, after=plan.text, before_header=path, after_header=path)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
