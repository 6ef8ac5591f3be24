"""One picture of a file tree for "nothing was written" assertions, shared by the hostile-input tests."""
from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path


def snapshot(root, prune: Callable[[str, str], bool] = lambda dirpath, name: False) -> dict[str, tuple]:
    """Every entry under root: type, mode, owner, link count (files), content hash or link target.
    ``prune(dirpath, name)`` true leaves out that directory and everything under it."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [n for n in dirnames if not prune(dirpath, n)]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                detail = "-> " + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                detail = ""
            links = 0 if stat.S_ISDIR(st.st_mode) else st.st_nlink
            out[os.path.relpath(path, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                                                st.st_gid, links, detail)
    return out
