"""Cold open+load+attach of prebuilt/classify.bpf.o: pybpfload vs bpftool.

Each run is a fresh process, so nothing is warm but the page cache (and, for
pybpfload, its on-disk kernel-BTF index cache, which a real deployment keeps
too; RUNS_COLD_CACHE=1 points it at an empty dir each run instead):

* pybpfload: ``python -c`` that imports pybpfload, opens the object, loads and
  attaches every program, then exits (wall time of the whole process, and the
  in-process time from the first import to attached);
* bpftool: ``bpftool prog loadall OBJ DIR`` of the same object (load and pin:
  bpftool 7.1 has no autoattach, so it does a little less than we do).

Prints best and median of RUNS; asserts nothing.  Goal: pybpfload's whole
process within 3x bpftool's.  ``--json``: one JSON object instead of the text.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJ = os.path.join(ROOT, "prebuilt", "classify.bpf.o")
RUNS = int(os.environ.get("RUNS", "7"))

CHILD = r"""
import time
t0 = time.perf_counter()
import pybpfload
with pybpfload.open_object(%r) as obj:
    obj.load()
    obj.attach()
    t1 = time.perf_counter()
print((t1 - t0) * 1e3)
"""


def run_ours(cache_dir):
    env = dict(os.environ, PYTHONPATH=ROOT)
    if cache_dir:
        env["PYBPFLOAD_CACHE_DIR"] = cache_dir
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD % OBJ], capture_output=True, text=True,
                         env=env, check=True).stdout
    return (time.perf_counter() - t0) * 1e3, float(out.strip())


def run_bpftool():
    pin = f"/sys/fs/bpf/pybpfload-bench-{uuid.uuid4().hex[:10]}"
    os.mkdir(pin)
    try:
        t0 = time.perf_counter()
        subprocess.run(["bpftool", "prog", "loadall", OBJ, pin], check=True,
                       capture_output=True)
        return (time.perf_counter() - t0) * 1e3
    finally:
        shutil.rmtree(pin, ignore_errors=True)


def summary(values):
    return f"best {min(values):7.1f} ms   median {statistics.median(values):7.1f} ms"


def main():
    if os.geteuid() != 0:
        sys.exit("load_bench: needs root")
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "pybpfload")],
                   check=False)
    cold_cache = os.environ.get("RUNS_COLD_CACHE") == "1"
    ours_wall, ours_inproc, theirs = [], [], []
    for _ in range(RUNS):
        tmp = tempfile.mkdtemp() if cold_cache else None
        try:
            wall, inproc = run_ours(tmp)
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        ours_wall.append(wall)
        ours_inproc.append(inproc)
        theirs.append(run_bpftool())
    if "--json" in sys.argv[1:]:      # for bench/run_all.py
        def stats(values):
            return {"best_ms": min(values), "median_ms": statistics.median(values)}
        print(json.dumps({"runs": RUNS, "empty_btf_cache": cold_cache,
                          "ours_process": stats(ours_wall), "ours_in_process": stats(ours_inproc),
                          "bpftool_loadall": stats(theirs)}))
        return
    print(f"classify.bpf.o cold open+load(+attach), {RUNS} runs each"
          + (" (empty BTF cache each run)" if cold_cache else ""))
    print(f"  pybpfload process (python start .. exit)  {summary(ours_wall)}")
    print(f"  pybpfload import..attached (in process)   {summary(ours_inproc)}")
    print(f"  bpftool prog loadall (load + pin)         {summary(theirs)}")


if __name__ == "__main__":
    main()
