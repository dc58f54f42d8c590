"""What counting system calls costs each system call, next to the peers.

A tight ``getppid`` loop (a small C program, compiled here with gcc, pinned
to one CPU) reports its nanoseconds per call.  It runs in a cgroup made for
the bench (in the v1 hierarchy the counter keys on, and in the v2 one), so
"watched" is exactly what ``syscalls`` does for a container.  Measured side
by side:

* bare: nothing attached to sys_enter (by us);
* the floors: empty programs on each hook -- raw_tp and classic tracepoint
  (``prebuilt/floor.bpf.o``) and tp_btf (built here: the hook of
  ``count_syscalls``);
* ours: each program of ``syscalls.bpf.o`` -- ``count_syscalls`` (tp_btf,
  what ``syscalls`` runs where bpf_get_current_task_btf exists) and
  ``count_syscalls_raw`` (the raw_tp fallback) -- with the loop's cgroup
  watched (counting) and with the loop outside every watched cgroup
  (skipped), for the v1 and the v2 cgroup key; ``--compare OLD.bpf.o``
  adds another build (e.g. from ``git show REV:prebuilt/syscalls.bpf.o``)
  measured the same way, in the same rounds;
* the peers: libbpf-tools ``syscount`` and BCC ``syscount-bpfcc`` (both
  count every process of the host), and a bpftrace one-liner counting per
  cgroup and syscall id on the same tracepoint.

Two figures per row.  wall: ns per getppid, the minimum over --runs rounds
that go round-robin over all rows (so load from others on this shared
machine spreads over every row, not over one).  prog: from a second pass
with the kernel's BPF run-time statistics on (BPF_ENABLE_STATS), the
program's own ns per run (run_time_ns / run_cnt), which is much less noisy.
Overheads are against the empty program on the same hook.  Goals (wall):
counting <= floor + 30 ns, skipped <= floor + 15 ns.

    sudo python3 bench/syscalls_bench.py [--calls N] [--runs R] [--compare OLD.bpf.o] [--json]

``--json`` prints one JSON object (every figure by key) instead of the table;
``v1``/``v2`` are the program ``syscalls`` runs here, ``v1_raw_tp``/``v2_raw_tp``
the other one (each entry names its ``program``, ``hook`` and the wall ``floor``
of that hook), ``prog_ns`` the run-time statistics.
"""

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT]

from pybpfload.kernel import features  # noqa: E402
from pybpfload.kernel import syscall as sc  # noqa: E402
from pybpfload.kernel.bpf_object import BPFObject, kernel_btf  # noqa: E402
from pybpfload.kernel.programs import prog_info  # noqa: E402
from pybpfload.tools.classify import choose_v1_subsys  # noqa: E402
from pybpfload.tools.syscalls import counter_program, v1_mount, v2_mount  # noqa: E402

BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
GETPPID_X86_64 = 110

FLOOR_TP_BTF_C = (
    'char LICENSE[] __attribute__((section("license"), used)) = "GPL";\n'
    '__attribute__((section("tp_btf/sys_enter"), used))\n'
    'int floor_tp_btf(unsigned long long *ctx) { return 0; }\n')

LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
/* waits for one byte on stdin (so the bench can move it into a cgroup
 * first), then prints the nanoseconds per getppid over N calls */
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    char c;
    struct timespec a, b;
    if (read(0, &c, 1) != 1) return 1;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.2f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"""


class EnableStatsAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32)]


class RunStats:
    """The kernel's per-program run-time statistics, on while this is open."""

    def __init__(self):
        self.fd = sc.bpf(BPF_ENABLE_STATS, EnableStatsAttr(type=BPF_STATS_RUN_TIME),
                         "enabling BPF run-time statistics")

    def close(self):
        os.close(self.fd)


def run_stats(progs):
    """(run_time_ns, run_cnt) summed over loaded programs."""
    t = n = 0
    for p in progs:
        info, _ = prog_info(p.fileno())
        t += info.run_time_ns
        n += info.run_cnt
    return t, n


class Row:
    """One configuration: attach ``progs`` (loaded), run the loop in or out of
    the bench cgroups, detach; keeps the minimum of each figure."""

    def __init__(self, label, progs=(), in_cgroup=False, floor=None, goal=None, counted=None):
        self.label, self.progs, self.in_cgroup = label, list(progs), in_cgroup
        self.floor, self.goal, self.counted = floor, goal, counted
        self.wall = None      # ns per getppid
        self.prog_ns = None   # ns per program run (stats pass)

    def measure(self, bench, stats):
        for p in self.progs:
            p.attach()
        try:
            before = run_stats(self.progs)
            ns = bench.ns_per_call(self.in_cgroup)
            after = run_stats(self.progs)
        finally:
            for p in self.progs:
                p.detach()
        if not stats:
            self.wall = ns if self.wall is None else min(self.wall, ns)
        elif after[1] > before[1]:
            per = (after[0] - before[0]) / (after[1] - before[1])
            self.prog_ns = per if self.prog_ns is None else min(self.prog_ns, per)

    def over_floor(self):
        """(wall ns over the floor, prog ns over the floor or None)."""
        f = self.floor
        prog = (self.prog_ns - f.prog_ns
                if self.prog_ns is not None and f.prog_ns is not None else None)
        return self.wall - f.wall, prog


class Bench:
    def __init__(self, calls, runs):
        self.calls, self.runs = calls, runs
        self.dir = tempfile.mkdtemp(prefix="pybpf-sysbench-")
        self.loop = os.path.join(self.dir, "loop")
        src = self.loop + ".c"
        with open(src, "w") as f:
            f.write(LOOP_C)
        subprocess.run(["gcc", "-O2", "-o", self.loop, src], check=True)
        self.subsys, self.ctrl = choose_v1_subsys(kernel_btf())
        name = f"pybpf-sysbench-{os.getpid()}"
        self.cgroups = []
        if self.ctrl:
            self.cgroups.append(os.path.join(v1_mount(self.ctrl), name))
        self.cgroups.append(os.path.join(v2_mount(), name))
        for cg in self.cgroups:
            os.mkdir(cg)

    def ns_per_call(self, in_cgroup):
        """One run of the loop, pinned to one CPU: ns per getppid."""
        cpu = max(os.sched_getaffinity(0))
        p = subprocess.Popen([self.loop, str(self.calls)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE,
                             preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
        if in_cgroup:
            for cg in self.cgroups:
                with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                    f.write(str(p.pid))
        out, _ = p.communicate(b"x", timeout=120)
        return float(out)

    def close(self):
        for cg in self.cgroups:
            for _ in range(50):
                try:
                    os.rmdir(cg)
                    break
                except OSError:
                    time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)


def counted(obj, slot=1, nr=GETPPID_X86_64):
    """The object's count of getppid in ``slot``, per-CPU values summed."""
    return sum(int.from_bytes(v, "little")
               for v in obj.map("counts").lookup(slot * 1024 + nr) or [])


def tp_btf_floor(bench):
    """An empty tp_btf/sys_enter program, compiled here."""
    src = os.path.join(bench.dir, "floor_tp_btf.bpf.c")
    with open(src, "w") as f:
        f.write(FLOOR_TP_BTF_C)
    out = os.path.join(bench.dir, "floor_tp_btf.bpf.o")
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-c", src, "-o", out], check=True)
    return out


def counter_rows(bench, objs, path, tag, floors):
    """{(key, program): (counting Row, skipped Row)} of one syscalls object,
    loaded once per key and program (kept in ``objs``, closed by the caller)."""
    out = {}
    with BPFObject(path) as probe:
        names = sorted(probe.spec.programs)
    for v1, key in ((True, "v1"), (False, "v2")):
        if v1 and bench.subsys < 0:
            continue
        key_label = f"{bench.ctrl} v1 id" if v1 else "v2 id"
        for name in names:
            obj = BPFObject(path)
            objs.append(obj)
            obj.set_variable("v1_subsys_id", bench.subsys if v1 else -1)
            try:
                obj.load([name])
            except Exception as exc:   # e.g. a tp_btf program on an old kernel
                print(f"note: {tag}{name} does not load here: {exc}", file=sys.stderr)
                continue
            cg = bench.cgroups[0] if v1 else bench.cgroups[-1]
            obj.map("watched").update(os.stat(cg).st_ino, 1)
            prog = obj.program(name)
            floor = floors.get(prog.spec.attach_kind, floors["raw_tracepoint"])
            label = f"{tag}{name} ({key_label})"
            pair = (Row(f"{label} counting", [prog], True, floor, 30, lambda obj=obj: counted(obj)),
                    Row(f"{label} skipped", [prog], False, floor, 15))
            for row in pair:        # the hook whose empty program is this row's floor
                row.hook = "tp_btf" if floor is floors.get("tp_btf") else "raw_tp"
            out[(key, name)] = pair
    return out


def bpf_prog_fds(pid):
    """How many BPF program fds process `pid` holds (its own, not other users' programs)."""
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                n += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:bpf-prog"
            except OSError:
                pass
    except OSError:
        pass
    return n


def with_peer(bench, argv, min_new=2):
    """ns per call while the peer `argv` runs; None if it never holds `min_new` programs."""
    if not shutil.which(argv[0]):
        return None
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        # attached once its programs and links exist (its output is buffered in a pipe)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None:
            # its own fds: programs loaded by others on this shared machine do not count
            if bpf_prog_fds(p.pid) >= min_new:
                break
            time.sleep(0.2)
        if p.poll() is not None or bpf_prog_fds(p.pid) < min_new:
            return None
        time.sleep(1.0)
        ns = bench.ns_per_call(False)
        return ns if p.poll() is None else None     # it must still run when measured
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=1000000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--stats-runs", type=int, default=2,
                    help="rounds of the run-time statistics pass (default: %(default)s)")
    ap.add_argument("--compare", metavar="OLD.bpf.o",
                    help="another build of syscalls.bpf.o, measured in the same rounds")
    ap.add_argument("--no-peers", action="store_true", help="skip syscount, BCC, bpftrace")
    ap.add_argument("--json", action="store_true", help="one JSON object, no table")
    a = ap.parse_args()
    bench = Bench(a.calls, a.runs)
    objs, peers = [], []
    try:
        floor_obj = BPFObject(os.path.join(ROOT, "prebuilt", "floor.bpf.o"))
        objs.append(floor_obj)
        floor_obj.load()
        bare = Row("bare getppid (nothing attached)", in_cgroup=True)
        floors = {"raw_tracepoint": Row("floor: empty raw_tp", [floor_obj.program("floor_raw_tp")])}
        if features.has_tp_btf():
            btf_obj = BPFObject(tp_btf_floor(bench))
            objs.append(btf_obj)
            btf_obj.load()
            floors["tp_btf"] = Row("floor: empty tp_btf", [btf_obj.program("floor_tp_btf")])
        floor_tp = Row("floor: empty classic tracepoint", [floor_obj.program("floor_tp")])
        ours = counter_rows(bench, objs, os.path.join(ROOT, "prebuilt", "syscalls.bpf.o"),
                            "", floors)
        old = counter_rows(bench, objs, a.compare, "OLD ", floors) if a.compare else {}
        rows = [bare, *floors.values(), floor_tp]
        for pair in (*ours.values(), *old.values()):
            rows += pair
        for _ in range(a.runs):
            for row in rows:
                row.measure(bench, False)
        stats = RunStats()
        try:
            for _ in range(a.stats_runs):
                for row in rows:
                    if row.progs:
                        row.measure(bench, True)
        finally:
            stats.close()
        for row in rows:
            if callable(row.counted):
                row.counted = row.counted()
        if not a.no_peers:
            bpftrace_count = ("tracepoint:raw_syscalls:sys_enter "
                              "{ @[cgroup, args->id] = count(); }")
            for label, argv in (("libbpf-tools syscount (all)", ["syscount"]),
                                ("BCC syscount-bpfcc (all)", ["syscount-bpfcc"]),
                                ("bpftrace @[cgroup, id] = count() (all)",
                                 ["bpftrace", "-e", bpftrace_count])):
                ns = with_peer(bench, argv, min_new=1 if argv[0] == "bpftrace" else 2)
                peers.append((argv[0], label, ns))
    finally:
        for obj in objs:
            obj.close()
        bench.close()

    raw_floor = floors["raw_tracepoint"]
    used = counter_program()
    if a.json:
        measured = dict(bare=bare.wall, floor_raw_tp=raw_floor.wall, floor_tp=floor_tp.wall,
                        floor_tp_btf=floors["tp_btf"].wall if "tp_btf" in floors else None,
                        calls=a.calls, runs=a.runs, stats_runs=a.stats_runs,
                        cpus=os.cpu_count(), program=used,
                        prog_ns={r.label: r.prog_ns for r in rows if r.prog_ns is not None})
        for (key, name), (c, s) in ours.items():
            entry = {"counting": c.wall, "skipped": s.wall, "counted": c.counted,
                     "key": f"{bench.ctrl} v1 id" if key == "v1" else "v2 id",
                     "program": name, "floor": c.floor.wall, "hook": c.hook,
                     "used": name == used,
                     "counting_prog_ns": c.prog_ns, "skipped_prog_ns": s.prog_ns,
                     "floor_prog_ns": c.floor.prog_ns}
            # v1/v2: the program syscalls runs here; v1_raw/v2_raw (v1_tp_btf/v2_tp_btf
            # where the raw_tp one is what syscalls runs): the other program
            measured[key if name == used else f"{key}_{c.hook}"] = entry
        for cmd, _, ns in peers:
            measured[cmd] = ns
        print(json.dumps(measured))
        return
    print(f"ns per getppid: wall = min of {a.runs} round-robin runs of {a.calls} calls "
          f"({os.cpu_count()} CPUs, shared machine: expect noise); prog = the program's own "
          f"ns per run (BPF run-time statistics, min of {a.stats_runs}); syscalls runs {used}")
    print(f"  {'':<52} {'wall':>8} {'prog':>6}  over the same hook's floor: wall / prog")
    for row in rows:
        prog = "" if row.prog_ns is None else f"{row.prog_ns:6.1f}"
        note = ""
        if row.floor is not None:
            dw, dp = row.over_floor()
            ok = "ok" if dw <= row.goal else "MISSED"
            note = (f"{dw:+6.1f} / {'n/a' if dp is None else format(dp, '+5.1f')} ns, "
                    f"goal +{row.goal}: {ok}")
            if row.counted is not None:
                note += f"; {row.counted} counted"
        print(f"  {row.label:<52} {row.wall:8.1f} {prog:>6}  {note}")
    for cmd, label, ns in peers:
        if ns is None:
            note = ("did not start (BCC compiles on the target: it needs this kernel's "
                    "headers in /lib/modules/$(uname -r)/build or /sys/kernel/kheaders.tar.xz)"
                    if cmd.endswith("bpfcc") else "did not start")
            print(f"  {label:<52} {'n/a':>8} {'':>6}  {note}")
        else:
            print(f"  {label:<52} {ns:8.1f} {'':>6}  {ns - raw_floor.wall:+6.1f} ns over the "
                  f"raw_tp floor")


if __name__ == "__main__":
    main()
