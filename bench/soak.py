"""Soak classify: an exec storm plus container churn, RSS and losses over time.

    sudo python3 bench/soak.py [--minutes 30] [--seconds S] [--interval 10]

Runs ``python -m pybpfload classify --json`` (its output is counted, not
kept) while (1) a storm thread execs short-lived processes, each in one of
many distinct cgroups (``pybpfload-test-<tag>/docker-<id>.scope`` in the v2
and cpu hierarchies, created and removed as it goes), and (2) a churn thread
starts and removes runc containers in a loop (``tests/runtimes.py`` Lab), or
creates and removes cgroups if runc is missing.  Prints, every interval, the
classify VmRSS, events reported and lost, and at the end the RSS growth after
warm-up.  Exit status 1 when classify died or its RSS grew by more than
max(8 MB, 20%) after the first interval.  Everything it creates is removed.
``--json``: the progress table goes to stderr, and stdout gets one JSON object.
"""

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests"))
CGROUP_FS = "/sys/fs/cgroup"
LOST = re.compile(r"warning: (\d+) events lost")
SUMMARY = re.compile(r"classify: (\d+) execs .* (\d+) lost")


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Cgroups:
    """Leaf cgroups under ``pybpfload-test-<tag>`` in the v2 and cpu hierarchies."""

    def __init__(self):
        self.tag = secrets.token_hex(3)
        self.tops = []
        for h in ("unified", "cpu"):
            if os.path.isdir(os.path.join(CGROUP_FS, h)):
                top = os.path.join(CGROUP_FS, h, f"pybpfload-test-{self.tag}")
                os.mkdir(top)
                self.tops.append(top)
        self.n = 0

    def make(self):
        cid = f"{self.tag}{self.n:08x}".ljust(64, "0")
        self.n += 1
        paths = [os.path.join(t, f"docker-{cid}.scope") for t in self.tops]
        for p in paths:
            os.mkdir(p)
        return paths

    @staticmethod
    def remove(paths):
        for p in paths:
            for _ in range(50):
                try:
                    os.rmdir(p)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)

    def close(self):
        for top in self.tops:
            for d in os.listdir(top):
                if os.path.isdir(os.path.join(top, d)):
                    self.remove([os.path.join(top, d)])
            self.remove([top])


def storm(cgroups, stop, counts, marker):
    """Exec /bin/true in a new cgroup each time (the cgroup removed after)."""
    while not stop.is_set():
        paths = cgroups.make()

        def enter(paths=paths):
            for p in paths:
                with open(os.path.join(p, "cgroup.procs"), "w") as f:
                    f.write("0")
        for _ in range(5):
            subprocess.run(["/bin/true", marker], preexec_fn=enter)
            counts["storm"] += 1
        cgroups.remove(paths)


def churn(stop, counts, errors):
    """runc containers started and removed in a loop (a short loop of execs inside)."""
    from runtimes import Lab, have
    if not have("runc"):
        cg = Cgroups()
        try:
            while not stop.is_set():
                Cgroups.remove(cg.make())
                counts["churn"] += 1
        finally:
            cg.close()
        return
    lab = Lab()
    try:
        while not stop.is_set():
            try:
                lab.run_short("runc", cmd=("/bin/sh", "-c", "for i in 1 2 3 4 5; do /bin/busybox true; done"))
                counts["churn"] += 1
            except Exception as exc:   # keep soaking; report at the end
                errors.append(str(exc)[:200])
                time.sleep(1)
    finally:
        lab.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, help="overrides --minutes (the suite runs ~20 s)")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--pages", type=int, default=64)
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout at the end")
    args = ap.parse_args()
    report = sys.stdout
    if args.json:                 # every text line to stderr; stdout is the JSON object only
        sys.stdout = sys.stderr
    if os.geteuid() != 0:
        sys.exit("bench/soak.py needs root")
    duration = args.seconds if args.seconds else args.minutes * 60
    tmp = tempfile.mkdtemp(prefix="pybpf-soak-")
    ready = os.path.join(tmp, "ready")
    err_path = os.path.join(tmp, "stderr")
    err_file = open(err_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "pybpfload", "classify", "--json", "--pages",
                             str(args.pages), "--ready-file", ready], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=err_file)
    reported = {"lines": 0, "markers": 0}
    marker = f"pbt-soak-{secrets.token_hex(3)}"

    def read_out():
        for line in proc.stdout:
            reported["lines"] += 1
            if marker.encode() in line:
                reported["markers"] += 1
    reader = threading.Thread(target=read_out, daemon=True)
    reader.start()
    stop = threading.Event()
    counts = {"storm": 0, "churn": 0}
    errors = []
    cgroups = None
    threads = []
    samples = []
    rc = 0
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(ready) or not os.path.getsize(ready):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("classify did not start: " + open(err_path, errors="replace").read()[-500:])
            time.sleep(0.1)
        cgroups = Cgroups()
        threads = [threading.Thread(target=storm, args=(cgroups, stop, counts, marker)),
                   threading.Thread(target=churn, args=(stop, counts, errors))]
        for t in threads:
            t.start()
        print(f"{'t/s':>6} {'VmRSS kB':>9} {'events':>8} {'lost':>6} {'storm execs':>11} "
              f"{'containers':>10}", flush=True)
        t0 = time.monotonic()
        while True:
            left = t0 + duration - time.monotonic()
            time.sleep(max(0.0, min(args.interval, left)))
            if proc.poll() is not None:
                print("classify died", file=sys.stderr)
                rc = 1
                break
            with open(err_path, errors="replace") as f:
                lost = sum(int(n) for n in LOST.findall(f.read()))
            rss = rss_kb(proc.pid)
            samples.append(rss)
            print(f"{time.monotonic() - t0:6.0f} {rss:9} {reported['lines']:8} {lost:6} "
                  f"{counts['storm']:11} {counts['churn']:10}", flush=True)
            if left <= args.interval:
                break
    finally:
        stop.set()
        for t in threads:
            t.join()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(10)
        if cgroups is not None:
            cgroups.close()
        err_file.close()
        with open(err_path, errors="replace") as f:
            err = f.read()
        shutil.rmtree(tmp, ignore_errors=True)
    m = SUMMARY.search(err)
    lost = int(m.group(2)) if m else -1
    print(f"storm: {counts['storm']} execs, {reported['markers']} reported, {lost} lost in all; "
          f"containers started and removed: {counts['churn']}")
    if errors:
        print(f"churn errors: {len(errors)}; first: {errors[0]}")
    if len(samples) >= 2:
        growth = samples[-1] - samples[0]
        print(f"VmRSS: {samples[0]} kB after warm-up, {samples[-1]} kB at the end "
              f"({growth:+} kB), max {max(samples)} kB")
        if growth > max(8192, samples[0] // 5):
            rc = 1
    if reported["markers"] + max(lost, 0) < counts["storm"]:
        print("some storm execs were neither reported nor counted as lost")
        rc = 1
    if proc.returncode not in (0, None) and rc == 0:
        rc = 1
    if args.json:
        print(json.dumps({"seconds": duration, "storm_execs": counts["storm"],
                          "storm_reported": reported["markers"], "lost": lost,
                          "events": reported["lines"], "containers": counts["churn"],
                          "churn_errors": len(errors), "rss_kb": samples, "ok": rc == 0}),
              file=report)
    return rc


if __name__ == "__main__":
    sys.exit(main())
