"""``hyhome``: sub-commands, options, exit codes.

    hyhome day0 [-e ...] [--limit ...] [--tags ...] [-i ...]      everything, in order (day0.yml)
    hyhome check                                                   day0 in check mode with diff
    hyhome preflight | validate | verify                           one read-only step
    hyhome rotate NAME [--apply]                                   rotate one secret (playbooks/secrets.yml)

Exit codes: 0 ok; 1 failed; 2 check mode found changes; 3 preflight blocked; 4 bad usage;
130 interrupted (Ctrl-C). See docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from hyhome_cli import __version__
from hyhome_cli.report import DAY0_STEPS, EXIT_CANCELED, EXIT_FAILED, EXIT_USAGE, Run
from hyhome_cli.runner import DEFAULT_KEEP, Cancel, Invocation, UsageError

# sub-command -> (playbook, steps it runs, help)
COMMANDS = {
    "day0": ("day0.yml", DAY0_STEPS, "take this host to a healthy stack: every step, in order"),
    "check": ("day0.yml", DAY0_STEPS, "what day0 would change (check mode + diff); writes nothing"),
    "preflight": ("playbooks/preflight.yml", ("preflight",), "every missing prerequisite; changes nothing"),
    "validate": ("playbooks/validate.yml", ("validate",), "static checks of the compose project"),
    "verify": ("playbooks/verify.yml", ("verify",), "health, hardening and TLS of the running stack"),
    "rotate": ("playbooks/secrets.yml", ("secrets", "compose"), "rotate one secret (history kept)"),
}


class Parser(argparse.ArgumentParser):
    def error(self, message):   # bad usage is exit code 4, not argparse's 2 (which means "changes")
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


def default_root() -> str:
    """The playbook directory: ``$HYHOME_ROOT``, else the repository this package lives in."""
    env = os.environ.get("HYHOME_ROOT")
    if env:
        return env
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-i", "--inventory", action="append", default=[], metavar="INVENTORY",
                        help="inventory file or host list (repeatable); default: the project's ansible.cfg")
    common.add_argument("-e", "--extra-vars", action="append", default=[], metavar="VARS",
                        help="extra variables, as for ansible-playbook (repeatable)")
    common.add_argument("-l", "--limit", help="limit to these hosts (ansible-playbook --limit)")
    common.add_argument("-t", "--tags", help="only these steps/tags (ansible-playbook --tags)")
    common.add_argument("--skip-tags", help="skip these steps/tags")
    common.add_argument("--json", action="store_true", help="print one JSON report on stdout and nothing else")
    common.add_argument("--plain", action="store_true", help="one line per step, no live display")
    common.add_argument("-v", "--verbose", action="count", default=0, help="pass -v to ansible-playbook "
                        "(more detail in the artifacts' stdout)")
    common.add_argument("--root", default=None, help="playbook directory (default: this repository, or $HYHOME_ROOT)")
    common.add_argument("--keep-runs", type=int, default=DEFAULT_KEEP, metavar="N",
                        help=f"runner artifacts to keep under <root>/.hyhome/runner (default {DEFAULT_KEEP})")
    parser = Parser(prog="hyhome", description="Hy-Home Bootstrap: bootstrap and check a Compose stack.",
                    epilog="exit codes: 0 ok, 1 failed, 2 check found changes, 3 preflight blocked, "
                           "4 bad usage, 130 interrupted")
    parser.add_argument("--version", action="version", version=f"hyhome {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name, (_playbook, _steps, text) in COMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        if name == "rotate":
            p.add_argument("name", metavar="NAME", help="secret name, as the compose files declare it")
            p.add_argument("--apply", action="store_true",
                           help="recreate the services that read it right away")
    return parser


def invocation(args) -> tuple[Invocation, tuple[str, ...]]:
    playbook, steps, _ = COMMANDS[args.command]
    root = os.path.abspath(args.root or default_root())
    if not os.path.isfile(os.path.join(root, playbook)):
        raise UsageError(f"{playbook} not found in {root} (use --root or $HYHOME_ROOT)")
    for inv in args.inventory:
        if "," not in inv and not os.path.exists(inv):
            raise UsageError(f"inventory {inv} does not exist")
    for ev in args.extra_vars:
        if ev.startswith("@") and not os.path.isfile(ev[1:]):
            raise UsageError(f"extra-vars file {ev[1:]} does not exist")
    if args.keep_runs < 1:
        raise UsageError("--keep-runs must be at least 1")
    extravars = list(args.extra_vars)
    if args.command == "rotate":
        if not args.name or not all(c.isalnum() or c in "._-" for c in args.name):
            raise UsageError(f"invalid secret name {args.name!r}")
        extravars.append(json.dumps({"secrets_rotate": [args.name], "secrets_apply": bool(args.apply)}))
        if not args.apply:
            steps = ("secrets",)
    inv = Invocation(root=root, playbook=playbook, inventories=[os.path.abspath(i) if os.path.exists(i) else i
                                                                 for i in args.inventory],
                     extravars=extravars, limit=args.limit, tags=args.tags, skip_tags=args.skip_tags,
                     check=args.command == "check", diff=args.command == "check", verbosity=args.verbose)
    if args.tags and steps == DAY0_STEPS:
        tags = {t.strip() for t in args.tags.split(",")}
        if "all" not in tags:
            steps = tuple(s for s in steps if s in tags)
    return inv, steps


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:   # before the run started (the run itself handles Ctrl-C)
        sys.stderr.write("hyhome: interrupted\n")
        return EXIT_CANCELED


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        inv, steps = invocation(args)
    except UsageError as exc:
        sys.stderr.write(f"hyhome {args.command}: {exc}\n")
        return EXIT_USAGE
    from hyhome_cli import render
    from hyhome_cli import runner as hrunner

    run = Run(args.command, inv.playbook, expected_steps=steps, check_mode=inv.check)
    tty = sys.stdout.isatty() and not args.plain and not args.json and os.environ.get("TERM") != "dumb"
    console = None
    if args.json:
        progress = None
    elif tty:
        from rich.console import Console

        console = Console()
        progress = render.RichProgress(run, console)
    else:
        progress = render.PlainProgress(run, sys.stdout)

    def on_event(event: dict) -> None:
        finished = run.feed(event)
        if progress is not None:
            if finished:
                progress.step_done(finished)
            progress.update()

    cancel = Cancel()
    try:
        with cancel:
            if progress is not None:
                with progress:
                    r, artifacts = hrunner.run(inv, args.command, on_event, keep=args.keep_runs, cancel=cancel)
            else:
                r, artifacts = hrunner.run(inv, args.command, on_event, keep=args.keep_runs, cancel=cancel)
    except UsageError as exc:
        sys.stderr.write(f"hyhome {args.command}: {exc}\n")
        return EXIT_USAGE
    except Exception as exc:   # runner could not start the run: one line, no traceback (HYHOME_DEBUG=1 shows it)
        if os.environ.get("HYHOME_DEBUG"):
            raise
        sys.stderr.write(f"hyhome {args.command}: could not run {inv.playbook}: {type(exc).__name__}: {exc}\n")
        return EXIT_FAILED
    canceled = cancel.requested or r.status == "canceled"
    run.finish(canceled=canceled)
    if progress is not None:
        progress.close()
    report = run.report(r.rc, artifacts=artifacts, ca_facts=render.ca_facts)
    failure = report["failure"]
    if failure and failure["step"] is None and not run.errors:
        # ansible-playbook stopped before any event (not installed, bad arguments): its own last words.
        tail = render.output_tail(artifacts)
        if tail:
            failure["message"] = tail
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2, sort_keys=False) + "\n")
        sys.stdout.flush()
    else:
        render.print_summary(report, sys.stdout, console)
    return report["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
