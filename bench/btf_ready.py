"""How fast is the kernel BTF ready for CO-RE lookups, and at what memory cost?

"Ready" = BTF.load_kernel() + find('task_struct') + decode it.  Each case runs
in a fresh subprocess (bytecode precompiled, so import cost is not compile
cost), cold (empty cache dir) and cached, best of N; next to them the time of
`bpftool btf dump file /sys/kernel/btf/vmlinux` (format raw, to /dev/null).
Prints numbers; asserts nothing.  Goals: <= 60 ms cold, <= 5 ms cached,
peak memory <= 25 MB.  ``--json``: one JSON object instead of the table.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("RUNS", "7"))

CHILD = r"""
import resource, sys, time, tracemalloc
t0 = time.perf_counter()
from pybpfload.obj import btf as B
t1 = time.perf_counter()
if sys.argv[2] == "1":
    tracemalloc.start()
t2 = time.perf_counter()
btf = B.BTF.load_kernel(cache_dir=sys.argv[1])
t3 = time.perf_counter()
tid = btf.find("task_struct", B.KIND_STRUCT)[0]
ts = btf[tid]
t4 = time.perf_counter()
peak = tracemalloc.get_traced_memory()[1] if sys.argv[2] == "1" else 0
print(btf.from_cache, (t1 - t0) * 1e3, (t3 - t2) * 1e3, (t4 - t3) * 1e3, (t4 - t2) * 1e3,
      peak / 2**20, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, len(ts.members))
"""

BASELINE = r"""
import resource
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def run(cache_dir, trace, env):
    out = subprocess.run([sys.executable, "-c", CHILD, cache_dir, trace], env=env, cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout.split()
    return [out[0] == "True"] + [float(x) for x in out[1:]]


def main():
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    pyc = tempfile.mkdtemp(prefix="pybpfload-pyc-")
    env["PYTHONPYCACHEPREFIX"] = pyc
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    base_rss = float(subprocess.run([sys.executable, "-c", BASELINE], env=env,
                                    capture_output=True, text=True).stdout)
    cold, cached = [], []
    for _ in range(RUNS):
        d = tempfile.mkdtemp(prefix="pybpfload-btf-")
        try:
            run(d, "0", env)                      # warm the pyc prefix and page cache
            shutil.rmtree(d)
            os.mkdir(d)
            cold.append(run(d, "0", env))
            cached.append(run(d, "0", env))
            assert not cold[-1][0] and cached[-1][0]
        finally:
            shutil.rmtree(d, ignore_errors=True)
    d = tempfile.mkdtemp(prefix="pybpfload-btf-")
    try:
        cold_mem = run(d, "1", env)
        cached_mem = run(d, "1", env)
    finally:
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(pyc, ignore_errors=True)

    bpftool = shutil.which("bpftool")
    tool = []
    if bpftool:
        for _ in range(RUNS):
            t = time.perf_counter()
            subprocess.run([bpftool, "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format",
                            "raw"], stdout=subprocess.DEVNULL, check=True)
            tool.append((time.perf_counter() - t) * 1e3)

    def best(rows, i):
        return min(r[i] for r in rows)

    if "--json" in sys.argv[1:]:      # for bench/run_all.py: one object, no table
        def case(rows, mem):
            return {"import_ms": best(rows, 1), "load_ms": best(rows, 2),
                    "find_decode_ms": best(rows, 3), "ready_ms": best(rows, 4),
                    "tracemalloc_peak_mb": mem[5], "maxrss_mb": mem[6]}
        print(json.dumps({"runs": RUNS, "cold": case(cold, cold_mem),
                          "cached": case(cached, cached_mem), "python_base_rss_mb": base_rss,
                          "bpftool_dump_ms": min(tool) if tool else None}))
        return
    print(f"kernel BTF ready for CO-RE (load + find task_struct + decode), best of {RUNS}:")
    print(f"  {'case':<10} {'import':>8} {'load':>8} {'find+dec':>9} {'ready':>8}"
          f" {'tracemalloc peak':>17} {'maxrss (python base)':>21}")
    for label, rows, mem in (("cold", cold, cold_mem), ("cached", cached, cached_mem)):
        print(f"  {label:<10} {best(rows, 1):7.1f}ms {best(rows, 2):7.1f}ms {best(rows, 3):8.2f}ms"
              f" {best(rows, 4):7.1f}ms {mem[5]:15.1f}MB {mem[6]:9.1f}MB ({base_rss:.1f}MB)")
    if tool:
        print(f"  bpftool btf dump file vmlinux format raw: {min(tool):.1f} ms (whole process)")
    print("goals: cold <= 60 ms, cached <= 5 ms, peak <= 25 MB")


if __name__ == "__main__":
    main()
