# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0
"""The project options shared by every module that reads a Compose project."""

from __future__ import annotations


class ModuleDocFragment:
    # Matches plugins/module_utils/project_options.py:project_argspec(). A module where the project is
    # optional re-declares project_dir in its own DOCUMENTATION (its definition wins over this one).
    DOCUMENTATION = r"""
options:
  project_dir:
    description:
      - Directory holding the root compose file (C(compose.yaml), C(docker-compose.yml), ...).
      - Its C(.hyhome/) state directory (0700) keeps the project context, C(docker compose config)'s
        result for the current content of the project, so the steps of one run compute it once (see
        RV(project_context)). Check mode reads it and never writes it.
    type: path
    required: true
  files:
    description:
      - Compose files, relative to O(project_dir), instead of Compose's own lookup (the root file plus
        C(compose.override.yaml) when present).
    type: list
    elements: path
    default: []
    aliases: [compose_files]
  env_file:
    description: Env file used for interpolation. Default C(<project_dir>/.env).
    type: path
  profiles:
    description:
      - Compose profiles to activate, as C(docker compose --profile). The default, none, is the set of
        services a plain C(docker compose up) starts; V(*) activates every profile.
    type: list
    elements: str
    default: []
  docker_cli:
    description: The docker CLI that runs C(docker compose) (a name in C(PATH) or an absolute path).
    type: str
    default: docker
    aliases: [docker]
"""
