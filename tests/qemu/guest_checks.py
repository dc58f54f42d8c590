"""The kernel-facing checks, run once inside a kernel; one JSON report out.

Run by ``tests/test_guest_kernel.py`` inside the 6.1 guest (and on the host,
for the side-by-side numbers).  Each check catches its own errors and records
them, so one failure does not hide the others; the test decides what is
wrong.  Sections of the report:

``kernel``    uname release
``features``  what ``pybpfload.kernel.features`` probes pick on this kernel
``objects``   every prebuilt object: loaded and attached with our loader,
              its CO-RE results (description -> values, and (program, insn)
              -> value for the comparison with libbpf)
``libbpf``    the same objects through ``bpftool -d prog loadall``: libbpf's
              CO-RE patch lines, (program, insn) -> value
``classify``  the records ``classify --json`` printed for a host exec and an
              ``unshare -p -f`` exec
``syscalls``  syscalls.bpf.o counting N getppid() of a child in a watched
              cgroup v2
``btf``       the kernel BTF, lzma-compressed, base64 (only with --btf)

Usage: python3 tests/qemu/guest_checks.py [--only a,b] [--btf] [--out FILE]
(default output: $GUEST_RESULT, else stdout).
"""

import argparse
import base64
import ctypes
import json
import lzma
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

PREBUILT = ROOT / "prebuilt"
CORE_TEST_OBJECT = ROOT / "tests" / "objects" / "core_kernel.bpf.o"
HOST_MARKER = "pybpfload-guest-host-marker"
NS_MARKER = "pybpfload-guest-ns-marker"
READY_MARKER = "pybpfload-guest-ready"
GETPPID_CALLS = 1000
NR_GETPPID = 110            # x86_64
PATCH_LINE = re.compile(r"prog '(\w+)': relo #\d+: patched insn #(\d+) \([^)]*\) "
                        r"(?:imm|off|imm64) (\d+) -> (\d+)$")
POISON_LINE = re.compile(r"prog '(\w+)': relo #\d+: substituting insn #(\d+) w/ invalid insn")


def objects():
    return sorted(PREBUILT.glob("*.bpf.o")) + [CORE_TEST_OBJECT]


def check_features():
    from pybpfload.kernel import features as f
    out = {}
    for name in ("has_perf_link", "has_ringbuf", "has_raw_tracepoint", "has_tp_btf",
                 "has_get_current_task_btf", "has_batch_ops", "has_map_freeze",
                 "memlock_charged"):
        fn = getattr(f, name, None)
        if fn is not None:
            out[name] = bool(fn())
    out["unsupported_btf_kinds"] = sorted(f.unsupported_btf_kinds())
    out["possible_cpus"] = len(f.possible_cpus())
    return out


def check_objects():
    from pybpfload.kernel.bpf_object import BPFObject, kernel_btf
    t0 = time.monotonic()
    kernel_btf()
    out = {"_kernel_btf_seconds": round(time.monotonic() - t0, 2)}
    for path in objects():
        rec = {"loaded": False, "attached": False}
        t0 = time.monotonic()
        try:
            with BPFObject(path) as obj:
                obj.load()
                rec["loaded"] = True
                rec["programs"] = sorted(obj.programs)
                core = {}
                patched = {}
                for pname, lp in obj.programs.items():
                    for r in lp.core_results:
                        core.setdefault(r.description, set()).add(
                            "poisoned" if r.poisoned else r.value)
                        if not r.poisoned:
                            patched[f"{pname}:{r.insn_index}"] = r.value
                rec["core"] = {k: sorted(v, key=str) for k, v in core.items()}
                rec["patched"] = patched
                if path.parent == PREBUILT:
                    obj.attach()
                    rec["attached"] = True
        except Exception as exc:
            rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["seconds"] = round(time.monotonic() - t0, 2)
        out[path.name] = rec
    return out


def check_libbpf():
    """libbpf's CO-RE patches for the same objects (bpftool -d prog loadall)."""
    out = {}
    if shutil.which("bpftool") is None:
        return {"_skipped": "no bpftool"}
    for path in objects():
        pin_dir = tempfile.mkdtemp(prefix="pybpfload-libbpf-", dir="/sys/fs/bpf")
        os.rmdir(pin_dir)
        try:
            proc = subprocess.run(["bpftool", "-d", "prog", "loadall", str(path), pin_dir],
                                  capture_output=True, text=True, timeout=300)
        finally:
            shutil.rmtree(pin_dir, ignore_errors=True)
        patched, poisoned = {}, []
        for line in proc.stderr.splitlines():
            m = PATCH_LINE.search(line)
            if m:
                patched[f"{m.group(1)}:{m.group(2)}"] = int(m.group(4))
            m = POISON_LINE.search(line)
            if m:
                poisoned.append(f"{m.group(1)}:{m.group(2)}")
        rec = {"returncode": proc.returncode, "patched": patched, "poisoned": poisoned}
        if proc.returncode:
            rec["stderr_tail"] = proc.stderr[-1500:]
        out[path.name] = rec
    return out


def _reader(stream, lines):
    for line in stream:
        lines.append(line)


def _seen(lines, marker):
    """The record of the exec of ``/bin/echo MARKER`` (not of the unshare that runs it)."""
    for line in list(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("args") == ["/bin/echo", marker]:
            return rec
    return None


def check_classify():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "pybpfload", "classify", "--json",
                             "--duration", "240"], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, errs = [], []
    threads = [threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True),
               threading.Thread(target=_reader, args=(proc.stderr, errs), daemon=True)]
    for t in threads:
        t.start()
    out = {}
    t0 = time.monotonic()
    try:
        while _seen(lines, READY_MARKER) is None:
            if proc.poll() is not None or time.monotonic() - t0 > 180:
                raise RuntimeError("classify never saw the readiness exec: "
                                   + "".join(errs)[-1000:])
            subprocess.run(["/bin/echo", READY_MARKER], stdout=subprocess.DEVNULL)
            time.sleep(0.5)
        out["ready_seconds"] = round(time.monotonic() - t0, 1)
        subprocess.run(["/bin/echo", HOST_MARKER], stdout=subprocess.DEVNULL, check=True)
        subprocess.run(["unshare", "-p", "-f", "/bin/echo", NS_MARKER],
                       stdout=subprocess.DEVNULL, check=True)
        t1 = time.monotonic()
        while time.monotonic() - t1 < 30 and (_seen(lines, HOST_MARKER) is None
                                              or _seen(lines, NS_MARKER) is None):
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for t in threads:
            t.join(5)
    out["host"] = _seen(lines, HOST_MARKER)
    out["unshare"] = _seen(lines, NS_MARKER)
    out["returncode"] = proc.returncode
    out["stderr_tail"] = "".join(errs)[-600:]
    return out


def _cgroup_v2_root():
    for cand in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(cand, "cgroup.procs")) and \
                os.path.exists(os.path.join(cand, "cgroup.subtree_control")):
            return cand
    raise RuntimeError("no cgroup v2 hierarchy mounted")


def check_syscalls():
    from pybpfload.kernel.bpf_object import BPFObject
    from pybpfload.tools.syscalls import counter_program
    cg = tempfile.mkdtemp(prefix="pybpfload-guest-", dir=_cgroup_v2_root())
    libc = ctypes.CDLL(None, use_errno=True)
    out = {"calls": GETPPID_CALLS}
    try:
        cgid = os.stat(cg).st_ino
        with BPFObject(PREBUILT / "syscalls.bpf.o") as obj:
            out["program"] = counter_program()      # the one syscalls runs here
            obj.load([out["program"]])
            stride = obj.get_variable("max_syscalls")
            if isinstance(stride, (bytes, bytearray)):
                stride = int.from_bytes(stride, "little")
            obj.map("watched").update(cgid, 1)
            obj.attach()
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:        # the child: join the cgroup, make the calls, leave
                try:
                    os.close(w)
                    os.read(r, 1)
                    for _ in range(GETPPID_CALLS):
                        libc.syscall(NR_GETPPID)
                finally:
                    os._exit(0)
            os.close(r)
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write(str(pid))
            os.write(w, b"x")
            os.close(w)
            os.waitpid(pid, 0)
            counts = obj.map("counts")
            per_cpu = counts.lookup(1 * stride + NR_GETPPID)
            out["getppid"] = sum(int.from_bytes(v, "little") for v in per_cpu)
            total = 0
            for nr in range(0, 512):
                v = counts.lookup(1 * stride + nr)
                total += sum(int.from_bytes(x, "little") for x in v)
            out["all_syscalls_in_cgroup"] = total
    finally:
        os.rmdir(cg)
    return out


def check_btf():
    data = pathlib.Path("/sys/kernel/btf/vmlinux").read_bytes()
    packed = lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
    return {"raw_size": len(data), "xz_size": len(packed),
            "xz_base64": base64.b64encode(packed).decode()}


CHECKS = {"features": check_features, "objects": check_objects, "libbpf": check_libbpf,
          "classify": check_classify, "syscalls": check_syscalls, "btf": check_btf}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated checks (default: all but btf)")
    ap.add_argument("--btf", action="store_true", help="include the compressed kernel BTF")
    ap.add_argument("--out", help="write the JSON here (default: $GUEST_RESULT or stdout)")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else [n for n in CHECKS if n != "btf"]
    if args.btf and "btf" not in names:
        names.append("btf")
    report = {"kernel": os.uname().release, "seconds": {}}
    try:
        import hashlib
        report["btf_sha256"] = hashlib.sha256(
            pathlib.Path("/sys/kernel/btf/vmlinux").read_bytes()).hexdigest()
    except OSError:
        report["btf_sha256"] = None
    for name in names:
        t0 = time.monotonic()
        try:
            report[name] = CHECKS[name]()
        except Exception as exc:
            report[name] = {"_error": f"{type(exc).__name__}: {exc}",
                            "_traceback": traceback.format_exc()[-2000:]}
        report["seconds"][name] = round(time.monotonic() - t0, 1)
        print(f"guest_checks: {name} done in {report['seconds'][name]}s", file=sys.stderr,
              flush=True)
    text = "@@REPORT-BEGIN@@\n" + json.dumps(report, sort_keys=True) + "\n@@REPORT-END@@\n"
    dest = args.out or os.environ.get("GUEST_RESULT")
    if dest:
        with open(dest, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
