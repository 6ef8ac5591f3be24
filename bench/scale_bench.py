"""Scale of the compose model, validate and preflight: time and peak RSS per number of services.

Generates a compose project with N services of a realistic shape (an ``x-`` anchor merged with
``<<:``, secrets, bind mounts of files and directories, networks, depends_on, healthchecks,
environment with interpolations, ports, memory limits; one service in ten with findings: a
``$VAR`` trap and unset variables, whose compose warnings are simulated) and, in a fresh child process per size,
measures each step of the pure logic, without Docker:

  read     load_raw: read + parse the files (YAML nodes and data), alias budget check
  raw      project_from_raw: the model from the raw files (the fallback when compose fails)
  config   project_from_config: the model from compose's canonical JSON (generated here)
  validate compose_validate.validate (every rule; yamllint excluded, see --yamllint)
  preflight preflight.run_checks against fixed host facts

Prints CPU seconds per step (``time.process_time``: steady on a busy machine; the steps do little
I/O), the child's wall time, and its peak RSS (``resource.getrusage``, ru_maxrss). Asserts
nothing: linear scaling is read from the figures (time/N and RSS roughly constant across sizes).

    python bench/scale_bench.py                 # 1000 and 10000 services
    python bench/scale_bench.py 1000 10000 24000 --yamllint
    python bench/scale_bench.py --profile 10000 # cProfile of one size, top 25 by cumulative time
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = ("read", "raw", "config", "validate", "preflight")


def generate(project_dir: str, n: int) -> dict:
    """Write compose.yaml (+ the files it binds and the secrets) for ``n`` services; return the
    canonical config compose would print for it (long syntax, merged, interpolated)."""
    os.makedirs(os.path.join(project_dir, "secrets"), exist_ok=True)
    os.makedirs(os.path.join(project_dir, "config"), exist_ok=True)
    n_secrets = max(1, n // 10)
    n_networks = max(1, n // 100)
    for s in range(n_secrets):
        with open(os.path.join(project_dir, "secrets", f"s{s}.txt"), "w", encoding="utf-8") as fh:
            fh.write(f"value{s}\n")
    with open(os.path.join(project_dir, "config", "app.conf"), "w", encoding="utf-8") as fh:
        fh.write("listen 8080\n")
    with open(os.path.join(project_dir, ".env"), "w", encoding="utf-8") as fh:
        fh.write("TAG=1.0\nLOG_LEVEL=info\nTZ=UTC\n")
    lines = [
        "name: scale",
        "x-common: &common",
        "  restart: unless-stopped",
        "  security_opt: [\"no-new-privileges:true\"]",
        "  cap_drop: [ALL]",
        "  read_only: true",
        "  mem_limit: 256m",
        "  logging:",
        "    driver: json-file",
        "    options: {max-size: 10m, max-file: \"3\"}",
        "services:",
    ]
    services = {}
    for i in range(n):
        sec = f"s{i % n_secrets}"
        net = f"net{i % n_networks}"
        dep = f"svc{i - 1}" if i else None
        lines += [
            f"  svc{i}:",
            "    <<: *common",
            f"    image: registry.example/app{i % 50}:${{TAG:-latest}}",
            "    user: \"1000:1000\"",
            "    environment:",
            f"      APP_ID: \"{i}\"",
            "      LOG_LEVEL: ${LOG_LEVEL:-info}",
            "      TZ: ${TZ}",
            f"      DB_PASSWORD_FILE: /run/secrets/{sec}",
            f"    secrets: [{sec}]",
            "    volumes:",
            "      - ./config/app.conf:/etc/app/app.conf:ro",
            f"      - ./data/svc{i}:/var/lib/app",
            "      - type: tmpfs",
            "        target: /tmp",
            f"    networks: [{net}]",
            f"    ports: [\"127.0.0.1:{20000 + i % 40000}:8080\"]",
            "    healthcheck:",
            "      test: [\"CMD\", \"wget\", \"-qO-\", \"http://localhost:8080/health\"]",
            "      interval: 30s",
            "      timeout: 5s",
            "      retries: 3",
        ]
        if dep:
            lines += ["    depends_on:", f"      {dep}:", "        condition: service_healthy"]
        if i % 10 == 5:   # one service in ten has findings: a $VAR trap, an unset variable, a missing file
            lines += [f"    command: [\"sh\", \"-c\", \"echo $$HOME $UNSET_{i}\"]",
                      f"    working_dir: ${{WORKDIR_{i}}}"]
        svc = {
            "image": f"registry.example/app{i % 50}:1.0",
            "user": "1000:1000",
            "restart": "unless-stopped",
            "security_opt": ["no-new-privileges:true"],
            "cap_drop": ["ALL"],
            "read_only": True,
            "mem_limit": "268435456",
            "environment": {"APP_ID": str(i), "LOG_LEVEL": "info", "TZ": "UTC",
                            "DB_PASSWORD_FILE": f"/run/secrets/{sec}"},
            "secrets": [{"source": sec, "target": f"/run/secrets/{sec}"}],
            "volumes": [
                {"type": "bind", "source": os.path.join(project_dir, "config", "app.conf"),
                 "target": "/etc/app/app.conf", "read_only": True, "bind": {"create_host_path": True}},
                {"type": "bind", "source": os.path.join(project_dir, "data", f"svc{i}"),
                 "target": "/var/lib/app", "bind": {"create_host_path": True}},
                {"type": "tmpfs", "target": "/tmp"},
            ],
            "networks": {net: None},
            "ports": [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 8080,
                       "published": str(20000 + i % 40000), "protocol": "tcp"}],
            "healthcheck": {"test": ["CMD", "wget", "-qO-", "http://localhost:8080/health"],
                            "interval": "30s", "timeout": "5s", "retries": 3},
        }
        if dep:
            svc["depends_on"] = {dep: {"condition": "service_healthy", "required": True}}
        if i % 10 == 5:
            svc["command"] = ["sh", "-c", "echo $HOME "]
            svc["working_dir"] = ""
        services[f"svc{i}"] = svc
    lines.append("networks:")
    lines += [f"  net{k}: {{}}" for k in range(n_networks)]
    lines.append("secrets:")
    lines += [f"  s{s}:\n    file: ./secrets/s{s}.txt" for s in range(n_secrets)]
    with open(os.path.join(project_dir, "compose.yaml"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return {
        "name": "scale",
        "services": services,
        "networks": {f"net{k}": {"name": f"scale_net{k}"} for k in range(n_networks)},
        "secrets": {f"s{s}": {"name": f"scale_s{s}", "file": os.path.join(project_dir, "secrets", f"s{s}.txt")}
                    for s in range(n_secrets)},
    }


def child(n: int, yamllint: bool) -> dict:
    """Run every step once for ``n`` services in this process; return CPU seconds per step and RSS."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import compose_model, compose_validate
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import preflight as pf

    out: dict = {"n": n}
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as project_dir:
        config = generate(project_dir, n)
        out["file_mb"] = os.path.getsize(os.path.join(project_dir, "compose.yaml")) / 1e6
        t = time.process_time()
        raw = compose_model.load_raw(project_dir)
        out["read"] = time.process_time() - t
        t = time.process_time()
        compose_model.project_from_raw(raw, project_dir, config_error="bench: no docker")
        out["raw"] = time.process_time() - t
        t = time.process_time()
        project = compose_model.project_from_config(config, project_dir, raw)
        project.config_warnings = [f'The "{v}_{i}" variable is not set. Defaulting to a blank string.'
                                   for i in range(5, n, 10) for v in ("UNSET", "WORKDIR")]
        out["config"] = time.process_time() - t
        lint = []
        if yamllint:
            t = time.process_time()
            lint = compose_validate.lint_files(raw.paths, project_dir)
            out["yamllint"] = time.process_time() - t
        t = time.process_time()
        findings = compose_validate.validate(project, lint, raw, compose_validate.offline_identities())
        out["validate"] = time.process_time() - t
        out["findings"] = len(findings)
        facts = pf.HostFacts(docker_version="24.0.7", docker_api_version="1.43", docker_root_dir=project_dir,
                             compose_version="2.26.1", max_map_count=262144, mem_total=24 << 30,
                             mem_available=16 << 30, disks=[pf.Disk("project filesystem", project_dir, 100 << 30)],
                             listeners=[], bindings=[], networks=set(), volumes=set())
        t = time.process_time()
        pf.run_checks(project, facts, pf.Options(env_file=os.path.join(project_dir, ".env")))
        out["preflight"] = time.process_time() - t
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[1000, 10000], help="numbers of services")
    ap.add_argument("--yamllint", action="store_true", help="also time yamllint (pure Python, slow)")
    ap.add_argument("--profile", action="store_true", help="cProfile the first size in this process")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.yamllint)))
        return 0
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(child, args.sizes[0], args.yamllint)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        return 0
    cols = [*STEPS[:3], *(["yamllint"] if args.yamllint else []), *STEPS[3:]]
    print(f"{'services':>9} {'file MB':>8} " + " ".join(f"{c + ' s':>10}" for c in cols)
          + f" {'total s':>8} {'us/service':>11} {'wall s':>7} {'peak RSS MB':>12}")
    for n in args.sizes:
        started = time.perf_counter()
        cmd = [sys.executable, os.path.abspath(__file__), "--child", str(n)] + (["--yamllint"] if args.yamllint else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{n:>9} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
            continue
        wall = time.perf_counter() - started
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        total = sum(r[c] for c in cols)
        print(f"{n:>9} {r['file_mb']:>8.1f} " + " ".join(f"{r[c]:>10.2f}" for c in cols)
              + f" {total:>8.2f} {total / n * 1e6:>11.0f} {wall:>7.1f} {r['rss_mb']:>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
