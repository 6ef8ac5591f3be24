#!/usr/bin/python
# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: run_lock
short_description: One day0 run at a time on a project; the lock is held until the run ends
description:
  - Takes an exclusive lock (C(flock)) on C(<project_dir>/.hyhome/run.lock) for the rest of the run, so two
    C(ansible-playbook day0.yml) runs on the same project cannot interleave their writes. The second run
    waits up to O(wait) seconds, then fails with a one-line message naming the holder
    (C(another day0 run (pid N, started T) holds <lock>; wait for it or stop it)); it changes nothing.
  - The lock is held by the C(ansible-playbook) main process (through the C(hyhome.bootstrap.run_lock)
    callback, which must be enabled) and released by the kernel when that process ends, however it ends,
    SIGKILL included. There is never a stale lock to remove; the file only names the holder.
  - Scope. For a target that is this machine (C(local) connection) the lock is in the project itself, so
    it covers every run on this host, from any checkout or user with access. For a remote target the lock
    is C(<playbook_dir>/.hyhome/run-<hash of host and project>.lock) on the controller; it serializes the
    runs of this controller checkout against that host and project, not runs started from elsewhere.
  - Check mode writes nothing; it takes the lock only when the lock file exists already (a project that
    never had a real run is not locked by a check run).
  - The same run locking the same project for another host (two inventory names for one machine) is no
    conflict.
  - This is an action plugin. It runs on the controller; there is no module code on the target.
version_added: 0.3.0
author: Hy-Home Bootstrap maintainers (@hyhome)
options:
  project_dir:
    description: The Compose project directory (day0 passes C(hyhome_project_dir)). A directory that does not
      exist yet is not locked (the preflight step reports it).
    type: path
    required: true
  wait:
    description:
      - Seconds to wait for another run's lock before failing. C(0) refuses at once.
      - day0 takes it from C(hyhome_run_lock_wait), else the C(HYHOME_RUN_LOCK_WAIT) environment variable, else 0.
    type: float
    default: 0
  enabled:
    description: C(false) skips the lock (day0's C(hyhome_run_lock)).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Takes an existing lock file's lock; never creates the file or its directory.
  diff_mode:
    support: none
    description: There is nothing to show; the lock is no change.
  idempotent:
    support: full
    description: Never reports a change.
notes:
  - Needs the C(hyhome.bootstrap.run_lock) callback enabled (the repository's C(ansible.cfg) does it).
"""

EXAMPLES = r"""
- name: Run lock — one day0 run at a time on this project
  hyhome.bootstrap.run_lock:
    project_dir: "{{ hyhome_project_dir }}"
    wait: 60
"""

RETURN = r"""
lock:
  description: Path of the lock file, or null when nothing was locked (disabled, or no project directory yet).
  returned: always
  type: str
  sample: /srv/app/.hyhome/run.lock
locked:
  description: Whether this run holds the lock after the task.
  returned: always
  type: bool
  sample: true
msg:
  description: What was done.
  returned: always
  type: str
  sample: locked /srv/app/.hyhome/run.lock for this run
"""
