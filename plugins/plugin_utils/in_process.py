# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0
"""Controller-side support for running this collection's modules in the task's worker process.

Used by the ``hyhome.bootstrap.in_process`` action (runs a module as AnsiballZ would, in the worker
forked for the task) and the ``hyhome.bootstrap.preload`` callback (imports, once in the main
process, what every such module imports, so the forked workers inherit it instead of importing it
again per task: the docker SDK alone costs 0.2 s per import).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import os
import sys

try:  # the entry point of AnsiballZ itself (ansible-core 2.19); absent elsewhere -> normal path
    from ansible.module_utils._internal._ansiballz import _loader
except ImportError:  # pragma: no cover - another ansible-core
    _loader = None

PROFILE = "legacy"   # the serialization profile of modules that declare no metadata (all of ours)
COLLECTION = "ansible_collections.hyhome.bootstrap.plugins."
# What several modules of one run import (what only one imports gains nothing here: importing it
# in the main process makes every fork a little slower). Missing libraries are skipped: the module
# reports them.
PRELOAD = (
    "docker", "yaml", "cryptography.x509", "cryptography.hazmat.primitives.serialization",
    "cryptography.hazmat.primitives.asymmetric.rsa", "cryptography.hazmat.primitives.asymmetric.ec",
    COLLECTION + "module_utils.compose_model", COLLECTION + "module_utils.project_options",
    COLLECTION + "module_utils.project_context", COLLECTION + "module_utils.identity",
    COLLECTION + "module_utils.mounts", COLLECTION + "module_utils.findings",
)


def pycache_prefix() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hyhome-bootstrap", "pycache")


class BytecodeCachingLoader(importlib.machinery.SourceFileLoader):
    """Python's own source loader, keeping the bytecode under a cache directory outside the project
    (so even check mode leaves the tree as it was); only for the files the finder hands it."""

    def get_code(self, fullname):
        saved = sys.pycache_prefix, sys.dont_write_bytecode
        # ansible's workers inherit dont_write_bytecode=True; the prefix keeps the project clean
        sys.pycache_prefix, sys.dont_write_bytecode = pycache_prefix(), False
        try:
            return super().get_code(fullname)
        finally:
            sys.pycache_prefix, sys.dont_write_bytecode = saved


class BytecodeCachingFinder(importlib.abc.MetaPathFinder):
    """Plain source files of this collection's modules and module_utils, through that loader.

    Ansible's collection loader compiles every collection file from source on each import (about a
    third of a module run here). Packages stay with Ansible's loader.
    """

    prefixes = (COLLECTION + "modules.", COLLECTION + "module_utils.")

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(self.prefixes) or not path:
            return None
        leaf = fullname.rsplit(".", 1)[-1]
        for directory in path:
            candidate = os.path.join(directory, leaf + ".py")
            if os.path.isfile(candidate):
                return importlib.util.spec_from_file_location(
                    fullname, candidate, loader=BytecodeCachingLoader(fullname, candidate))
        return None


def install_finder() -> None:
    """Put the finder in front of Ansible's collection finder (once per process)."""
    if not any(isinstance(f, BytecodeCachingFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, BytecodeCachingFinder())


def preload(names=PRELOAD) -> list[str]:
    """Import ``names`` now (best effort); returns the ones that could not be imported.

    Also loads Ansible's own Jinja filter and test plugins: every worker that evaluates a template
    with a filter (``| bool``, ``| default``) loads all of them otherwise, about 10 ms per task.
    """
    install_finder()
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:   # an optional speed-up: the module itself reports what is missing
            missing.append(name)
    try:
        from ansible.plugins.loader import filter_loader, test_loader

        for loader in (filter_loader, test_loader):
            for _ in loader.all():
                pass
    except Exception:   # same: only a speed-up
        missing.append("ansible jinja plugins")
    return missing


def run_module(module_fqn: str, params: bytes, environment: dict) -> tuple[str, int]:
    """Run the module as AnsiballZ would, in this (forked, per-task) process; its stdout and exit code.

    The worker exits after the task, so the environment and module globals set here end with it.
    Output on file descriptor 1 (a child process not capturing its output) is kept out of the result.
    """
    os.environ.update({str(k): str(v) for k, v in environment.items()})
    install_finder()
    captured = io.StringIO()
    saved_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    rc = 0
    try:
        sys.stdout.flush()
        os.dup2(devnull, 1)
        with contextlib.redirect_stdout(captured):
            try:
                _loader.run_module(json_params=params, profile=PROFILE, module_fqn=module_fqn,
                                   modlib_path="", extensions={})
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.dup2(saved_fd, 1)
        os.close(saved_fd)
        os.close(devnull)
    return captured.getvalue(), rc
