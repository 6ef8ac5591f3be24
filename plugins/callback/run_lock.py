# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0
"""Hold the day0 run lock in the ansible-playbook main process for the whole run."""

from __future__ import annotations

DOCUMENTATION = r"""
name: run_lock
type: aggregate
short_description: Hold the day0 run lock in the main process for the whole run
description:
  - The C(hyhome.bootstrap.run_lock) task locks the project (C(flock) on C(<project>/.hyhome/run.lock)) in
    the task's worker process, which ends with the task. This callback gives the lock a home for the rest
    of the run; it opens, in the main process and before any worker starts, a Unix socket over which the
    worker hands the locked file descriptor over, and it keeps the descriptors it receives.
  - The lock therefore lives exactly as long as the C(ansible-playbook) process. When the run ends, fails,
    is interrupted or is killed (even with SIGKILL), the kernel releases it; no stale lock is ever left.
  - It prints nothing and changes nothing. Enabled in the repository's C(ansible.cfg) (C(callbacks_enabled));
    when C(ANSIBLE_CALLBACKS_ENABLED) is set, add C(hyhome.bootstrap.run_lock) to it, or the lock task fails
    and says so.
version_added: 0.3.0
author: Hy-Home Bootstrap maintainers (@hyhome)
"""

from ansible.plugins.callback import CallbackBase  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.plugin_utils import run_lock  # noqa: E402


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "hyhome.bootstrap.run_lock"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        run_lock.open_channel()

    def v2_runner_on_ok(self, result):
        run_lock.receive()
