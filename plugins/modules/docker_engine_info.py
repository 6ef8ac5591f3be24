#!/usr/bin/python
# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0 (see galaxy.yml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_engine_info
short_description: What a host has of Docker Engine, Compose v2 and the Python libraries our modules import
version_added: "0.2.0"
description:
  - Read-only, and runs on a bare host (Python's standard library only, no PyYAML, no Docker SDK). The
    hyhome.bootstrap.docker_engine role calls it first and skips every installation task when RV(ready).
  - Reports the operating system (C(/etc/os-release)), whether the engine answers (C(docker version)) and its
    version, the installed dockerd's version, the Compose plugin's version, whether PyYAML and the Docker SDK
    import in this Python, whether systemd runs, the current C(vm.max_map_count) and whether it can be written,
    and the Debian mirror the host's own apt sources name.
  - With O(project_dir), also the services of that Compose project whose image is a search engine
    (O(search_images)), read from the compose files as written (no Docker needed; PyYAML is). A project that
    cannot be read yet is reported in RV(project_error), not failed on.
author:
  - Hy-Home Bootstrap maintainers (@hyhome)
options:
  docker_cli:
    description: The docker CLI (a name in PATH or an absolute path).
    type: str
    default: docker
  dockerd:
    description: The dockerd binary.
    type: str
    default: dockerd
  project_dir:
    description: A Compose project to scan for search-engine images. Empty scans nothing.
    type: path
  files:
    description: Compose files relative to O(project_dir); empty means Compose's own lookup.
    type: list
    elements: path
    default: []
  env_file:
    description: Env file used for C(${VAR:-default}) images; empty means C(<project_dir>/.env).
    type: path
  search_images:
    description: Image names (last path component, no tag) that need a large C(vm.max_map_count).
    type: list
    elements: str
    default: [elasticsearch, opensearch]
  min_version:
    description: The oldest supported Docker Engine; an older one (or none answering) is listed in RV(version_problems).
    type: str
    default: "20.10"
  compose_min_version:
    description: The oldest supported Compose v2; an older one (or none) is listed in RV(version_problems).
    type: str
    default: "2.17"
  timeout:
    description: Seconds each probe (C(docker version), C(docker compose version), C(dockerd --version)) may take.
    type: int
    default: 20
attributes:
  check_mode:
    support: full
    description: Read-only; the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to show.
  idempotent:
    support: full
    description: Never changes anything.
"""

EXAMPLES = r"""
- name: What is there already
  hyhome.bootstrap.docker_engine_info:
    project_dir: /srv/stack
  register: engine

- name: Install only when something is missing
  ansible.builtin.include_tasks: install.yml
  when: not engine.ready
"""

RETURN = r"""
ready:
  description: The engine answers, Compose v2 is there, and PyYAML and the Docker SDK import.
  returned: always
  type: bool
os:
  description: C(id), C(version_id), C(version_codename) and C(id_like) from C(/etc/os-release).
  returned: always
  type: dict
  sample: {id: debian, version_id: "12", version_codename: bookworm, id_like: ""}
engine:
  description: C(answers) (bool), C(version) and C(api_version) of the running daemon, C(error) when it does not answer.
  returned: always
  type: dict
dockerd:
  description: C(path) and C(version) of the installed dockerd (null when not installed).
  returned: always
  type: dict
compose:
  description: C(version) of the Compose plugin (null when missing), C(v2) (bool).
  returned: always
  type: dict
python_modules:
  description: Whether C(yaml) and C(docker) import in the Python running the module.
  returned: always
  type: dict
  sample: {yaml: true, docker: false}
systemd:
  description: systemd is the init system (C(/run/systemd/system) exists).
  returned: always
  type: bool
max_map_count:
  description: The current C(vm.max_map_count) (null when unreadable) and C(writable) (C(/proc/sys) is writable).
  returned: always
  type: dict
debian_mirror:
  description: The Debian archive the host's apt sources name for its own release (null when none, or not Debian).
  returned: always
  type: str
version_problems:
  description: One line per version below its minimum (or missing); empty when both are supported.
  returned: always
  type: list
  elements: str
  sample: ["Docker Engine 19.3.15 is older than the supported minimum 20.10"]
search_services:
  description: Services of O(project_dir) whose image is in O(search_images).
  returned: always
  type: list
  elements: str
project_error:
  description: Why O(project_dir) could not be scanned (missing, unreadable, PyYAML not installed yet).
  returned: when O(project_dir) was given and could not be read
  type: str
"""

import glob  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the documentation, as Ansible expects
from ansible_collections.hyhome.bootstrap.plugins.module_utils import docker_engine, procs  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402

APT_SOURCES = ["/etc/apt/sources.list", "/etc/apt/sources.list.d/*.list", "/etc/apt/sources.list.d/*.sources"]


def os_release(path: str = "/etc/os-release") -> dict:
    out = {"id": "", "version_id": "", "version_codename": "", "id_like": ""}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                key, sep, value = line.strip().partition("=")
                if sep and key.lower() in out:
                    out[key.lower()] = value.strip().strip('"').strip("'")
    except OSError:
        pass
    return out


def _run(argv, timeout):
    try:
        res = procs.run(argv, timeout=timeout)
    except (OSError, procs.CommandTimeout) as exc:
        return None, str(getattr(exc, "msg", None) or exc)
    if res.returncode != 0:
        return None, (res.stderr or res.stdout or f"exit code {res.returncode}").strip().splitlines()[-1][:300]
    return res.stdout.strip(), None


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except Exception:   # any failure (ImportError, a broken install) means "not usable"
        return False
    return True


def _sources() -> list[tuple[str, str]]:
    out = []
    for pattern in APT_SOURCES:
        for path in sorted(glob.glob(pattern)):
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    out.append((path, fh.read(1024 * 1024)))
            except OSError:
                continue
    return out


def search_services(project_dir, files, env_file, images) -> list[str]:
    """Services whose image (as written, with ``${VAR:-default}`` defaults) is a search engine."""
    # Imported here: both need PyYAML, which a bare host gets from the role that calls this module.
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import compose_model
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.preflight import _image_name

    raw = compose_model.load_raw(project_dir, files or None, env_file)
    wanted = {i.lower() for i in images}
    found = set()
    for rf in raw.compose_files:
        for name, svc in ((rf.data or {}).get("services") or {}).items():
            if not isinstance(svc, dict):
                continue
            svc = raw.resolved_service(svc, rf)
            image = svc.get("image")
            if isinstance(image, str):
                image = compose_model._expand_defaults(image, raw.env)
                if _image_name(image) in wanted:
                    found.add(str(name))
    return sorted(found)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            docker_cli=dict(type="str", default="docker"),
            dockerd=dict(type="str", default="dockerd"),
            project_dir=dict(type="path"),
            files=dict(type="list", elements="path", default=[]),
            env_file=dict(type="path"),
            search_images=dict(type="list", elements="str", default=["elasticsearch", "opensearch"]),
            min_version=dict(type="str", default="20.10"),
            compose_min_version=dict(type="str", default="2.17"),
            timeout=dict(type="int", default=20),
        ),
        supports_check_mode=True,
    )
    p = module.params
    t = p["timeout"]
    result: dict = {"changed": False, "os": os_release()}

    out, err = _run([p["docker_cli"], "version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"], t)
    engine = {"answers": False, "version": None, "api_version": None, "error": None}
    if out and docker_engine.parse_version(out):
        ver, _sep, api = out.partition(" ")
        engine.update(answers=True, version=ver, api_version=api or None)
    else:
        engine["error"] = err or f"unexpected output {out!r}"
    result["engine"] = engine

    dockerd_path = shutil.which(p["dockerd"]) or next(
        (c for c in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if os.access(c, os.X_OK)), None)
    dockerd_version = None
    if dockerd_path and not engine["answers"]:
        out, _err = _run([dockerd_path, "--version"], t)
        dockerd_version = docker_engine.version_text(docker_engine.parse_version(out)) if out else None
    elif engine["answers"]:
        dockerd_version = engine["version"]
    result["dockerd"] = {"path": dockerd_path, "version": dockerd_version}

    compose = {"version": None, "v2": False}
    if shutil.which(p["docker_cli"]):
        out, _err = _run([p["docker_cli"], "compose", "version", "--short"], t)
        parsed = docker_engine.parse_version(out) if out else None
        if parsed:
            compose = {"version": out.lstrip("v"), "v2": parsed[0] >= 2}
    result["compose"] = compose

    mods = {"yaml": _importable("yaml"), "docker": _importable("docker")}
    result["python_modules"] = mods
    result["systemd"] = os.path.isdir("/run/systemd/system")
    mmc = {"value": None, "writable": os.access("/proc/sys/vm/max_map_count", os.W_OK)}
    try:
        with open("/proc/sys/vm/max_map_count", encoding="ascii") as fh:
            mmc["value"] = int(fh.read().strip())
    except (OSError, ValueError):
        pass
    result["max_map_count"] = mmc
    os_info = result["os"]
    result["debian_mirror"] = (docker_engine.debian_mirror(_sources(), os_info["version_codename"])
                               if os_info["id"] == "debian" and os_info["version_codename"] else None)
    result["ready"] = engine["answers"] and compose["v2"] and all(mods.values())
    problems = []
    try:
        if not engine["answers"]:
            problems.append(f"Docker Engine does not answer: {engine['error']}")
        else:
            problems.append(docker_engine.check_minimum("Docker Engine", engine["version"], p["min_version"]))
        if not compose["version"]:
            problems.append("the Compose v2 plugin is missing (`docker compose version` failed)")
        else:
            problems.append(docker_engine.check_minimum("Compose", compose["version"], p["compose_min_version"]))
    except HyHomeError as exc:
        module.fail_json(msg=exc.msg)
    result["version_problems"] = [x for x in problems if x]

    result["search_services"] = []
    if p["project_dir"]:
        if not mods["yaml"]:
            result["project_error"] = "PyYAML is not installed yet (python3-yaml)"
        else:
            try:
                result["search_services"] = search_services(p["project_dir"], p["files"], p["env_file"],
                                                            p["search_images"])
            except HyHomeError as exc:
                result["project_error"] = exc.msg
            except OSError as exc:
                result["project_error"] = str(exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
