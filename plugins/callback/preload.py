# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0
"""Import once, in the main process, what the collection's modules import when they run in-process."""

from __future__ import annotations

DOCUMENTATION = r"""
name: preload
type: aggregate
short_description: Import the collection's heavy dependencies once, before the task workers fork
description:
  - Ansible forks one worker process per task. When the collection's modules run inside that worker (the
    C(hyhome.bootstrap.in_process) action, for tasks on this machine with the controller's Python), every
    worker would import the docker SDK, cryptography, PyYAML, yamllint and the collection's compose model
    again; the docker SDK alone takes about 0.2 s.
  - This callback imports them once when the playbook starts, so every worker inherits them, and loads
    Ansible's own Jinja filter and test plugins, which every worker evaluating a filter (C(| bool),
    C(| default)) would otherwise load again. It prints nothing and changes nothing; a missing library
    is skipped (the module that needs it reports it).
  - Enabled in the repository's C(ansible.cfg) (C(callbacks_enabled)). When C(ANSIBLE_CALLBACKS_ENABLED) is set,
    add C(hyhome.bootstrap.preload) to it, or the runs are slower (not different).
  - Set C(HYHOME_IN_PROCESS=0) to turn the in-process path, and this import, off.
version_added: 0.2.0
author: Hy-Home Bootstrap maintainers (@hyhome)
"""

import os  # noqa: E402

from ansible.plugins.callback import CallbackBase  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.plugin_utils.in_process import preload  # noqa: E402


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "hyhome.bootstrap.preload"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if os.environ.get("HYHOME_IN_PROCESS", "1") != "0":
            preload()
