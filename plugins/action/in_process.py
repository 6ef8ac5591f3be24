# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0
"""Run this collection's modules inside the task's worker process when the target is this machine.

A module task normally costs two things before the module does anything: the controller builds the
AnsiballZ payload (an AST walk of every module_utils file it imports, then a zip), and a fresh Python
on the target unpacks it and compiles those files again from the zip. For this collection's modules
that is about 0.8 s of CPU per task, most of a no-op day0 run. When the task runs on this machine
with the controller's own Python (the default inventory: ``ansible_connection: local`` and
``ansible_python_interpreter: "{{ ansible_playbook_python }}"``), the worker process forked for the
task is already such a Python: this action runs the module there, through the same entry point
AnsiballZ uses (same arguments, same JSON result, same exit handling), with the task's environment.

Any other case takes the normal path, unchanged: another connection (ssh, docker), another
interpreter, ``become``, ``async``. ``hyhome_in_process: false`` (or ``HYHOME_IN_PROCESS=0``)
forces the normal path.

Wired to the modules in ``meta/runtime.yml`` (``plugin_routing.modules.<name>.action_plugin``).
"""

from __future__ import annotations

import json
import os
import sys

from ansible.module_utils.common.json import Direction, get_module_encoder
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash
from ansible.vars.clean import remove_internal_keys
from ansible_collections.hyhome.bootstrap.plugins.plugin_utils.in_process import PROFILE, _loader, run_module

LOCAL_CONNECTIONS = ("local", "ansible.builtin.local", "ansible.legacy.local")


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        wrap_async = self._task.async_val and not self._connection.has_native_async
        module_fqn = self._module_fqn() if not wrap_async and self._runs_here(task_vars) else None
        if module_fqn:
            return merge_hash(result, self._execute_in_process(module_fqn, task_vars))
        result = merge_hash(result, self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    # ----------------------------------------------------------------------------------------

    def _runs_here(self, task_vars: dict) -> bool:
        """The target is this machine, as this user, with this very Python."""
        if _loader is None or os.environ.get("HYHOME_IN_PROCESS", "1") == "0":
            return False
        if not boolean(self._templar.template(task_vars.get("hyhome_in_process", True)), strict=False):
            return False
        if self._connection.transport not in LOCAL_CONNECTIONS or self._play_context.become:
            return False
        host_vars = task_vars
        if self._task.delegate_to:
            host_vars = (task_vars.get("ansible_delegated_vars") or {}).get(self._task.delegate_to) or {}
        interpreter = host_vars.get("ansible_python_interpreter")
        if not interpreter:
            return False
        return same_python(str(self._templar.template(interpreter)), sys.executable)

    def _module_fqn(self) -> str | None:
        """The Python name of the module (``ansible_collections.<ns>.<coll>.plugins.modules.<name>``);
        None sends the task down the normal path, which reports a module it cannot find properly."""
        context = self._shared_loader_obj.module_loader.find_plugin_with_context(
            self._task.action, collection_list=self._task.collections)
        if not context.resolved or not context.plugin_resolved_collection:
            return None
        namespace, collection = context.plugin_resolved_collection.split(".", 1)
        name = context.resolved_fqcn.rsplit(".", 1)[-1]
        return f"ansible_collections.{namespace}.{collection}.plugins.modules.{name}"

    def _execute_in_process(self, module_fqn: str, task_vars: dict) -> dict:
        module_args = self._task.args.copy()
        self._update_module_args(self._task.action, module_args, task_vars)
        environment: dict = {}
        self._compute_environment_string(environment)
        encoder = get_module_encoder(PROFILE, Direction.CONTROLLER_TO_MODULE)
        params = json.dumps({"ANSIBLE_MODULE_ARGS": module_args}, cls=encoder).encode()
        stdout, rc = run_module(module_fqn, params, environment)
        data = self._parse_returned_data({"stdout": stdout, "stderr": "", "rc": rc}, PROFILE)
        data.pop("_ansible_suppress_tmpdir_delete", None)
        remove_internal_keys(data)   # as the normal path does
        return data


def same_python(interpreter: str, current: str) -> bool:
    """Whether ``interpreter`` starts the very Python ``current`` is: the same binary, from the same
    directory (a virtualenv is found next to the path it is started by, so a link elsewhere to the
    same binary is another environment)."""
    interpreter = os.path.abspath(os.path.expanduser(interpreter))
    current = os.path.abspath(current)
    if os.path.dirname(interpreter) != os.path.dirname(current):
        return False
    return os.path.realpath(interpreter) == os.path.realpath(current)
