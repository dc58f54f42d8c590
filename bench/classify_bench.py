"""``classify`` next to its peers: time to attached, peak memory, exec storms.

For each tool — ``python -m pybpfload classify --json``, libbpf-tools
``execsnoop`` (Debian ``libbpf-tools``), BCC's ``execsnoop-bpfcc``
(``bpfcc-tools``) and a one-line ``bpftrace`` program on
``tracepoint:sched:sched_process_exec`` — in its own run:

* ready: launch -> attached.  classify: its ``--ready-file`` appears; the
  peers: their first line on stdout (the header, or bpftrace's BEGIN line,
  printed once their probes are attached).
* RSS: VmHWM of the tool's process at the end.
* storms: a busybox ``sh`` loop exec'ing ``/bin/././true`` (a path nobody
  else uses) STORM times, on the host and inside a runc container started
  with ``tests/runtimes.py``; reported = lines naming that path, lost = the
  tool's own lost count where it reports one (``?`` where it does not).

Prints numbers beside the goals (attached <= 100 ms, RSS <= 25 MB, a storm
100% reported or every miss counted as lost); asserts nothing.  Python is run
with precompiled bytecode (a private pycache), as an installed package is.
Run as root: ``python3 bench/classify_bench.py`` (STORM=N, RUNS=N to change);
``--json`` prints one JSON document instead of the table: ``tools`` (one
entry per tool: ready_ms, rss_mb, per-storm rate/execs/reported/lost, or the
error that kept it from running) and ``storm`` (one row per tool and storm:
``{tool, where, rate, execs, reported, lost}``; lost is null where the tool
does not count its losses).
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

STORM = int(os.environ.get("STORM", "4000"))
RUNS = int(os.environ.get("RUNS", "3"))
PARALLEL = int(os.environ.get("PARALLEL", "2"))       # loops at once (STORM is their sum)
TRUE = "/bin/././true"
LOOP = (f"for j in $(seq {PARALLEL}); do (i=0; while [ $i -lt {STORM // PARALLEL} ]; do {TRUE}; "
        f"i=$((i+1)); done) & done; wait")
BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def vm_hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def default_sigint():
    """In the tool's process: SIGINT back to its default.  A shell's background job
    (``make bench &``) starts with SIGINT ignored, which every child inherits, and
    Python then never turns SIGINT into KeyboardInterrupt: the tool could not be
    stopped the way the bench stops it, and would not print its lost count."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Tool:
    """One tool run: started, waited for, stopped; stdout/stderr in files."""

    def __init__(self, name, argv, ready_file=None, env=None, ready_text=None):
        self.name, self.argv, self.ready_file, self.env = name, argv, ready_file, env
        self.ready_text = ready_text

    def _ready(self):
        if self.ready_file:
            return os.path.exists(self.ready_file)
        with open(self.out, "rb") as f:
            return self.ready_text.encode() in f.read(4096)

    def start(self, workdir):
        self.out = os.path.join(workdir, self.name + ".out")
        self.err = os.path.join(workdir, self.name + ".err")
        if self.ready_file and os.path.exists(self.ready_file):
            os.unlink(self.ready_file)
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            t0 = time.monotonic()
            self.proc = subprocess.Popen(self.argv, stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=ROOT, preexec_fn=default_sigint)
        deadline = t0 + 120
        ready = False
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self._ready():
                ready = True
                break
            time.sleep(0.001)
        self.ready_ms = (time.monotonic() - t0) * 1000
        if not ready:
            self.proc.kill()
            self.proc.wait()
            with open(self.out, "rb") as o, open(self.err, "rb") as e:
                text = (o.read() + e.read()).decode("utf-8", "replace")
            raise RuntimeError(f"{self.name} did not attach: {text.strip()[-300:]}")
        time.sleep(0.2)
        return self

    def stop(self):
        self.hwm = vm_hwm(self.proc.pid)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with open(self.out, "rb") as f:
            self.stdout = f.read().decode("utf-8", "replace")
        with open(self.err, "rb") as f:
            self.stderr = f.read().decode("utf-8", "replace")
        return self

    def reported(self):
        # the storm's own shell command line names the path too: not counted
        return sum(1 for line in self.stdout.splitlines() if TRUE in line and "while" not in line)

    def lost(self):
        if self.name.startswith("classify"):
            m = re.search(r"(\d+) lost$", self.stderr.strip())
            return int(m.group(1)) if m else None
        if self.name == "execsnoop":
            # libbpf-tools: "Lost N events on CPU #C!"
            counts = re.findall(r"[Ll]ost (\d+) events", self.stderr)
            return sum(map(int, counts))
        if self.name == "execsnoop-bpfcc":
            counts = re.findall(r"[Pp]ossibly lost (\d+) samples", self.stderr + self.stdout)
            return sum(map(int, counts))
        m = re.findall(r"(\d+) events lost", self.stderr + self.stdout)     # bpftrace
        return sum(map(int, m))


def tools(ready_file, pyenv, pages=None):
    classify = [sys.executable, "-m", "pybpfload", "classify", "--json", "--ready-file", ready_file]
    if pages:
        classify += ["--pages", str(pages)]
    out = [Tool("classify" + (f"(pages={pages})" if pages else ""), classify, ready_file, pyenv)]
    # the peers print their header once attached; stdio into a file is block-buffered,
    # so line-buffer it (stdbuf execs the tool in place: same pid for VmHWM)
    line = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
    if shutil.which("execsnoop") and os.path.exists("/usr/sbin/execsnoop"):
        out.append(Tool("execsnoop", line + ["/usr/sbin/execsnoop"], ready_text="PCOMM"))
    if shutil.which("execsnoop-bpfcc"):
        out.append(Tool("execsnoop-bpfcc", ["execsnoop-bpfcc"], ready_text="PCOMM",
                        env=dict(os.environ, PYTHONUNBUFFERED="1")))
    if shutil.which("bpftrace"):
        prog = ('BEGIN { printf("ready\\n"); } tracepoint:sched:sched_process_exec '
                '{ printf("%d %s %s\\n", pid, comm, str(args->filename)); }')
        out.append(Tool("bpftrace", ["bpftrace", "-e", prog], ready_text="ready"))
    return out


def storm(where, lab, container):
    t0 = time.monotonic()
    if where == "host":
        rc = subprocess.run([BUSYBOX, "sh", "-c", LOOP]).returncode
    else:
        rc = lab.exec(container, ["sh", "-c", LOOP], timeout=600).returncode
    dt = time.monotonic() - t0
    if rc != 0:
        raise RuntimeError(f"the {where} storm failed: rc={rc}")
    return STORM // PARALLEL * PARALLEL / dt


def measure(tool, lab, box, work):
    """One tool: (ready ms best of RUNS, VmHWM MB max, {where: (rate, reported, lost)})."""
    readies, hwms = [], []
    for _ in range(RUNS):
        t = tool.start(work)
        readies.append(t.ready_ms)
        t.stop()
        hwms.append(t.hwm)
    results = {}
    for where in ("host", "container"):
        tool.start(work)
        try:
            rate = storm(where, lab, box)
            time.sleep(1.0)                    # let the reader drain
        finally:
            tool.stop()
        results[where] = (rate, tool.reported(), tool.lost())
    return min(readies), max(hwms), results


def as_json(rows):
    """The measured rows as one JSON document (see the module docstring)."""
    n = STORM // PARALLEL * PARALLEL
    out = {"storm_execs": n, "parallel": PARALLEL, "runs": RUNS, "cpus": os.cpu_count(),
           "path": TRUE, "tools": [], "storm": []}
    for name, ready_ms, hwm, res in rows:
        if ready_ms is None:
            out["tools"].append({"tool": name, "error": res})
            continue
        entry = {"tool": name, "ready_ms": round(ready_ms, 1), "rss_mb": round(hwm, 1)}
        for where, (rate, rep, lost) in res.items():
            entry[where] = {"rate": round(rate), "execs": n, "reported": rep, "lost": lost}
            out["storm"].append({"tool": name, "where": where, "rate": round(rate),
                                 "execs": n, "reported": rep, "lost": lost})
        out["tools"].append(entry)
    return out


def print_table(rows):
    print(f"\nclassify vs peers: exec storms of {STORM} x {TRUE} (busybox sh loop), "
          f"best-of-{RUNS} ready, {os.cpu_count()} CPUs\n")
    head = f"{'tool':22} {'ready ms':>9} {'RSS MB':>7}   " + "   ".join(
        f"{w + ' execs/s':>16} {'reported':>9} {'lost':>6}" for w in ("host", "container"))
    print(head)
    print("-" * len(head))
    n = STORM // PARALLEL * PARALLEL
    for name, ready_ms, hwm, res in rows:
        if ready_ms is None:
            print(f"{name:22} not runnable here: {res[:90]}")
            continue
        cells = []
        for where in ("host", "container"):
            rate, rep, lost = res[where]
            cells.append(f"{rate:16.0f} {100.0 * rep / n:8.1f}% "
                         f"{('?' if lost is None else lost):>6}")
        print(f"{name:22} {ready_ms:9.0f} {hwm:7.1f}   " + "   ".join(cells))
    print("\ngoals (classify): ready <= 100 ms, RSS <= 25 MB, "
          "reported 100% or every miss counted as lost")
    for name, ready_ms, hwm, res in rows:
        if not name.startswith("classify") or ready_ms is None:
            continue
        ok_storm = all(rep + (lost or 0) >= n for _, rep, lost in res.values())
        print(f"  {name}: ready {'ok' if ready_ms <= 100 else 'MISSED'}, "
              f"RSS {'ok' if hwm <= 25 else 'MISSED'}, storms {'ok' if ok_storm else 'MISSED'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true",
                    help="print one JSON document with the measured rows instead of the table")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    from runtimes import Lab

    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    pyc = tempfile.mkdtemp(prefix="pybpfload-pyc-")
    env["PYTHONPYCACHEPREFIX"] = pyc
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "pybpfload")],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="classify-bench-")
    ready = os.path.join(work, "ready")
    rows = []
    try:
        with Lab() as lab:
            box = lab.start_runc(cmd=("sleep", "3600"))
            pages_variants = [None] + [int(p) for p in os.environ.get("PAGES", "").split(",") if p]
            names = []
            for pages in pages_variants:
                names += tools(ready, env, pages) if pages is None else tools(ready, env, pages)[:1]
            for tool in names:
                try:
                    tool.start(work).stop()          # a first start: warm caches, or fail
                    rows.append((tool.name, *measure(tool, lab, box, work)))
                except RuntimeError as exc:
                    rows.append((tool.name, None, None, " ".join(str(exc).split())))
                    print(f"  cannot run {tool.name}: {exc}", file=sys.stderr)
                    continue
                print(f"  done: {tool.name}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(pyc, ignore_errors=True)

    if args.json:
        print(json.dumps(as_json(rows)))
    else:
        print_table(rows)


if __name__ == "__main__":
    main()
