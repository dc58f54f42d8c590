"""Run every benchmark, one after the other, and write bench/RESULTS.md and the plots.

    sudo make bench                  # = sudo python3 bench/run_all.py
    python3 bench/run_all.py --render-only   # redraw RESULTS.md + PNGs from the last run

Each benchmark script runs in its own process with ``--json`` (sequentially, so
they do not disturb each other); its JSON object is kept in
``build/bench/results.json``.  RESULTS.md then gets the machine, one table per
benchmark with our numbers beside the peers' and the goal, marked met or
missed as measured, and two PNG plots (matplotlib, Agg backend).

Before running, the peers and the plotting library are installed if missing
(apt: bpfcc-tools, libbpf-tools, bpftrace; pip: matplotlib); ``--no-install``
skips that.  None of them is a runtime dependency of pybpfload.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
RAW = os.path.join(ROOT, "build", "bench", "results.json")
RESULTS = os.path.join(BENCH, "RESULTS.md")
PLOT_SYSCALLS = "syscalls_overhead.png"
PLOT_STORM = "exec_storm.png"

APT_PEERS = ("bpfcc-tools", "libbpf-tools", "bpftrace", "gcc")

# name -> (script, extra arguments, timeout in seconds, repeat: keep the best)
STEPS = (
    ("btf_ready", "btf_ready.py", [], 180, 1),
    ("core_relocate", "core_relocate.py", [], 120, 1),
    ("rings", "rings.py", [], 120, 3),
    ("load", "load_bench.py", [], 240, 1),
    ("syscalls", "syscalls_bench.py", [], 420, 1),
    ("classify", "classify_bench.py", [], 420, 1),
    ("soak", "soak.py", ["--seconds", "60", "--interval", "10"], 240, 1),
)


# ---------------------------------------------------------------- setup

def installed(pkg):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                         text=True)
    return out.stdout.strip() == "install ok installed"


def apt_has_candidate(pkg):
    out = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.strip().startswith("Candidate:"):
            return line.split(":", 1)[1].strip() not in ("", "(none)")
    return False


def ensure_tools():
    """Install the peers (apt) and matplotlib (pip) when missing; say what was done."""
    missing = [p for p in APT_PEERS if not installed(p)]
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        wanted = [p for p in missing if apt_has_candidate(p)]
        for p in sorted(set(missing) - set(wanted)):
            print(f"run_all: {p} is not in this system's apt sources; its rows stay empty")
        if wanted:
            print("run_all: apt-get install " + " ".join(wanted))
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
                           + wanted, env=env, check=False, stdout=subprocess.DEVNULL)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("run_all: pip install matplotlib (for the plots only)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", "matplotlib"], check=False)


# ---------------------------------------------------------------- running

def machine():
    cpu = "unknown"
    mem_kb = 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    # what was measured is the working tree: name the tracked files that differ from HEAD
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "-uno"],
                           capture_output=True, text=True).stdout.split("\n")
    dirty = [ln[3:] for ln in dirty if ln.strip()]
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit, "uncommitted": dirty, "distro": distro(),
            # BCC compiles on the target: it needs one of these
            "kernel_headers": any(os.path.exists(p) for p in (
                f"/lib/modules/{platform.release()}/build", "/sys/kernel/kheaders.tar.xz")),
            "load_average": os.getloadavg()[0]}


def distro():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def run_step(script, extra, timeout):
    """Run one benchmark with --json; (result dict or None, seconds, error text)."""
    path = os.path.join(BENCH, script)
    if not os.path.exists(path):
        return None, 0.0, f"bench/{script} does not exist yet"
    t0 = time.monotonic()
    try:
        # SIGINT at its default in the benchmark and what it starts: a background
        # `make bench &` would hand down SIGINT ignored, and the benchmarks stop the
        # tools they measure (Python ones too) with SIGINT
        p = subprocess.run([sys.executable, path, "--json"] + extra, cwd=ROOT, timeout=timeout,
                           capture_output=True, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - t0, f"timed out after {timeout} s"
    spent = time.monotonic() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    try:
        return json.loads(lines[-1]), spent, ""
    except (IndexError, ValueError):
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return None, spent, f"exit {p.returncode}, no JSON: {tail[:200]}"


def best_of(results):
    """Merge repeated results: the highest rate (events/s) of each measurement."""
    def merge(a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            return {k: merge(a[k], b[k]) if k in b else a[k] for k in a}
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return max(a, b)
        return a
    out = results[0]
    for r in results[1:]:
        out = merge(out, r)
    return out


def run_all(only):
    raw = {"machine": machine(), "results": {}, "errors": {}, "seconds": {}}
    for name, script, extra, timeout, repeat in STEPS:
        if only and name not in only:
            continue
        got = []
        spent = 0.0
        err = ""
        for _ in range(repeat):
            print(f"run_all: {name} ({script}) ...", flush=True)
            res, sec, err = run_step(script, extra, timeout)
            spent += sec
            if res is None:
                break
            got.append(res)
        raw["seconds"][name] = round(spent, 1)
        if got:
            raw["results"][name] = best_of(got) if len(got) > 1 else got[0]
            if repeat > 1:
                raw["results"][name]["best_of_runs"] = len(got)
        else:
            raw["errors"][name] = err
        print(f"run_all: {name}: {'done' if got else err} ({spent:.0f} s)", flush=True)
    return raw


# ---------------------------------------------------------------- report

def verdict(ok):
    if ok is None:
        return "not measured"
    return "**met**" if ok else "**missed**"


def num(v, fmt="{:.1f}", unit=""):
    return "n/a" if v is None else fmt.format(v) + unit


def pct(part, whole):
    return "n/a" if not whole else f"{100.0 * part / whole:.1f}%"


def md_cell(text):
    """A tool's message made safe for one markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("`", "'")


# syscalls_bench.py JSON key, label, hook
PEERS_SYSCALLS = (
    ("syscount", "libbpf-tools `syscount`", "tracepoint ×2"),
    ("syscount-bpfcc", "BCC `syscount-bpfcc`", "tracepoint ×2"),
    ("bpftrace", "bpftrace `@[cgroup, args->id] = count()`", "tracepoint"),
)
PEERS_CLASSIFY = ("execsnoop", "bpftrace", "execsnoop-bpfcc")
PEER_LABELS = {"execsnoop": "libbpf-tools `execsnoop`",
               "execsnoop-bpfcc": "BCC `execsnoop-bpfcc`",
               "bpftrace": "bpftrace one-liner on `sched_process_exec`"}


def floors_of(r):
    """{hook: (label, wall ns)} of the empty programs measured by syscalls_bench."""
    out = {"raw_tp": ("raw_tp", r["floor_raw_tp"])}
    if r.get("floor_tp_btf") is not None:
        out["tp_btf"] = ("tp_btf", r["floor_tp_btf"])
    out["tracepoint"] = ("classic tracepoint", r["floor_tp"])
    return out


def hook_of(r, e):
    """The hook of a counter entry (older results name only its floor's ns)."""
    if e.get("hook"):
        return e["hook"]
    if e.get("floor") is not None and e.get("floor") == r.get("floor_tp_btf"):
        return "tp_btf"
    return "raw_tp"


def counter_entries(r):
    """[(program name, entry)] of syscalls_bench's counter rows: the program syscalls
    runs first, then by key (v1 before v2)."""
    out = []
    for key, e in r.items():
        if isinstance(e, dict) and "counting" in e and "skipped" in e:
            name = e.get("program", "syscalls.bpf.o")
            used = e.get("used", name == r.get("program") or "program" not in e)
            out.append(((not used, key), name, e))
    return [(name, e) for _, name, e in sorted(out, key=lambda x: x[0])]


class Report:
    def __init__(self, raw, plots=()):
        self.raw = raw
        self.res = raw["results"]
        self.plots = set(plots)       # the PNGs drawn for this report
        self.lines = []

    def image(self, name, alt):
        if name in self.plots:
            self.add(f"![{alt}]({name})", "")

    def add(self, *lines):
        self.lines.extend(lines)

    def table(self, header, rows):
        self.add("| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            self.add("| " + " | ".join(str(c) for c in r) + " |")
        self.add("")

    def missing(self, name):
        if name in self.res:
            return False
        why = self.raw["errors"].get(name, "not run")
        self.add(f"Not measured: {why}.", "")
        return True

    # each section: a heading, what was measured, a table, goals
    def machine(self):
        m = self.raw["machine"]
        total = sum(self.raw["seconds"].values())
        self.add("# Benchmark results", "",
                 "Generated by `make bench` (`bench/run_all.py`); every figure below was "
                 "measured in that one run.  The machine is shared with other work, so "
                 "timings are noisy: most figures are the best of several runs, as each "
                 "table says.  How to read and rerun: `bench/README.md`.", "")
        self.table(["machine", ""], [
            ("CPU", m["cpu"]), ("cores", m["cores"]), ("memory", f"{m['memory_gb']} GB"),
            ("kernel", m["kernel"]), ("system", m.get("distro", "")),
            ("Python", m["python"]), ("date", m["date"]),
            ("commit", m["commit"] + (" + uncommitted changes to " + ", ".join(
                f"`{p}`" for p in m["uncommitted"]) if m.get("uncommitted") else "")),
            ("load average at start", num(m.get("load_average"), "{:.2f}")),
            ("whole run", f"{total:.0f} s")])

    def goals_summary(self, goals):
        self.add("## Goals at a glance", "")
        self.table(["goal", "measured", "verdict"], goals)

    def btf(self, goals):
        self.add("## Kernel BTF ready for CO-RE (`bench/btf_ready.py`)", "")
        if self.missing("btf_ready"):
            return
        r = self.res["btf_ready"]
        c, w = r["cold"], r["cached"]
        base = r["python_base_rss_mb"]
        self.add(f"`BTF.load_kernel()` + find `task_struct` + decode it, each in a fresh "
                 f"process, best of {r['runs']}.  Cold = empty cache directory; cached = "
                 f"the on-disk index from the cold run.  Peak = tracemalloc peak of the "
                 f"Python heap; RSS growth = max RSS minus a bare Python's "
                 f"({base:.1f} MB), measured in the tracemalloc run.", "")
        self.table(["case", "load", "find + decode", "ready", "goal", "heap peak",
                    "RSS growth"], [
            ("pybpfload cold", num(c["load_ms"], unit=" ms"),
             num(c["find_decode_ms"], "{:.2f}", " ms"), num(c["ready_ms"], unit=" ms"),
             "≤ 60 ms", num(c["tracemalloc_peak_mb"], unit=" MB"),
             num(c["maxrss_mb"] - base, unit=" MB")),
            ("pybpfload cached", num(w["load_ms"], unit=" ms"),
             num(w["find_decode_ms"], "{:.2f}", " ms"), num(w["ready_ms"], unit=" ms"),
             "≤ 5 ms", num(w["tracemalloc_peak_mb"], unit=" MB"),
             num(w["maxrss_mb"] - base, unit=" MB")),
            ("bpftool btf dump file vmlinux (whole process)", "", "",
             num(r.get("bpftool_dump_ms"), unit=" ms"), "", "", ""),
        ])
        peak = max(c["tracemalloc_peak_mb"], w["tracemalloc_peak_mb"])
        goals.append(("BTF ready, cold ≤ 60 ms", num(c["ready_ms"], unit=" ms"),
                      verdict(c["ready_ms"] <= 60)))
        goals.append(("BTF ready, cached ≤ 5 ms", num(w["ready_ms"], unit=" ms"),
                      verdict(w["ready_ms"] <= 5)))
        goals.append(("BTF ready, memory ≤ 25 MB (heap peak)", num(peak, unit=" MB"),
                      verdict(peak <= 25)))
        growth = c["maxrss_mb"] - base
        goals.append(("BTF ready, memory ≤ 25 MB (process RSS growth, cold)",
                      num(growth, unit=" MB"), verdict(growth <= 25)))

    def core(self, goals):
        self.add("## CO-RE relocation (`bench/core_relocate.py`)", "")
        if self.missing("core_relocate"):
            return
        r = self.res["core_relocate"]
        self.add("`tests/objects/core_kernel.bpf.o` relocated against the running kernel's "
                 "BTF (one run; no peer does this step in isolation, no goal set).", "")
        self.table(["step", "time"], [
            ("kernel BTF load (cache warm)", num(r["kernel_btf_load_ms"], "{:.2f}", " ms")),
            (f"first relocation ({r['relocations']} relocations, cold candidate search)",
             num(r["first_relocation_ms"], "{:.2f}", " ms")),
            ("each relocation with a warm CoreCache",
             num(r["warm_us_per_relo"], "{:.1f}", " µs")),
        ])

    def rings(self, goals):
        self.add("## Event readers (`bench/rings.py`)", "")
        if self.missing("rings"):
            return
        r = self.res["rings"]
        runs = r.get("best_of_runs", 1)
        self.add(f"{r['event_bytes']}-byte events.  Kernel: a tracepoint program emits "
                 f"them on getppid(); only the drain (decode + hand-back to a callback) is "
                 f"timed.  Synthetic: the pure decoder over an in-memory ring.  Best of "
                 f"{runs} runs.  The goal applies to the kernel drain rate.", "")
        rows = []
        for kind, label in (("perf", "perf buffer"), ("ringbuf", "BPF ring buffer")):
            k = r["kernel"].get(kind)
            rate = k["drain_events_per_s"] if k else None
            rows.append((label, num(r["synthetic"][kind], "{:,.0f}"), num(rate, "{:,.0f}"),
                         f"{k['read']}/{k['emitted']} read, {k['lost']} lost" if k else "",
                         "≥ 1,500,000", verdict(None if rate is None else rate >= 1.5e6)))
            goals.append((f"{label} reader ≥ 1.5 M events/s", num(rate, "{:,.0f}", " /s"),
                          rows[-1][-1]))
        self.table(["reader", "synthetic events/s", "kernel events/s", "kernel events",
                    "goal", "verdict"], rows)

    def load(self, goals):
        self.add("## Open + load + attach `classify.bpf.o` (`bench/load_bench.py`)", "")
        if self.missing("load"):
            return
        r = self.res["load"]
        self.add(f"A fresh process each run, {r['runs']} runs (kernel BTF index cache "
                 f"{'empty' if r['empty_btf_cache'] else 'warm'}).  bpftool 7.1 cannot "
                 f"autoattach: `bpftool prog loadall` loads and pins, a little less work.  "
                 f"Goal (from the script): our whole process within 3× bpftool's.", "")
        o, i, b = r["ours_process"], r["ours_in_process"], r["bpftool_loadall"]
        self.table(["", "best", "median"], [
            ("pybpfload, whole process (python start .. exit)", num(o["best_ms"], unit=" ms"),
             num(o["median_ms"], unit=" ms")),
            ("pybpfload, import .. attached (in process)", num(i["best_ms"], unit=" ms"),
             num(i["median_ms"], unit=" ms")),
            ("bpftool prog loadall (load + pin)", num(b["best_ms"], unit=" ms"),
             num(b["median_ms"], unit=" ms")),
        ])
        ratio = o["best_ms"] / b["best_ms"]
        goals.append(("load: whole process ≤ 3× bpftool", f"{ratio:.1f}× (best)",
                      verdict(ratio <= 3)))

    def syscalls(self, goals):
        self.add("## Cost per system call (`bench/syscalls_bench.py`)", "")
        if self.missing("syscalls"):
            return
        r = self.res["syscalls"]
        bare = r["bare"]
        floors = floors_of(r)
        used = r.get("program")
        self.add(f"ns per `getppid` in a tight C loop pinned to one CPU: wall = minimum "
                 f"of {r['runs']} round-robin rounds of {r['calls']:,} calls over every "
                 f"row; prog = the program's own ns per run from the kernel's BPF run-time "
                 f"statistics (much less noisy).  Ours: each program of `syscalls.bpf.o` "
                 f"with the loop's cgroup watched (counting) or not (skipped), for the v1 "
                 f"and the v2 cgroup key; `syscalls` runs `{used or '?'}` on this kernel, "
                 f"the other one is its fallback.  Overheads and goals are against the "
                 f"empty program on the **same hook**; the goal is set on wall time, and "
                 f"the prog verdict applies the same bound to the program's own ns over "
                 f"its floor's, which the other load on a shared machine hardly moves.  "
                 f"The peers count every process of the host on classic tracepoints.", "")
        prog_ns = r.get("prog_ns") or {}
        rows = [("bare (nothing attached)", "", num(bare), "", "", "", "")]
        for hook, (label, wall) in floors.items():
            rows.append((f"floor: empty {label} program", hook, num(wall),
                         num(wall - bare, "{:+.1f}"), "0",
                         num(prog_ns.get(f"floor: empty {label}"), "{:.1f}"), ""))
        for name, e in counter_entries(r):
            floor = e.get("floor", r["floor_raw_tp"])
            hook = hook_of(r, e)
            runs = "runs here" if e.get("used", name == used or "program" not in e) \
                else "fallback"
            what = f"`{name}` ({runs}), {e['key']} key"
            for kind, goal in (("counting", 30), ("skipped", 15)):
                ns = e[kind]
                ok = ns <= floor + goal
                over_prog = None
                if e.get(f"{kind}_prog_ns") is not None and e.get("floor_prog_ns") is not None:
                    over_prog = e[f"{kind}_prog_ns"] - e["floor_prog_ns"]
                prog_ok = None if over_prog is None else over_prog <= goal
                both = f"wall {verdict(ok)}, prog {verdict(prog_ok)}"
                extra = ""
                if kind == "counting" and e.get("counted") is not None:
                    extra = f", {e['counted']:,} counted"
                    if "stats_runs" in r:       # every getppid of every round
                        want = r["calls"] * (r["runs"] + r["stats_runs"])
                        extra += " (all)" if e["counted"] == want else f" of {want:,}"
                rows.append((f"**pybpfload {kind}**: {what}{extra}", hook, num(ns),
                             num(ns - bare, "{:+.1f}"), num(ns - floor, "{:+.1f}"),
                             num(e.get(f"{kind}_prog_ns"), "{:.1f}") +
                             ("" if over_prog is None else f" ({over_prog:+.1f})"),
                             f"≤ +{goal}: {both}"))
                goals.append((f"syscalls {kind} ≤ {hook} floor + {goal} ns "
                              f"(`{name}`, {e['key']})",
                              f"{ns - floor:+.1f} ns wall" + (
                                  "" if over_prog is None else f", {over_prog:+.1f} ns prog"),
                              both))
        tp_floor = r.get("floor_tp")
        for key, label, hook in PEERS_SYSCALLS:
            ns = r.get(key)
            if ns is None:
                note = ("cannot run here: " + self.bcc_why()) if key.endswith("bpfcc") \
                    else "did not run (not installed, or never attached)"
                rows.append((label, hook, "n/a", "", "", "", note))
                continue
            rows.append((label, hook, num(ns), num(ns - bare, "{:+.1f}"),
                         "" if tp_floor is None else num(ns - tp_floor, "{:+.1f}"), "", ""))
        self.table(["", "hook", "wall ns / call", "over bare", "over its hook's floor",
                    "prog ns / run (over floor)", "goal"], rows)
        self.add("The peers' \"over its hook's floor\" is against the empty classic "
                 "tracepoint program; libbpf-tools `syscount` attaches two programs "
                 "(sys_enter and sys_exit), so it pays that floor twice.", "")
        self.image(PLOT_SYSCALLS, "ns per getppid: bare, floors, pybpfload, peers")
        if any(p.endswith("syscalls.bpf.o") for p in self.raw["machine"].get("uncommitted", [])):
            self.add("Measured with an uncommitted `prebuilt/syscalls.bpf.o` (work in "
                     "progress in the checkout at the time): not the committed counter.", "")
        if any(bare > wall for _, wall in floors.values()):
            self.add("The bare loop measured slower than a floor here: the noise of the "
                     "shared machine is of the order of the differences; read the wall "
                     "overheads as ± that (the prog column is not affected).", "")

    def bcc_why(self):
        """Why a BCC tool did not run: it compiles its C against this kernel's headers."""
        m = self.raw["machine"]
        headers = m.get("kernel_headers")
        if headers is None and m["kernel"] == platform.release():    # an older results.json
            headers = any(os.path.exists(p) for p in (
                f"/lib/modules/{m['kernel']}/build", "/sys/kernel/kheaders.tar.xz"))
        if headers is False:
            return (f"BCC compiles its C on the target and needs this kernel's headers "
                    f"(`/lib/modules/{m['kernel']}/build` or `/sys/kernel/kheaders.tar.xz`), "
                    f"which this kernel does not have")
        return "BCC compiles its C on the target against this kernel's headers; it failed"

    def classify(self, goals):
        self.add("## classify (`bench/classify_bench.py`)", "")
        if self.missing("classify"):
            goals.append(("classify attached ≤ 100 ms", "n/a", verdict(None)))
            goals.append(("classify RSS ≤ 25 MB", "n/a", verdict(None)))
            goals.append(("exec storm: 100% reported or counted lost", "n/a", verdict(None)))
            return
        r = self.res["classify"]
        n = r["storm_execs"]
        self.add(f"Each tool in its own runs.  Ready: launch → attached (classify: its "
                 f"`--ready-file` appears; the peers: their first line, printed once "
                 f"attached), best of {r['runs']}.  RSS: the tool's VmHWM, the largest of "
                 f"those runs.  Storms: {r['parallel']} busybox `sh` loops exec'ing "
                 f"`{r['path']}` {n:,} times in all, on the host and inside a runc "
                 f"container; reported = output lines naming that path, lost = the "
                 f"tool's own count of lost events (`?`: the tool does not count them).  "
                 f"{r['cpus']} shared CPUs.", "")
        seen = {t["tool"]: t for t in r["tools"]}
        rows = []
        for t in r["tools"] + [{"tool": p, "error": None} for p in PEERS_CLASSIFY
                               if p not in seen]:
            name = t["tool"]
            label = f"**pybpfload {name}**" if name.startswith("classify") else PEER_LABELS.get(
                name, name)
            if "error" in t:
                if t["error"] is None:
                    why = "not installed"
                elif name.endswith("bpfcc"):
                    why = "cannot run here: " + self.bcc_why()
                else:
                    why = "cannot run here: " + md_cell(t["error"][:160])
                rows.append((label, "n/a", "n/a", why, "", "", "", "", ""))
                continue
            cells = [label, num(t["ready_ms"], "{:.0f}", " ms"), num(t["rss_mb"], unit=" MB")]
            for where in ("host", "container"):
                s = t[where]
                cells += [f"{s['rate']:,}", f"{s['reported']:,} ({pct(s['reported'], n)})",
                          "?" if s["lost"] is None else f"{s['lost']:,}"]
            rows.append(cells)
        self.table(["tool", "ready", "RSS (VmHWM)", "host execs/s", "host reported",
                    "host lost", "container execs/s", "container reported",
                    "container lost"], rows)
        ours = seen.get("classify")
        if not ours or "error" in ours:
            why = "did not run" if not ours else md_cell(ours["error"][:160])
            for g in ("classify attached ≤ 100 ms", "classify RSS ≤ 25 MB",
                      "exec storm: 100% reported or counted lost"):
                goals.append((g, why, verdict(None)))
        else:
            goals.append(("classify attached ≤ 100 ms", num(ours["ready_ms"], "{:.0f}", " ms"),
                          verdict(ours["ready_ms"] <= 100)))
            goals.append(("classify RSS ≤ 25 MB", num(ours["rss_mb"], unit=" MB"),
                          verdict(ours["rss_mb"] <= 25)))
            for where in ("host", "container"):
                s = ours[where]
                lost = s["lost"] or 0
                goals.append((f"classify {where} exec storm: 100% reported or counted lost",
                              f"{s['reported']:,} + {lost:,} lost of {n:,}",
                              verdict(s["reported"] + lost >= n)))
        if r.get("storm"):
            self.image(PLOT_STORM, "exec storm: share reported, lost, missing per tool")

    def soak(self, goals):
        self.add("## Soak: classify under an exec storm and container churn "
                 "(`bench/soak.py`)", "")
        if self.missing("soak"):
            return
        r = self.res["soak"]
        rss = r["rss_kb"]
        self.add(f"{r['seconds']:.0f} s of `classify --json` while one thread execs "
                 f"`/bin/true` in fresh cgroups and another starts and removes runc "
                 f"containers.  (The full soak: `sudo python3 bench/soak.py --minutes 30`.)",
                 "")
        covered = r["storm_reported"] + max(r["lost"], 0)
        growth = (rss[-1] - rss[0]) / 1024 if len(rss) >= 2 else None
        self.table(["", "measured"], [
            ("storm execs", r["storm_execs"]),
            ("reported (marker seen in the output)", r["storm_reported"]),
            ("counted lost", r["lost"]),
            ("containers started and removed", r["containers"]),
            ("classify VmRSS, first → last sample",
             f"{rss[0] / 1024:.1f} → {rss[-1] / 1024:.1f} MB" if rss else "n/a"),
        ])
        if not (self.res.get("classify") or {}).get("storm"):
            self.image(PLOT_STORM, "exec storm: share reported, lost, missing")
        ok = covered >= r["storm_execs"]
        goals.append(("soak: every storm exec reported or counted lost",
                      f"{r['storm_reported']} + {r['lost']} of {r['storm_execs']}", verdict(ok)))
        if growth is not None:
            goals.append(("soak: classify RSS flat after warm-up (≤ +8 MB)",
                          f"{growth:+.1f} MB", verdict(growth <= 8)))
        if rss:
            goals.append(("soak: classify RSS ≤ 25 MB", f"{max(rss) / 1024:.1f} MB (max)",
                          verdict(max(rss) / 1024 <= 25)))

    def render(self):
        goals = []
        body = Report(self.raw, self.plots)
        for section in ("btf", "core", "rings", "load", "syscalls", "classify", "soak"):
            getattr(body, section)(goals)
        self.machine()
        self.goals_summary(goals)
        self.lines.extend(body.lines)
        return "\n".join(self.lines).rstrip() + "\n"


# ---------------------------------------------------------------- plots

def _hbars(ax, bars, xlabel, fmt, none_text="did not run"):
    """Horizontal bars [(label, value or None, color, goal x or None)], top to bottom;
    each goal drawn as a black tick across its bar."""
    bars = bars[::-1]
    vals = [0.0 if v is None else v for _, v, _, _ in bars]
    marks = [g for _, _, _, g in bars]
    ax.barh([b[0] for b in bars], vals, color=[b[2] for b in bars])
    lo = min(vals + [m for m in marks if m is not None] + [0.0])
    hi = max(vals + [m for m in marks if m is not None] + [1.0])
    span = hi - lo
    for i, ((_, v, _, _), x, m) in enumerate(zip(bars, vals, marks)):
        ax.text(max(x, 0) + span * 0.01, i, none_text if v is None else fmt(v), va="center",
                fontsize=8)
        if m is not None:
            ax.plot([m, m], [i - 0.42, i + 0.42], color="black", lw=1.6)
    ax.axvline(0, color="black", lw=0.8)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlim(lo - span * 0.05, hi + span * 0.35)
    ax.set_xlabel(xlabel, fontsize=9)


def plot_syscalls(r, path):
    """Left: wall ns added per getppid() over the bare loop (absolute ns beside them).
    Right: each program's own ns per run (BPF run-time statistics).  Each of our bars
    carries a tick at its goal: its own hook's floor + 30 / + 15 ns."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bare = r["bare"]
    prog_ns = r.get("prog_ns") or {}
    wall, prog = [], []
    for label, ns in floors_of(r).values():
        wall.append((f"floor: empty {label}", ns - bare, "#90caf9", None, ns))
        prog.append((f"floor: empty {label}", prog_ns.get(f"floor: empty {label}"), "#90caf9",
                     None))
    for name, e in counter_entries(r):
        floor = e.get("floor", r["floor_raw_tp"])
        key = e["key"].replace(" id", "")
        for kind, goal, color in (("counting", 30, "#2e7d32"), ("skipped", 15, "#81c784")):
            label = f"{name} {kind} ({key})"
            wall.append((label, e[kind] - bare, color, floor + goal - bare, e[kind]))
            fp = e.get("floor_prog_ns")
            prog.append((label, e.get(f"{kind}_prog_ns"), color,
                         None if fp is None else fp + goal))
    for key, label, _ in PEERS_SYSCALLS:
        ns = r.get(key)
        wall.append((label.replace("`", ""), None if ns is None else ns - bare, "#ef6c00",
                     None, ns))
        prog.append((label.replace("`", ""), None, "#ef6c00", None))    # not our programs
    absolute = {w[0]: w[4] for w in wall}
    has_prog = any(p[1] is not None for p in prog)
    fig, axes = plt.subplots(1, 2 if has_prog else 1, figsize=(13 if has_prog else 9,
                             0.36 * len(wall) + 2.1), dpi=80, sharey=False,
                             gridspec_kw={"width_ratios": [3, 2]} if has_prog else None)
    axes = list(axes) if has_prog else [axes]
    _hbars(axes[0], [w[:4] for w in wall],
           f"wall ns added per getppid() over the bare loop ({bare:.0f} ns); lower is better",
           lambda v: f"{v:+.0f}")
    for t in axes[0].texts:           # add the absolute ns after each overhead
        lab = t.get_text()
        if lab != "did not run":
            y = int(round(t.get_position()[1]))
            name = [w[0] for w in wall][::-1][y]
            t.set_text(f"{lab} ns  ({absolute[name]:.0f})")
    axes[0].set_title(f"wall: min of {r['runs']} rounds of {r['calls']:,} calls, "
                      f"{r['cpus']} shared CPUs", fontsize=10)
    if has_prog:
        _hbars(axes[1], prog, "program ns per run (BPF run-time statistics)",
               lambda v: f"{v:.0f} ns", none_text="not measured (a peer)")
        axes[1].set_yticklabels([])       # the same rows as on the left
        axes[1].set_title("prog: the program's own time", fontsize=10)
    axes[0].plot([], [], color="black", lw=1.6,
                 label="goal: the same hook's floor + 30 ns (counting) / + 15 ns (skipped)")
    fig.suptitle("Cost per system call: pybpfload's counter, the empty-program floors, "
                 "the peers", fontsize=11)
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.955), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path)
    plt.close(fig)


def storm_series(res):
    """[(tool label, rate label, reported share, lost share)] from classify or soak."""
    c = res.get("classify") or {}
    series = []
    for row in c.get("storm", []):
        total = row.get("execs") or 0
        if total:
            tool = row["tool"] + (f" ({row['where']})" if row.get("where") else "")
            rate = row.get("rate")
            rate = f"{rate:,} execs/s" if isinstance(rate, (int, float)) else str(rate or "")
            rep = min(1.0, row.get("reported", 0) / total)
            series.append((tool, rate, rep, min(1.0 - rep, (row.get("lost") or 0) / total)))
    if series:      # the tools that could not run here, as such
        series += [(t["tool"], "did not run", None, None) for t in c.get("tools", [])
                   if "error" in t]
    if not series and "soak" in res:
        s = res["soak"]
        if s["storm_execs"]:
            series.append(("pybpfload classify (soak)", "as fast as possible",
                           min(1.0, s["storm_reported"] / s["storm_execs"]),
                           max(s["lost"], 0) / s["storm_execs"]))
    return series


def plot_storm(series, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [f"{tool}\n{rate}" for tool, rate, _, _ in series]
    ran = [s[2] is not None for s in series]
    rep = [100 * s[2] if ok else 0.0 for s, ok in zip(series, ran)]
    lost = [100 * s[3] if ok else 0.0 for s, ok in zip(series, ran)]
    gone = [max(0.0, 100 - a - b) if ok else 0.0 for a, b, ok in zip(rep, lost, ran)]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(series) + 1.6), dpi=80)
    y = range(len(series))[::-1]
    ax.barh(list(y), rep, color="#2e7d32", label="reported")
    ax.barh(list(y), lost, left=rep, color="#fbc02d", label="counted lost")
    ax.barh(list(y), gone, left=[a + b for a, b in zip(rep, lost)], color="#c62828",
            label="missing, not counted")
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels, fontsize=8)
    for yi, a, ok in zip(y, rep, ran):
        ax.text(1, yi, f"{a:.1f}%" if ok else "could not run here", va="center",
                color="white" if ok else "black", fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the storm's execs (%)")
    ax.set_title("Exec storm: what each tool reported", fontsize=11, pad=22)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render(raw):
    res = raw["results"]
    plots = []
    try:
        if "syscalls" in res:
            plot_syscalls(res["syscalls"], os.path.join(BENCH, PLOT_SYSCALLS))
            plots.append(PLOT_SYSCALLS)
        series = storm_series(res)
        if series:
            plot_storm(series, os.path.join(BENCH, PLOT_STORM))
            plots.append(PLOT_STORM)
    except ImportError:
        print("run_all: no plots: matplotlib is not installed")
    text = Report(raw, plots).render()
    with open(RESULTS, "w") as f:
        f.write(text)
    print(f"run_all: wrote {os.path.relpath(RESULTS, ROOT)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite RESULTS.md and the plots from build/bench/results.json")
    ap.add_argument("--no-install", action="store_true", help="do not apt/pip install peers")
    ap.add_argument("--only", action="append", default=[], choices=[s[0] for s in STEPS],
                    help="run only this benchmark (repeatable); the others keep their "
                         "numbers from the last run")
    args = ap.parse_args()
    if args.render_only:
        with open(RAW) as f:
            raw = json.load(f)
    else:
        if os.geteuid() != 0:
            sys.exit("bench/run_all.py: needs root (the kernel benchmarks load BPF); "
                     "run it as `sudo make bench`")
        if not args.no_install:
            ensure_tools()
        raw = run_all(set(args.only))
        if args.only and os.path.exists(RAW):   # a subset: keep the others' last numbers
            with open(RAW) as f:
                old = json.load(f)
            for key in ("results", "errors", "seconds"):
                for name in args.only:
                    old[key].pop(name, None)
                old[key].update(raw[key])
            for key in ("date", "kernel_headers"):
                old["machine"][key] = raw["machine"][key]
            raw = old
        os.makedirs(os.path.dirname(RAW), exist_ok=True)
        with open(RAW, "w") as f:
            json.dump(raw, f, indent=1)
    render(raw)


if __name__ == "__main__":
    main()
