"""The one option set of every module that reads a Compose project, and the one way to load it.

Documented once by the doc fragment ``hyhome.bootstrap.project``; the argument spec comes from
:func:`project_argspec`, merged into each module's own options (like community.docker's
``common_compose_argspec_ex()``):

    project_dir   path, required (optional where the module also works without a project)
    files         list of paths, default []       alias: compose_files
    env_file      path, default <project_dir>/.env
    profiles      list of str, default []         ("*" activates every profile)
    docker_cli    str, default "docker"           alias: docker

Modules load the project with :func:`load_checked` (refuse a system directory, load, refuse a
project Compose rejects), :func:`load` where a rejected project is still worth reading, or hand
:func:`loader` to a core that loads it, so
every step of a run shares one project context (``project_context``): ``docker compose config``
runs once per content of the project, and each result reports ``project_context``.
"""

from __future__ import annotations

import functools

DEFAULT_PROFILES: list[str] = []
DEFAULT_DOCKER_CLI = "docker"
OPTION_NAMES = ("project_dir", "files", "env_file", "profiles", "docker_cli")


def project_argspec(project_dir_required: bool = True) -> dict:
    """The project options, to merge into a module's ``argument_spec`` (a fresh dict each call)."""
    return {
        "project_dir": {"type": "path", "required": project_dir_required},
        "files": {"type": "list", "elements": "path", "default": [], "aliases": ["compose_files"]},
        "env_file": {"type": "path"},
        "profiles": {"type": "list", "elements": "str", "default": list(DEFAULT_PROFILES)},
        "docker_cli": {"type": "str", "default": DEFAULT_DOCKER_CLI, "aliases": ["docker"]},
    }


def project_kwargs(params: dict) -> dict:
    """Module parameters -> the keyword arguments of ``compose_model.load_project``."""
    return {
        "files": list(params.get("files") or []) or None,
        "env_file": params.get("env_file") or None,
        "profiles": list(params.get("profiles") or []),
        "docker": params.get("docker_cli") or DEFAULT_DOCKER_CLI,
    }


def cache_mode(check_mode: bool) -> str:
    """Check mode reuses the project context but never writes it."""
    return "read" if check_mode else "write"


def loader(check_mode: bool, load_project=None):
    """``load_project`` bound to the run's project context, for cores that take a loader."""
    if load_project is None:
        from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import load_project
    return functools.partial(load_project, cache=cache_mode(check_mode))


def load(params: dict, check_mode: bool = False, env_file: str | None = None):
    """The project named by the module parameters, through the run's project context. With
    ``env_file`` (a file not yet in place, such as a backup's ``.env``) the context is neither read
    nor written."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import load_project

    kwargs = project_kwargs(params)
    if env_file:
        kwargs["env_file"] = env_file
    return load_project(params["project_dir"], cache="off" if env_file else cache_mode(check_mode), **kwargs)


def load_checked(params: dict, check_mode: bool = False, env_file: str | None = None):
    """What every module that acts on a project does first: refuse a system directory as
    ``project_dir``, load the project (:func:`load`), and raise the one clear line when
    ``docker compose config`` rejects it."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import refuse_dangerous

    refuse_dangerous(params["project_dir"], "project_dir")
    project = load(params, check_mode, env_file)
    raise_if_rejected(project, params["project_dir"])
    return project


def raise_if_rejected(project, project_dir) -> None:
    """One clear line when ``docker compose config`` rejected the project: its error lines only,
    not the warnings (unset variables, obsolete ``version:``) printed before them."""
    if not project.config_error:
        return
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import split_compose_stderr
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

    errors = split_compose_stderr(project.config_error)[0]
    raise HyHomeError(f"docker compose rejects the project in {project_dir}: "
                      + ("; ".join(errors) or "no error line (run `docker compose config` there)"))


def context_result(project) -> dict:
    """The ``project_context`` return value: was the context reused (hit) or computed (miss)."""
    context = getattr(project, "context", None) or {}
    return {"cache": context.get("cache", "off"), "key": context.get("key")}
