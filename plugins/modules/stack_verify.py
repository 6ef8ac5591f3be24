#!/usr/bin/python
"""Ansible module: read-only checks of a running Compose stack."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: stack_verify
short_description: Verify a running Compose stack (health, security baseline, TLS, memory)
version_added: "0.1.0"
description:
  - Read-only checks of a running Compose project, after bring-up. It never changes anything and
    always returns C(changed=false).
  - C(health) - every service ready. Long-running services healthy (running when they have no
    healthcheck), one-shot init services exited 0. Waits up to O(settle_timeout) for services still
    starting.
  - C(security) - on every container, from C(docker inspect). SecurityOpt has no-new-privileges, CapDrop
    has ALL, Config.User is not root, no host pid/network/ipc namespace, not privileged, a memory limit.
    Per-service accepted exceptions come from C(x-hyhome.exceptions) in the compose files (rule id to
    written reason, the ids of the validate role). They are reported with their reason, not silenced.
  - C(tls) - at each endpoint, trusting only the local CA (O(tls_ca_file)). The chain and the host name
    verify, and TLS 1.0 and 1.1 are refused (reported as untestable when the local OpenSSL cannot offer them).
  - C(memory) - sum of the memory limits and of the current usage of running containers against host
    memory (the engine's C(MemTotal)). Usage above O(memory_ceiling_percent) fails.
author: Hy-Home Bootstrap maintainers (@hyhome)
requirements:
  - the Python C(docker) SDK on the managed host
  - Docker Engine with the Compose v2 CLI plugin (to load the project model)
attributes:
  check_mode:
    support: full
    description:
      - The checks are read-only; check mode runs them all.
      - When the stack is not running (or no engine is reachable) in check mode, the module warns instead
        of failing, because the bring-up before it was only simulated.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
  idempotent:
    support: full
    description: Never changes anything.
extends_documentation_fragment:
  - hyhome.bootstrap.project
options:
  project_name:
    description: Compose project name. Default is the name Compose derives.
    type: str
  checks:
    description: Which checks to run.
    type: list
    elements: str
    choices: [health, security, tls, memory]
    default: [health, security, tls, memory]
  settle_timeout:
    description: Seconds to wait for services still starting before judging health (0 to judge at once).
    type: int
    default: 60
  tls_endpoints:
    description:
      - TLS endpoints to probe. Each has C(host), C(port) and C(server_name) (the SNI and the name the
        certificate must match).
      - Default is one endpoint per O(tls_server_names) on O(tls_host) and O(tls_port).
    type: list
    elements: dict
    default: []
  tls_host:
    description: Address of the gateway.
    type: str
    default: 127.0.0.1
  tls_port:
    description: TLS port of the gateway.
    type: int
    default: 443
  tls_server_names:
    description: Host names the gateway serves.
    type: list
    elements: str
    default: [localhost]
  tls_ca_file:
    description: The local CA certificate, the only trust anchor. Default is C(<project_dir>/secrets/certs/rootCA.pem).
    type: path
  tls_timeout:
    description: Seconds per TLS connection attempt.
    type: int
    default: 5
  memory_ceiling_percent:
    description: Ceiling of the containers' total current memory use, in percent of host memory.
    type: float
    default: 20
  fail_on:
    description: Fail on error findings (V(error)), also on warnings (V(warning)), or never (V(never)).
    type: str
    choices: [error, warning, never]
    default: error
"""

EXAMPLES = r"""
- name: Verify the running stack
  hyhome.bootstrap.stack_verify:
    project_dir: /srv/hyhome
    tls_port: 443
    tls_server_names: [hyhome.localhost, api.hyhome.localhost]

- name: Security baseline only, report without failing
  hyhome.bootstrap.stack_verify:
    project_dir: /srv/hyhome
    checks: [security]
    fail_on: never
  register: audit
"""

RETURN = r"""
findings:
  description:
    - Every finding, in the vocabulary preflight and validate share (severity C(error), C(warning) or C(info);
      rule; message; service; subject; file; line; hint; accepted; fixed_by).
    - The rule says which check found it (C(health), C(security-*), C(tls), C(memory-ceiling)); the subject is the
      container. C(accepted) holds the written reason of an C(x-hyhome.exceptions) entry, else null.
  returned: always
  type: list
  elements: dict
summary:
  description: Counts per severity, not counting accepted findings, and the number of accepted ones.
  returned: always
  type: dict
  sample: {error: 0, warning: 1, info: 14, accepted: 2}
table:
  description: The findings as a human table, errors first.
  returned: always
  type: str
memory:
  description: Host total, limit and usage sums (bytes), percentages, per-container figures.
  returned: when the memory check ran
  type: dict
tls:
  description: Per endpoint, the probe result (verified, negotiated version, cipher, refused legacy versions).
  returned: when the tls check ran
  type: list
  elements: dict
project_context:
  description:
    - Whether this call reused the run's project context (V(hit)) or ran C(docker compose config) (V(miss)),
      and a short form of the context key. Counting V(miss) over a run counts the computations.
  returned: when the project was read
  type: dict
  sample: {cache: hit, key: 3f2a9c01b7de}
"""

import os  # noqa: E402
import shutil  # noqa: E402
from dataclasses import asdict  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the documentation, as Ansible expects
from ansible_collections.hyhome.bootstrap.plugins.module_utils import compose_up as cu  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils import stack_verify as sv  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.findings import summarize  # noqa: E402
from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_options import (  # noqa: E402
    context_result,
    load_checked,
    project_argspec,
)


def run(p: dict, check_mode: bool = False) -> dict:
    if not shutil.which(p["docker_cli"]):
        raise HyHomeError(f"{p['docker_cli']} is not installed: there is no running stack to verify",
                          not_running=True, project=p["project_name"] or "")
    project = load_checked(p, check_mode)
    if p["project_name"]:
        project.name = p["project_name"]
    client = sv.engine_client(project.name)

    checks = set(p["checks"])
    result: dict = {"changed": False, "project": project.name, "project_context": context_result(project)}

    def fetch():
        return cu.by_service(sv.collect(client, project.name, want_stats=False)[0])

    first = [fetch()]
    if not first[0]:
        raise HyHomeError(f"no containers of compose project {project.name}: is the stack up "
                          f"(and is project_name right)?", not_running=True, project=project.name)
    if "health" in checks and p["settle_timeout"] > 0:
        # The snapshot just taken is the first poll (one engine round trip less per run).
        sv.wait_settled(project, lambda: first.pop() if first else fetch(), p["settle_timeout"])
    inspects, stats, host_total = sv.collect(client, project.name, want_stats="memory" in checks)
    findings: list[sv.Finding] = []
    if "health" in checks:
        findings += sv.check_health(project, cu.by_service(inspects))
    if "security" in checks:
        security: list[sv.Finding] = []
        for attrs in inspects:
            security += sv.check_security(attrs)
        findings += [*security, sv.security_summary(inspects, security)]
    if "memory" in checks:
        report, found = sv.check_memory(inspects, stats, host_total, p["memory_ceiling_percent"])
        findings += found
        result["memory"] = asdict(report) | {"usage_percent": round(report.usage_percent, 2),
                                             "limit_percent": round(report.limit_percent, 2)}
    if "tls" in checks:
        ca = p["tls_ca_file"] or os.path.join(project.working_dir, "secrets", "certs", "rootCA.pem")
        endpoints = p["tls_endpoints"] or [{"host": p["tls_host"], "port": p["tls_port"], "server_name": n}
                                           for n in p["tls_server_names"]]
        probes = []
        for ep in endpoints:
            host = str(ep.get("host") or p["tls_host"])
            port = int(ep.get("port") or p["tls_port"])
            name = str(ep.get("server_name") or host)
            probes.append(sv.probe_tls(host, port, name, ca, timeout=float(p["tls_timeout"])))
        findings += sv.check_tls(probes)
        result["tls"] = [asdict(x) for x in probes]
    findings = sv.sort_findings(sv.apply_exceptions(findings, sv.declared_exceptions(project)))
    result["findings"] = [f.as_dict(project.working_dir) for f in findings]
    result["summary"] = summarize(findings)
    result["table"] = sv.render_table(findings)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **project_argspec(),
            project_name=dict(type="str"),
            checks=dict(type="list", elements="str", choices=list(sv.CHECKS), default=list(sv.CHECKS)),
            settle_timeout=dict(type="int", default=60),
            tls_endpoints=dict(type="list", elements="dict", default=[]),
            tls_host=dict(type="str", default="127.0.0.1"),
            tls_port=dict(type="int", default=443),
            tls_server_names=dict(type="list", elements="str", default=["localhost"]),
            tls_ca_file=dict(type="path"),
            tls_timeout=dict(type="int", default=5),
            memory_ceiling_percent=dict(type="float", default=20.0),
            fail_on=dict(type="str", choices=["error", "warning", "never"], default="error"),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module.params, module.check_mode)
    except HyHomeError as e:
        if module.check_mode and e.details.get("not_running"):
            # --check on a host where the stack is not up yet: the bring-up was only simulated.
            module.warn(f"{e.msg}; nothing to verify in check mode")
            module.exit_json(changed=False, project=e.details.get("project"), findings=[], table="",
                             summary=summarize([]))
        module.fail_json(msg=e.msg)
    s = result["summary"]
    fail_on = module.params["fail_on"]
    if (fail_on in ("error", "warning") and s["error"]) or (fail_on == "warning" and s["warning"]):
        blocking = [f for f in result["findings"] if not f["accepted"] and
                    (f["severity"] == "error" or (fail_on == "warning" and f["severity"] == "warning"))]
        lines = [f"{f['rule']} {f['service'] or '-'}: {f['message']}" for f in blocking]
        module.fail_json(msg=f"stack verification failed: {s['error']} error(s), {s['warning']} warning(s)\n"
                         + "\n".join(lines), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
