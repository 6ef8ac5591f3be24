"""Bind-mount directories with the owner the container runs as, and fast, safe drift correction.

Pure core of the ``data_dirs`` module (no AnsibleModule here). Three steps:

1. ``derive_paths(project)`` lists every host path the project bind-mounts (short and long bind
   syntax, local-driver volumes with ``o: bind``) with the services that use it.
2. ``plan(project, options, images)`` decides, for each path, the owner, group and mode rule, and
   refuses dangerous paths before anything is touched. Excluded trees are skipped first; read-only
   binds of paths outside the project (``mounts.classify`` "host") are the host's: reported, never
   touched. Owner per service: an override for the path, else ``identity.IdentityResolver``
   (override, ``user:``, the image's configured user, the built-in table, else root with a warning).
3. ``apply(plan, check_mode, recurse)`` creates what is missing, copies ``*.example`` config files
   into place, and fixes owner/group/mode drift in one ``scandir`` pass that touches only entries
   that differ, never follows symlinks and never crosses into another filesystem.

Hard links: a file with more than one link shares its inode with another name, possibly outside
the project (``ln /etc/shadow data/x``), so changing its owner or mode changes that file too. The
walk skips such files and lists them; a bind-mounted file that is hard-linked is refused while
planning when it would need a change.

Mode rule for an entry: ``new = (current & allowed) | required``. A writable directory is created
with ``mode``; an existing one is never looser than ``mode`` (what its application tightened is
kept). With ``recurse`` the subtree keeps its modes, minus world-write, plus what the container
user needs (``u+rw``/``u+rwx`` for a single owner, ``ug+rw`` and setgid directories when shared,
read for the owner class, group or others of a read-only mount). The top directory already gates
access, so an application writing 0644 files is not drift.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from dataclasses import dataclass, field

from ansible_collections.hyhome.bootstrap.plugins.module_utils import mounts
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import (
    atomic_write,
    check_id,
    ensure_within,
    parse_mode,
    refuse_dangerous,
)

# Owner resolution lives in identity (shared with secrets and tls); re-exported for callers.
from ansible_collections.hyhome.bootstrap.plugins.module_utils.identity import (  # noqa: F401  # pylint: disable=unused-import
    DEFAULT_IMAGE_USERS,
    DockerImages,
    Identity,
    IdentityResolver,
    ImageMissing,
    image_repository,
    override_identity,
    parse_group,
    parse_passwd,
    table_lookup,
)

DEFAULT_OPTIONS = {
    "allowed_roots": None,          # None: the project directory
    "exclude": None,                # None: <project>/secrets (the secrets and tls roles own it)
    "overrides": {},                # {service | path: {owner, group, mode}}
    "image_users": {},              # {repository: "uid[:gid]"} on top of DEFAULT_IMAGE_USERS
    "mode": 0o750,                  # writable data directory, single owner
    "shared_mode": 0o2770,          # writable directory shared by services with different users
    "config_mode": 0o640,           # config files copied from *.example
    "shared_group": None,           # gid for shared directories when the services' gids differ
    "missing_image": "warn",        # "warn" | "fail": image needed for a lookup but not present
    "copy_examples": True,
}

_SAMPLE_LIMIT = 20
_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


# --------------------------------------------------------------------------------------------
# 1. Derivation


@dataclass(frozen=True)
class Use:
    """One service's mount of a host path."""

    service: str
    target: str
    read_only: bool
    via: str            # "bind" or "volume:<key>"
    cls: str = "data"   # mounts.classify: "host" | "config" | "data"


@dataclass
class HostPath:
    """A host path the project bind-mounts, with every service that mounts it."""

    path: str
    kind: str = "dir"               # "dir" | "file"
    uses: list[Use] = field(default_factory=list)


def _volume_device(project, key: str) -> str | None:
    """Host path of a local-driver volume with ``o: bind``, else None."""
    spec = (project.volumes or {}).get(key) or {}
    if spec.get("external"):
        return None
    if (spec.get("driver") or "local") != "local":
        return None
    opts = spec.get("driver_opts") or {}
    o = {part.strip() for part in str(opts.get("o", "")).split(",")}
    if not ({"bind", "rbind"} & o) or not opts.get("device"):
        return None
    return str(opts["device"])


def derive_paths(project) -> tuple[list[HostPath], list[str]]:
    """Every host path bind-mounted by ``project``, sorted, plus warnings.

    Relative paths are resolved against the project directory (``docker compose config`` has
    already made bind sources absolute; Compose 2.26 leaves a relative volume ``device`` as is).
    """
    by_path: dict[str, HostPath] = {}
    warnings: list[str] = []
    for sname in sorted(project.services):
        svc = project.services[sname]
        for m in svc.mounts:
            host = m.host_path
            via = "bind"
            if m.type == "volume":
                if not m.volume:
                    continue
                via = f"volume:{m.volume}"
                if not host:
                    host = _volume_device(project, m.volume)
                if not host:
                    continue
            elif m.type != "bind" or not host:
                continue
            if not os.path.isabs(host):
                warnings.append(
                    f"service {sname}: {via} path {host!r} is relative; resolved against {project.working_dir}, "
                    "but Docker receives it unresolved for a volume device: write it as ${PWD}/... or absolute"
                )
                host = os.path.join(project.working_dir, host)
            host = os.path.normpath(host)
            cls = mounts.classify(project, svc, m if m.host_path == host else dataclasses.replace(m, host_path=host))
            hp = by_path.setdefault(host, HostPath(host))
            hp.uses.append(Use(sname, m.target, bool(m.read_only), via, cls))
    for hp in by_path.values():
        if os.path.isdir(hp.path):
            # An empty directory named like a file is what Docker leaves when a bind-mounted file is missing.
            filelike = mounts.example_for(hp.path) or mounts.looks_like_file(hp.path)
            hp.kind = "file" if filelike and not os.listdir(hp.path) else "dir"
        elif os.path.lexists(hp.path) or mounts.example_for(hp.path) or mounts.looks_like_file(hp.path):
            hp.kind = "file"
    return [by_path[p] for p in sorted(by_path)], warnings


# --------------------------------------------------------------------------------------------
# 3. Plan


@dataclass
class Rule:
    """What the walk enforces: -1 keeps uid/gid; modes per the module docstring."""

    uid: int = -1
    gid: int = -1
    top_mode: int | None = None     # exact mode of the path itself (a path override); else the mask rule
    create_mode: int = 0o750
    top_allowed: int = 0o7777
    top_required: int = 0
    dir_allowed: int = 0o7777
    dir_required: int = 0
    file_allowed: int = 0o7777
    file_required: int = 0


@dataclass
class Item:
    """One host path with its decided owner and rule."""

    path: str
    kind: str
    services: list[str]
    read_only: bool
    identity: Identity
    rule: Rule
    shared: bool = False
    example: str | None = None
    exists: bool = False
    copy_mode: int = 0o640


@dataclass
class Plan:
    items: list[Item] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    shared: list[dict] = field(default_factory=list)
    missing_files: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    host_paths: list[dict] = field(default_factory=list)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _merge_options(options: dict | None) -> dict:
    opts = dict(DEFAULT_OPTIONS)
    opts.update({k: v for k, v in (options or {}).items() if v is not None})
    for key in ("mode", "shared_mode", "config_mode"):
        opts[key] = parse_mode(opts[key], key)
    if opts["missing_image"] not in ("warn", "fail"):
        raise HyHomeError("missing_image must be 'warn' or 'fail'")
    return opts


def plan(project, options: dict | None = None, images=None) -> Plan:
    """Decide owner, group and modes for every bind-mounted path, refusing unsafe paths first.

    Raises HyHomeError listing every refused path; nothing has been changed at that point.
    """
    opts = _merge_options(options)
    project_dir = os.path.normpath(os.path.abspath(project.working_dir))
    roots = [os.path.normpath(os.path.abspath(r)) for r in (opts["allowed_roots"] or [project_dir])]
    excludes = [os.path.normpath(os.path.join(project_dir, str(e))) for e in
                (opts["exclude"] if opts["exclude"] is not None else [os.path.join(project_dir, "secrets")])]
    excluded_why = ("excluded (the secrets and tls roles own this tree)" if opts["exclude"] is None
                    else "excluded by the exclude option")
    path_overrides = {}
    for key, ov in (opts["overrides"] or {}).items():
        if "/" in key:
            p = os.path.normpath(key if os.path.isabs(key) else os.path.join(project_dir, key))
            if ov is not None and not isinstance(ov, dict):
                raise HyHomeError(f"override for path {key}: {ov!r} must be a mapping with owner, group or mode")
            path_overrides[p] = ov or {}
    resolver = IdentityResolver({k: v for k, v in (opts["overrides"] or {}).items() if "/" not in k},
                                opts["image_users"], images, opts["missing_image"])
    out = Plan(excludes=excludes)
    paths, out.warnings = derive_paths(project)
    refusals = []
    path_refused = False
    for hp in paths:
        services = sorted({u.service for u in hp.uses})
        # Exclusions first: an excluded tree is never touched, so it cannot be refused either.
        if any(_within(hp.path, e) for e in excludes):
            out.skipped.append({"path": hp.path, "services": services, "reason": excluded_why})
            continue
        # Read-only binds of paths outside the project are the host's (cAdvisor's /:/rootfs:ro, /sys,
        # /var/lib/docker): left alone and reported. A writable bind of a system path is still refused.
        if all(u.cls == "host" for u in hp.uses) and not any(_within(hp.path, r) for r in roots):
            out.host_paths.append({"path": hp.path, "services": services,
                                   "targets": sorted({u.target for u in hp.uses}),
                                   "reason": "host path, not managed"})
            continue
        try:
            refuse_dangerous(hp.path, "bind-mount path")
            for root in roots:
                refuse_dangerous(root, "allowed root")
            inside = [r for r in roots if _within(hp.path, r)]
            if not inside:
                raise HyHomeError(f"refusing bind-mount path {hp.path}: it is outside the allowed roots "
                                  f"({', '.join(roots)}); add its parent to allowed_roots")
            ensure_within(inside[0], hp.path, "bind-mount path")
        except HyHomeError as exc:
            refusals.append(f"{exc.msg} (services: {', '.join(services)})")
            path_refused = True
            continue
        if hp.path in roots:
            out.skipped.append({"path": hp.path, "services": services,
                                "reason": "is an allowed root itself; its owner is never changed"})
            continue
        try:
            item = _plan_item(project, hp, services, opts, resolver, path_overrides, out)
        except HyHomeError as exc:
            raise HyHomeError(f"nothing changed: {exc.msg}") from None
        if item:
            _check_ids(item)
            why = _hardlink_refusal(item)
            if why:
                refusals.append(f"{why} (services: {', '.join(services)})")
                continue
            out.items.append(item)
    if refusals:
        hint = (". A host path the service only reads is left alone when mounted read-only (:ro); "
                "a tree the project must not manage can be listed in exclude") if path_refused else ""
        raise HyHomeError("nothing changed; refused: " + "; ".join(refusals) + hint)
    out.warnings.extend(resolver.warnings)
    return out


def _check_ids(item: Item) -> None:
    """Every owner the walk will set is a real id (-1 keeps): checked here, before anything is created."""
    for value, what in ((item.rule.uid, "owner"), (item.rule.gid, "group"),
                        (item.identity.uid, "owner"), (item.identity.gid, "group")):
        if value != -1:
            check_id(value, f"nothing changed: {what} of {item.path}")


def _plan_item(project, hp: HostPath, services, opts, resolver, path_overrides, out: Plan) -> Item | None:
    writable = any(not u.read_only for u in hp.uses)
    real = os.path.realpath(hp.path)
    exists = os.path.lexists(real)
    example = None
    if hp.kind == "file" and not exists:
        example = mounts.example_for(hp.path)
        if not example or not opts["copy_examples"]:
            out.missing_files.append({"path": hp.path, "services": services,
                                      "hint": "create it (Docker would create an empty directory in its place)"})
            return None
    elif hp.kind == "file" and os.path.isdir(real):
        example = mounts.example_for(hp.path)
        with os.scandir(real) as it:
            empty = next(it, None) is None
        if not (example and empty and opts["copy_examples"]):
            out.missing_files.append({"path": hp.path, "services": services,
                                      "hint": "is a directory where a file is expected (Docker creates one "
                                              "when the file is missing); remove it and create the file"})
            return None
    # Identities of the services that mount this path.
    ov = path_overrides.get(hp.path)
    if ov and ov.get("owner") not in (None, ""):
        idents = {s: override_identity(ov, f"override for path {hp.path}") for s in services}
    else:
        idents = {s: resolver.service(project.services[s]) for s in services}
    distinct = sorted({(i.uid, i.gid) for i in idents.values()})
    shared = len({uid for uid, _ in distinct}) > 1
    first_writer = next((u.service for u in hp.uses if not u.read_only), hp.uses[0].service)
    ident = idents[first_writer]
    gid = ident.gid
    if shared:
        gids = {g for _, g in distinct}
        if len(gids) == 1:
            gid = gids.pop()
        elif opts["shared_group"] not in (None, ""):
            gid = override_identity({"owner": 0, "group": opts["shared_group"]}, "shared_group").gid
        report = {"path": hp.path, "owner": ident.uid, "group": gid,
                  "users": {s: f"{i.uid}:{i.gid}" for s, i in sorted(idents.items())}}
        needs = sorted(s for s, i in idents.items()
                       if i.gid != gid and i.uid != ident.uid and str(gid) not in project.services[s].group_add)
        if needs:
            report["hint"] = (f"add group_add: ['{gid}'] to {', '.join(needs)} so they can use the shared group "
                              f"{gid}, or set shared_group / an override")
        out.shared.append(report)
        ident = Identity(ident.uid, gid, ident.source, ident.detail)
    top_mode = parse_mode((ov or {}).get("mode"), f"override mode for {hp.path}")
    rule = _rule(hp.kind, writable, shared, ident, top_mode, opts, real if exists else None)
    if ov and ov.get("group") not in (None, "") and not (ov.get("owner") not in (None, "")):
        rule.gid = override_identity({"owner": 0, "group": ov["group"]}, f"override for path {hp.path}").gid
    copy_mode = top_mode if top_mode is not None else opts["config_mode"] | (0o660 if shared and writable else 0)
    return Item(hp.path, hp.kind, services, not writable, ident, rule, shared, example, exists, copy_mode)


def _rule(kind, writable, shared, ident: Identity, top_mode, opts, existing) -> Rule:
    if kind == "file":
        if writable:
            return Rule(ident.uid, ident.gid, top_mode, file_required=0o660 if shared else 0o600)
        return _readonly_rule(ident, existing, top_mode)
    if writable:
        # Created with the mode; an existing directory is never looser than it and keeps what its
        # application tightened (PostgreSQL's 0700 data directory stays 0700).
        mode = top_mode if top_mode is not None else (opts["shared_mode"] if shared else opts["mode"])
        need = 0o770 if shared else 0o700
        return Rule(ident.uid, ident.gid, top_mode, mode,
                    top_allowed=mode | need, top_required=need | (mode & 0o2000),
                    dir_allowed=0o7775, dir_required=need | (mode & 0o2000),
                    file_allowed=0o7775, file_required=need & 0o666)
    rule = _readonly_rule(ident, existing, top_mode)
    rule.create_mode = top_mode if top_mode is not None else opts["mode"]
    return rule


def _readonly_rule(ident: Identity, existing, top_mode) -> Rule:
    """Read-only mount: the owner is kept; the container user needs read access only.

    It gets it through the owner class when it owns the path, else the group class when the group
    is already its gid, else the other class when that already grants read; otherwise the group
    becomes its gid. A missing path is created owned by the container user.
    """
    if not existing:
        uid, gid, dbits, fbits = ident.uid, ident.gid, 0o500, 0o400
    else:
        st = os.lstat(existing)
        need = 0o005 if stat.S_ISDIR(st.st_mode) else 0o004
        if st.st_uid == ident.uid:
            uid, gid, dbits, fbits = -1, -1, 0o500, 0o400
        elif st.st_gid == ident.gid:
            uid, gid, dbits, fbits = -1, -1, 0o050, 0o040
        elif st.st_mode & need == need:
            uid, gid, dbits, fbits = -1, -1, 0o005, 0o004
        else:
            uid, gid, dbits, fbits = -1, ident.gid, 0o050, 0o040
    return Rule(uid, gid, top_mode, top_required=dbits, dir_required=dbits, file_required=fbits)


# --------------------------------------------------------------------------------------------
# 4. Walk and apply


@dataclass
class WalkStats:
    checked: int = 0
    fixed: int = 0
    owner_fixed: int = 0
    mode_fixed: int = 0
    skipped_mounts: int = 0
    skipped_devices: int = 0
    raced: int = 0
    samples: list = field(default_factory=list)
    hardlinks: list = field(default_factory=list)     # paths skipped: their inode has other names
    skipped_hardlinks: int = 0


def _want_mode(mode: int, allowed: int, required: int) -> int:
    return ((mode & allowed) | required) & 0o7777


def _fix_fd(fd, st, rule: Rule, want_mode, check: bool, stats: WalkStats, path: str) -> bool:
    """Fix owner/mode of an open directory or file; True when something differed."""
    uid = rule.uid if rule.uid != -1 and st.st_uid != rule.uid else -1
    gid = rule.gid if rule.gid != -1 and st.st_gid != rule.gid else -1
    cur = stat.S_IMODE(st.st_mode)
    mode_diff = want_mode is not None and want_mode != cur
    if uid == -1 and gid == -1 and not mode_diff:
        return False
    if not check:
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        if mode_diff or ((uid != -1 or gid != -1) and cur & 0o6000):
            os.fchmod(fd, want_mode if want_mode is not None else cur)   # chown clears setuid/setgid
    _count(stats, path, st, uid, gid, want_mode if mode_diff else None)
    return True


def _skip_hardlink(stats: WalkStats, path: str) -> None:
    stats.skipped_hardlinks += 1
    if len(stats.hardlinks) < _SAMPLE_LIMIT:
        stats.hardlinks.append(path)


def _count(stats: WalkStats, path, st, uid, gid, mode) -> None:
    stats.fixed += 1
    if uid != -1 or gid != -1:
        stats.owner_fixed += 1
    if mode is not None:
        stats.mode_fixed += 1
    if len(stats.samples) < _SAMPLE_LIMIT:
        stats.samples.append({
            "path": path,
            "before": f"{st.st_uid}:{st.st_gid} {stat.S_IMODE(st.st_mode):04o}",
            "after": f"{st.st_uid if uid == -1 else uid}:{st.st_gid if gid == -1 else gid} "
                     f"{stat.S_IMODE(st.st_mode) if mode is None else mode:04o}",
        })


def walk_fix(top: str, rule: Rule, recurse: bool = True, check: bool = False,
             prune: frozenset[str] | set[str] = frozenset()) -> WalkStats:
    """Make ``top`` (a directory) and, with ``recurse``, its subtree match ``rule``; counts in WalkStats.

    One pass: ``scandir`` on directory file descriptors (entries are ``lstat``-ed relative to their
    directory, no path strings per file), ``lchown``/``fchown`` only where the owner differs, chmod
    through an ``O_NOFOLLOW`` descriptor only where the mode differs. Never follows a symlink, never
    descends into another filesystem (``st_dev``) or into a path in ``prune``, skips device nodes.
    Subdirectories are opened with ``openat`` relative to their parent and checked to be the entry
    that was ``lstat``-ed, so a directory swapped for a symlink mid-walk is not followed.
    """
    stats = WalkStats()
    if os.path.islink(top):
        raise HyHomeError(f"refusing {top}: it is a symlink")
    try:
        fd = os.open(top, _DIR_OPEN)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise HyHomeError(f"refusing {top}: it is a symlink") from None
        if exc.errno == errno.ENOTDIR:
            raise HyHomeError(f"{top} is not a directory") from None
        raise HyHomeError(f"cannot open {top}: {exc.strerror}") from None
    st = os.fstat(fd)
    stats.checked += 1
    top_mode = rule.top_mode
    if top_mode is None:
        top_mode = _want_mode(st.st_mode, rule.top_allowed, rule.top_required)
    _fix_fd(fd, st, rule, top_mode, check, stats, top)
    if not recurse:
        os.close(fd)
        return stats
    dev = st.st_dev
    uid, gid = rule.uid, rule.gid
    check_uid, check_gid = uid != -1, gid != -1
    dallow, dreq, fallow, freq = rule.dir_allowed, rule.dir_required, rule.file_allowed, rule.file_required
    lchown = os.chown
    s_ifmt, s_ifdir, s_ifreg, s_iflnk = 0o170000, stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK
    stack = [(fd, top, _scan(fd, top, stats, dev, uid, gid, check_uid, check_gid, fallow, freq, check, lchown,
                             s_ifmt, s_ifdir, s_ifreg, s_iflnk))]
    try:
        while stack:
            dfd, dpath, subdirs = stack[-1]
            if not subdirs:
                os.close(dfd)
                stack.pop()
                continue
            name, est = subdirs.pop()
            cpath = dpath + "/" + name
            if est.st_dev != dev:
                stats.skipped_mounts += 1
                continue
            if cpath in prune:
                continue
            try:
                cfd = os.open(name, _DIR_OPEN, dir_fd=dfd)
            except OSError:
                stats.raced += 1
                continue
            cst = os.fstat(cfd)
            if cst.st_ino != est.st_ino or cst.st_dev != est.st_dev:
                os.close(cfd)
                stats.raced += 1
                continue
            try:
                _fix_fd(cfd, cst, rule, _want_mode(cst.st_mode, dallow, dreq), check, stats, cpath)
                children = _scan(cfd, cpath, stats, dev, uid, gid, check_uid, check_gid, fallow, freq, check,
                                 lchown, s_ifmt, s_ifdir, s_ifreg, s_iflnk)
            except BaseException:
                os.close(cfd)
                raise
            stack.append((cfd, cpath, children))
    finally:
        for dfd, _, _ in stack:
            os.close(dfd)
    return stats


def _scan(dfd, dpath, stats, dev, uid, gid, check_uid, check_gid, fallow, freq, check, lchown,
          s_ifmt, s_ifdir, s_ifreg, s_iflnk) -> list:
    """Fix every non-directory entry of one open directory; return its subdirectories (name, lstat)."""
    subdirs = []
    checked = 0
    with os.scandir(dfd) as it:
        for entry in it:
            st = entry.stat(follow_symlinks=False)
            m = st.st_mode
            fmt = m & s_ifmt
            if fmt == s_ifdir:
                subdirs.append((entry.name, st))
                continue
            checked += 1
            bad_uid = check_uid and st.st_uid != uid
            bad_gid = check_gid and st.st_gid != gid
            if fmt == s_ifreg:
                want = ((m & fallow) | freq) & 0o7777
                if want == m & 0o7777 and not bad_uid and not bad_gid:
                    continue
                _fix_file(dfd, entry.name, st, uid if bad_uid else -1, gid if bad_gid else -1,
                          want if want != m & 0o7777 else None, check, stats, dpath)
            elif bad_uid or bad_gid:
                if fmt != s_iflnk and fmt not in (stat.S_IFIFO, stat.S_IFSOCK):
                    stats.skipped_devices += 1
                    continue
                if st.st_nlink > 1:
                    _skip_hardlink(stats, dpath + "/" + entry.name)
                    continue
                if not check:
                    lchown(entry.name, uid if bad_uid else -1, gid if bad_gid else -1, dir_fd=dfd,
                           follow_symlinks=False)
                _count(stats, dpath + "/" + entry.name, st, uid if bad_uid else -1, gid if bad_gid else -1, None)
    stats.checked += checked + len(subdirs)
    return subdirs


def _fix_file(dfd, name, st, uid, gid, mode, check, stats, dpath) -> None:
    """Owner and mode through an O_NOFOLLOW descriptor verified to be the lstat-ed entry, with a
    single link (a hard-linked file is skipped and listed, see the module docstring)."""
    path = dpath + "/" + name
    if st.st_nlink > 1:
        _skip_hardlink(stats, path)
        return
    if check:
        _count(stats, path, st, uid, gid, mode)
        return
    try:
        ffd = os.open(name, _FILE_OPEN, dir_fd=dfd)
    except OSError:
        stats.raced += 1
        return
    try:
        fst = os.fstat(ffd)
        if fst.st_ino != st.st_ino or fst.st_dev != st.st_dev:
            stats.raced += 1
            return
        if fst.st_nlink > 1:                    # linked since the scan
            _skip_hardlink(stats, path)
            return
        if uid != -1 or gid != -1:
            os.fchown(ffd, uid, gid)
            if st.st_mode & 0o6000 and mode is None:
                mode = stat.S_IMODE(st.st_mode)     # chown cleared setuid/setgid: put the bits back
        if mode is not None:
            os.fchmod(ffd, mode)
    finally:
        os.close(ffd)
    _count(stats, path, st, uid, gid, mode)


def _describe(st) -> dict:
    return {"owner": st.st_uid, "group": st.st_gid, "mode": f"{stat.S_IMODE(st.st_mode):04o}"}


def _makedirs(path: str, rule: Rule, check: bool) -> list[str]:
    """Create ``path`` and missing parents (parents root-owned 0755); return what was (or would be) created."""
    created = []
    p = path
    while not os.path.lexists(p):
        created.append(p)
        p = os.path.dirname(p)
    if check:
        return list(reversed(created))
    for d in reversed(created):
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            continue
    fd = os.open(path, _DIR_OPEN)       # the directory just made, never a symlink swapped in
    try:
        os.fchown(fd, rule.uid, rule.gid)
        os.fchmod(fd, rule.create_mode)
    finally:
        os.close(fd)
    return list(reversed(created))


def apply(p: Plan, check: bool = False, recurse: bool = False) -> dict:
    """Create, copy and fix per the plan; returns the module result (``changed``, ``dirs``, ...)."""
    results = []
    copied = []
    changed = False
    totals = {"checked": 0, "fixed": 0}
    diff_before, diff_after = [], []
    prune = frozenset([os.path.realpath(i.path) for i in p.items if i.kind == "dir"]
                      + [os.path.realpath(e) for e in p.excludes])
    for item in p.items:
        real = os.path.realpath(item.path)
        entry = {"path": item.path, "kind": item.kind, "services": item.services, "read_only": item.read_only,
                 "owner": item.rule.uid if item.rule.uid != -1 else None,
                 "group": item.rule.gid if item.rule.gid != -1 else None,
                 "owner_source": item.identity.source, "owner_detail": item.identity.detail,
                 "shared": item.shared}
        if item.kind == "file":
            entry.update(_apply_file(item, real, check))
            if entry["state"] == "copied":
                copied.append({"path": item.path, "from": item.example, "services": item.services})
                diff_before.append(f"{item.path}: absent")
                diff_after.append(f"{item.path}: {entry['owner']}:{entry['group']} {entry['mode']} "
                                  f"(copied from {os.path.basename(item.example)})")
            elif entry["state"] == "fixed":
                b, a = entry["samples"][0]["before"], entry["samples"][0]["after"]
                diff_before.append(f"{item.path}: {b}")
                diff_after.append(f"{item.path}: {a}")
        elif not os.path.lexists(real):
            created = _makedirs(real, item.rule, check)
            entry.update(state="created", created=created, checked=0, fixed=0)
            diff_before.append(f"{item.path}: absent")
            diff_after.append(f"{item.path}: {item.rule.uid}:{item.rule.gid} {item.rule.create_mode:04o}")
        else:
            before = os.lstat(real)
            stats = walk_fix(real, item.rule, recurse=recurse, check=check, prune=prune - {real})
            entry.update(state="fixed" if stats.fixed else "ok", checked=stats.checked, fixed=stats.fixed,
                         owner_fixed=stats.owner_fixed, mode_fixed=stats.mode_fixed,
                         skipped_mounts=stats.skipped_mounts, skipped_devices=stats.skipped_devices,
                         raced=stats.raced)
            if stats.skipped_hardlinks:
                entry.update(skipped_hardlinks=stats.skipped_hardlinks, hardlinks=stats.hardlinks)
            totals["checked"] += stats.checked
            totals["fixed"] += stats.fixed
            if stats.fixed:
                b = _describe(before)
                diff_before.append(f"{item.path}: {b['owner']}:{b['group']} {b['mode']}")
                diff_after.append(f"{item.path}: {_rule_text(item.rule, before.st_mode, before)}"
                                  + (f" ({stats.fixed} of {stats.checked} entries fixed)" if recurse else ""))
                entry["samples"] = stats.samples
        if entry["state"] != "ok":
            changed = True
        results.append(entry)
    return {
        "changed": changed,
        "paths": results,
        "copied": copied,
        "shared": p.shared,
        "skipped_paths": p.skipped,
        "host_paths": p.host_paths,
        "missing_files": p.missing_files,
        "notes": p.warnings,
        "totals": totals,
        "diff": {"before": "\n".join(diff_before) + ("\n" if diff_before else ""),
                 "after": "\n".join(diff_after) + ("\n" if diff_after else "")},
    }


def _rule_text(rule: Rule, cur_mode: int, st=None) -> str:
    uid = rule.uid if rule.uid != -1 else (st.st_uid if st else 0)
    gid = rule.gid if rule.gid != -1 else (st.st_gid if st else 0)
    mode = rule.top_mode if rule.top_mode is not None else _want_mode(cur_mode, rule.top_allowed, rule.top_required)
    return f"{uid}:{gid} {mode:04o}"


def _apply_file(item: Item, real: str, check: bool) -> dict:
    rule = item.rule
    if not os.path.lexists(real) or os.path.isdir(real):
        # Copy the example into place; an empty directory Docker left there is removed first. A
        # read-only file keeps the example's owner (whoever edits it) and is readable by the group.
        src_st = os.stat(item.example)
        uid = src_st.st_uid if item.read_only else item.identity.uid
        gid = item.identity.gid
        mode = item.copy_mode
        if not check:
            with open(item.example, "rb") as fh:
                data = fh.read()
            if os.path.isdir(real):
                os.rmdir(real)      # only succeeds on an empty directory
            atomic_write(real, data, mode=mode, uid=uid, gid=gid)
        return {"state": "copied", "from": item.example, "owner": uid, "group": gid, "mode": f"{mode:04o}"}
    st = os.lstat(real)
    if stat.S_ISLNK(st.st_mode):
        return {"state": "ok", "note": "symlink: left as is"}
    if not stat.S_ISREG(st.st_mode):
        return {"state": "ok", "note": "not a regular file: left as is"}
    uid, gid, want = _file_changes(rule, st)
    stats = WalkStats()
    dfd = os.open(os.path.dirname(real), _DIR_OPEN)
    try:
        if uid != -1 or gid != -1 or want is not None:
            _fix_file(dfd, os.path.basename(real), st, uid, gid, want, check, stats, os.path.dirname(real))
    finally:
        os.close(dfd)
    out = {"state": "fixed" if stats.fixed else "ok", "checked": 1, "fixed": stats.fixed,
           "before": _describe(st), "samples": stats.samples}
    if stats.skipped_hardlinks:     # hard-linked after planning refused it
        out.update(skipped_hardlinks=stats.skipped_hardlinks, hardlinks=stats.hardlinks)
    return out


def _file_changes(rule: Rule, st) -> tuple[int, int, int | None]:
    """(uid, gid, mode) a bind-mounted file needs: -1 / None where it already matches."""
    want = rule.top_mode if rule.top_mode is not None else _want_mode(st.st_mode, rule.file_allowed, rule.file_required)
    return (rule.uid if rule.uid != -1 and st.st_uid != rule.uid else -1,
            rule.gid if rule.gid != -1 and st.st_gid != rule.gid else -1,
            want if want != stat.S_IMODE(st.st_mode) else None)


def _hardlink_refusal(item: Item) -> str | None:
    """Why a bind-mounted file cannot be managed: it is hard-linked and would need a change."""
    if item.kind != "file":
        return None
    try:
        st = os.lstat(os.path.realpath(item.path))
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_nlink < 2 or _file_changes(item.rule, st) == (-1, -1, None):
        return None
    return (f"refusing bind-mounted file {item.path}: it has {st.st_nlink} hard links, so changing its owner "
            "or mode would change the other names of the same file too (possibly outside the project); "
            "replace it with a copy, or set a path override with its current owner, group and mode")
