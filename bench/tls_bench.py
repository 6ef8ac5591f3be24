#!/usr/bin/env python3
"""CA + leaf creation: hyhome's tls core vs the mkcert binary, same names, side by side.

    python bench/tls_bench.py [--runs 15]

For RSA (CA RSA-3072 + leaf RSA-2048, mkcert's defaults) and ECDSA (P-256 + P-256, mkcert -ecdsa):

- "CA + leaf": a fresh CA and one leaf, files written. mkcert runs with an empty CAROOT each time.
- "leaf only": one more leaf from an existing CA.

Ours is measured two ways. "in-process" is what the Ansible module's core does. "new process" adds a
Python interpreter start and imports; compare it with mkcert, which is always a new process. The
medians are printed with min/max; RSA key generation has a wide spread (prime search), so look at the
medians. Targets: no slower than mkcert for RSA; ECDSA under 0.2 s. Needs mkcert on PATH
(scripts/lib/mkcert.sh).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["home.arpa", "*.home.arpa", "localhost", "127.0.0.1", "::1", "192.168.1.10"]

OURS_SNIPPET = """
import sys, os
from ansible_collections.hyhome.bootstrap.plugins.module_utils import tls
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import atomic_write
kt, out = sys.argv[1], sys.argv[2]
names = sys.argv[3:]
ca_key = tls.generate_key(kt, tls.CA_RSA_BITS)
ca = tls.build_ca(tls.CAProfile(key_type=kt), ca_key)
key = tls.generate_key(kt, tls.LEAF_RSA_BITS)
leaf = tls.issue_leaf(tls.LeafProfile.from_names(names, key_type=kt), key, ca, ca_key)
atomic_write(os.path.join(out, "rootCA-key.pem"), tls.key_to_pem(ca_key), 0o400)
atomic_write(os.path.join(out, "rootCA.pem"), tls.cert_to_pem(ca), 0o644)
atomic_write(os.path.join(out, "key.pem"), tls.key_to_pem(key), 0o600)
atomic_write(os.path.join(out, "cert.pem"), tls.cert_to_pem(leaf), 0o644)
"""


def ours_ca_and_leaf(tls, atomic_write, kt, out):
    ca_key = tls.generate_key(kt, tls.CA_RSA_BITS)
    ca = tls.build_ca(tls.CAProfile(key_type=kt), ca_key)
    key = tls.generate_key(kt, tls.LEAF_RSA_BITS)
    leaf = tls.issue_leaf(tls.LeafProfile.from_names(NAMES, key_type=kt), key, ca, ca_key)
    atomic_write(os.path.join(out, "rootCA-key.pem"), tls.key_to_pem(ca_key), 0o400)
    atomic_write(os.path.join(out, "rootCA.pem"), tls.cert_to_pem(ca), 0o644)
    atomic_write(os.path.join(out, "key.pem"), tls.key_to_pem(key), 0o600)
    atomic_write(os.path.join(out, "cert.pem"), tls.cert_to_pem(leaf), 0o644)
    return ca, ca_key


def ours_leaf(tls, atomic_write, kt, out, ca, ca_key):
    key = tls.generate_key(kt, tls.LEAF_RSA_BITS)
    leaf = tls.issue_leaf(tls.LeafProfile.from_names(NAMES, key_type=kt), key, ca, ca_key)
    atomic_write(os.path.join(out, "key.pem"), tls.key_to_pem(key), 0o600)
    atomic_write(os.path.join(out, "cert.pem"), tls.cert_to_pem(leaf), 0o644)


def mkcert_run(mkcert, kt, caroot, out):
    env = {**os.environ, "CAROOT": caroot, "TRUST_STORES": "none"}
    argv = [mkcert, *(["-ecdsa"] if kt == "ecdsa" else []), "-cert-file", os.path.join(out, "cert.pem"),
            "-key-file", os.path.join(out, "key.pem"), *NAMES]
    subprocess.run(argv, env=env, check=True, capture_output=True)


def timed(fn, runs):
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def fmt(samples):
    return f"{statistics.median(samples) * 1000:8.1f} ms  ({min(samples) * 1000:6.1f}-{max(samples) * 1000:7.1f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="runs per measurement (default 15)")
    args = parser.parse_args()
    mkcert = shutil.which("mkcert")
    if not mkcert:
        sys.exit("mkcert not found: run scripts/lib/mkcert.sh first")
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import tls
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import atomic_write

    version = subprocess.run([mkcert, "-version"], capture_output=True, text=True, check=False).stdout.strip()
    import cryptography

    print(f"names: {' '.join(NAMES)}")
    print(f"mkcert {version}; cryptography {cryptography.__version__}; python {sys.version.split()[0]}; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {args.runs} runs each; median (min-max)")
    print()
    header = f"{'key':6} {'what':10} {'hyhome in-process':>31} {'hyhome new process':>31} {'mkcert':>31} " \
             f"{'ratio*':>7}"
    print(header)
    print("-" * len(header))
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for kt in ("rsa", "ecdsa"):
            def fresh(prefix):
                return tempfile.mkdtemp(prefix=prefix, dir=tmp)

            ours_full = timed(lambda kt=kt: ours_ca_and_leaf(tls, atomic_write, kt, fresh("o")), args.runs)
            proc_full = timed(lambda kt=kt: subprocess.run(
                [sys.executable, "-c", OURS_SNIPPET, kt, fresh("p"), *NAMES], check=True), args.runs)
            mk_full = timed(lambda kt=kt: mkcert_run(mkcert, kt, fresh("c"), fresh("m")), args.runs)

            ca, ca_key = ours_ca_and_leaf(tls, atomic_write, kt, fresh("o"))
            caroot = fresh("c")
            mkcert_run(mkcert, kt, caroot, fresh("m"))
            ours_l = timed(lambda kt=kt, ca=ca, ca_key=ca_key: ours_leaf(tls, atomic_write, kt, fresh("o"), ca, ca_key),
                           args.runs)
            mk_l = timed(lambda kt=kt, caroot=caroot: mkcert_run(mkcert, kt, caroot, fresh("m")), args.runs)

            for what, ours_s, proc_s, mk_s in (("CA + leaf", ours_full, proc_full, mk_full),
                                               ("leaf only", ours_l, None, mk_l)):
                ratio = statistics.median(ours_s) / statistics.median(mk_s)
                print(f"{kt:6} {what:10} {fmt(ours_s):>31} {fmt(proc_s) if proc_s else '-':>31} {fmt(mk_s):>31} "
                      f"{ratio:6.2f}x")
            full = statistics.median(ours_full)
            proc = statistics.median(proc_full)
            mk = statistics.median(mk_full)
            if kt == "rsa":
                verdicts.append(f"RSA CA + leaf: in-process {full * 1000:.0f} ms vs mkcert {mk * 1000:.0f} ms -> "
                                f"{'no slower' if full <= mk else 'SLOWER'} than mkcert "
                                f"(with interpreter start: {proc * 1000:.0f} ms, "
                                f"{'no slower' if proc <= mk else 'slower'})")
            else:
                verdicts.append(f"ECDSA CA + leaf: in-process {full * 1000:.1f} ms -> "
                                f"{'under' if full < 0.2 else 'OVER'} the 0.2 s target (a new Python process adds "
                                f"interpreter start and the cryptography import: {proc * 1000:.0f} ms in total)")
    print()
    print("* ratio = hyhome in-process median / mkcert median (below 1: hyhome is faster)")
    for v in verdicts:
        print(v)


if __name__ == "__main__":
    main()
