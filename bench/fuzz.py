"""Run every atheris fuzz target for N minutes and print executions and findings.

    python3 bench/fuzz.py [--minutes N] [--targets elf,btf,...] [--out DIR]

Each target runs ``tests/fuzz/run.py TARGET -max_total_time=...`` (coverage-
guided, seeded from the committed objects and the regression corpus).  A
finding is an input that made the target raise something its parser does not
document; it is kept under ``--out`` (default: a fresh temp dir, printed) for
you to fix the parser and copy into ``tests/fuzz/corpus/<target>/``.
Needs atheris: ``pip install atheris``.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "..", "tests", "fuzz", "run.py")
TARGETS = ["elf", "btf", "btf_ext", "perf", "ringbuf", "identify", "runtime_state", "layout"]
DONE = re.compile(r"Done (\d+) runs in (\d+) second")
STAT = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")


def run_target(name, seconds, out_dir):
    prefix = os.path.join(out_dir, name + "-")
    cmd = [sys.executable, RUN, name, f"-max_total_time={int(seconds)}", "-timeout=30",
           "-rss_limit_mb=4096", f"-artifact_prefix={prefix}", "-print_final_stats=1"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=seconds + 600)
    wall = time.monotonic() - t0
    text = proc.stdout.decode(errors="replace")
    runs = None
    m = DONE.search(text)
    if m:
        runs = int(m.group(1))
    else:       # stopped by a finding: the last status line has the count
        stats = STAT.findall(text)
        if stats:
            runs = int(stats[-1][0])
    cov = STAT.findall(text)
    findings = sorted(f for f in os.listdir(out_dir) if f.startswith(name + "-"))
    if findings:
        with open(os.path.join(out_dir, name + ".log"), "w") as f:
            f.write(text)
    return {"target": name, "runs": runs, "seconds": wall, "rc": proc.returncode,
            "cov": int(cov[-1][1]) if cov else None, "corpus": int(cov[-1][3]) if cov else None,
            "findings": findings, "error": _error_line(text) if proc.returncode else ""}


def _error_line(text):
    for line in text.splitlines():
        if re.match(r"^\w*(Error|Exception)\b.*:", line) or line.startswith("=== Uncaught"):
            return line.strip()[:160]
    return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=2.0, help="per target (default: %(default)s)")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--out", help="where to keep crashing inputs (default: a new temp dir)")
    args = ap.parse_args()
    try:
        import atheris  # noqa: F401
    except ImportError:
        sys.exit("bench/fuzz.py needs atheris: pip install atheris")
    out_dir = args.out or tempfile.mkdtemp(prefix="pybpf-fuzz-findings-")
    os.makedirs(out_dir, exist_ok=True)
    print(f"{'target':14} {'runs':>10} {'runs/s':>8} {'cov':>6} {'corpus':>7}  findings")
    total = 0
    for name in args.targets.split(","):
        r = run_target(name, args.minutes * 60, out_dir)
        rate = (r["runs"] or 0) / max(r["seconds"], 1e-9)
        total += len(r["findings"])
        print(f"{name:14} {r['runs'] or 0:>10} {rate:>8.0f} {r['cov'] or 0:>6} "
              f"{r['corpus'] or 0:>7}  {len(r['findings'])} {r['error']}", flush=True)
    print(f"findings: {total} (inputs kept in {out_dir})")
    if not total and not args.out:
        os.rmdir(out_dir)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
