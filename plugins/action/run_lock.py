# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0
"""Take the day0 run lock for a project (see plugins/plugin_utils/run_lock.py and the run_lock module doc)."""

from __future__ import annotations

import hashlib
import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible_collections.hyhome.bootstrap.plugins.action.in_process import LOCAL_CONNECTIONS
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_context import ensure_state_dir
from ansible_collections.hyhome.bootstrap.plugins.plugin_utils import run_lock as rl


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _requires_connection = False
    _VALID_ARGS = frozenset(("project_dir", "wait", "enabled"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        args = self._task.args
        result.update(changed=False, locked=False)
        if not boolean(args.get("enabled", True), strict=False):
            result.update(lock=None, msg="run lock disabled (hyhome_run_lock: false)")
            return result
        try:
            wait = float(args.get("wait") or 0)
        except (TypeError, ValueError):
            raise AnsibleActionFail(f"wait must be a number of seconds, not {args.get('wait')!r}") from None
        project = str(args.get("project_dir") or "")
        if not project:
            raise AnsibleActionFail("project_dir is empty: set hyhome_project_dir")
        check = bool(self._task.check_mode if self._task.check_mode is not None else self._play_context.check_mode)
        try:
            path = self._lock_path(project, task_vars, create=not check)
        except HyHomeError as exc:
            raise AnsibleActionFail(f"cannot prepare the run lock: {exc}") from None
        except OSError as exc:
            raise AnsibleActionFail(f"cannot prepare the run lock in {exc.filename or project}: "
                                    f"{exc.strerror or exc}") from None
        result["lock"] = path
        if path is None:
            result["msg"] = f"nothing locked: {project} does not exist yet"
            return result
        if path in rl.HELD:
            result.update(locked=True, msg="held by this run")
            return result
        if rl.CHANNEL is None:
            raise AnsibleActionFail("the run lock needs the callback hyhome.bootstrap.run_lock: add it to "
                                    "ANSIBLE_CALLBACKS_ENABLED (or callbacks_enabled), or set hyhome_run_lock=false")
        try:
            fd = rl.acquire(path, wait, create=not check, own_pid=os.getppid(), info=rl.holder_info(os.getppid()))
        except (rl.RunLockBusy, rl.RunLockError) as exc:
            raise AnsibleActionFail(str(exc)) from None
        if fd is None:   # check mode on a project never run: nothing to lock, and nothing is written
            result["msg"] = "check mode: no lock file yet, nothing locked (check mode writes nothing)"
            return result
        if fd == rl.THIS_RUN:
            result.update(locked=True, msg="held by this run")
            return result
        try:
            rl.hand_over(fd, path)
        finally:
            os.close(fd)
        result.update(locked=True, msg=f"locked {path} for this run")
        return result

    def _lock_path(self, project: str, task_vars: dict, create: bool) -> str | None:
        """<project>/.hyhome/run.lock when the project is on this machine; for a remote target, a lock
        per host and project in the playbook directory's state dir (this controller's runs only)."""
        local = self._connection.transport in LOCAL_CONNECTIONS and not self._task.delegate_to
        if local:
            base = os.path.realpath(project)
            if not os.path.isdir(base):
                return None
            name = rl.LOCK_NAME
        else:
            base = str(task_vars.get("playbook_dir") or os.getcwd())
            host = str(task_vars.get("inventory_hostname", ""))
            name = "run-" + hashlib.sha256(f"{host}\0{project}".encode()).hexdigest()[:16] + ".lock"
        state = os.path.join(base, ".hyhome")
        if create:
            try:
                ensure_state_dir(base)
            except FileExistsError:   # another run created it at the same moment
                ensure_state_dir(base)
        return os.path.join(state, name)
