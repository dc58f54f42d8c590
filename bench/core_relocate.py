"""How long CO-RE relocation takes against the running kernel's BTF.

Prints: kernel BTF load time, first relocation of tests/objects/core_kernel.bpf.o
(cold candidate search), and the mean of repeated relocations sharing a CoreCache.
Run: python3 bench/core_relocate.py [--json]   (--json: one JSON object, no text)
"""

import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pybpfload.obj.btf import BTF  # noqa: E402
from pybpfload.obj.core import CoreCache, relocate_core  # noqa: E402
from test_core import load_programs  # noqa: E402

OBJ = ROOT / "tests" / "objects" / "core_kernel.bpf.o"
SECTION = "tracepoint/sched/sched_process_exec"


def main():
    t0 = time.perf_counter()
    kbtf = BTF.load_kernel()
    t1 = time.perf_counter()
    lbtf, progs = load_programs(OBJ)
    cache = CoreCache()
    t2 = time.perf_counter()
    results = relocate_core(progs[SECTION], lbtf, kbtf, "read_task", cache=cache)
    t3 = time.perf_counter()
    n = 200
    copies = [load_programs(OBJ)[1][SECTION] for _ in range(n)]
    t4 = time.perf_counter()
    for insns in copies:
        relocate_core(insns, lbtf, kbtf, "read_task", cache=cache)
    t5 = time.perf_counter()
    warm = (t5 - t4) / n
    if "--json" in sys.argv[1:]:      # for bench/run_all.py
        print(json.dumps({"kernel_btf_load_ms": 1e3 * (t1 - t0), "relocations": len(results),
                          "first_relocation_ms": 1e3 * (t3 - t2),
                          "warm_us_per_relo": 1e6 * warm / len(results)}))
        return
    print(f"kernel BTF load:                         {1e3 * (t1 - t0):8.2f} ms")
    print(f"first relocation ({len(results)} relos, cold cache): {1e3 * (t3 - t2):8.2f} ms")
    print(f"relocation with a warm CoreCache:         {1e6 * warm / len(results):8.2f} us/relo")


if __name__ == "__main__":
    main()
