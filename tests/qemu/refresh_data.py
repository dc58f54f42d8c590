"""Regenerate the 6.1 test data from a real boot, and the README's kernel table.

    python3 tests/qemu/refresh_data.py          # boots the guest once (~40 s)

writes ``tests/data/btf/vmlinux-<release>.btf.xz`` (the guest's
/sys/kernel/btf/vmlinux, xz) and ``tests/data/btf/core-<release>.json``
(libbpf's CO-RE patches for every prebuilt object in that kernel, read from
``bpftool -d prog loadall`` in the guest, plus the feature probes), then
prints the "Kernels tested" rows for this host and the guest, made from
``pybpfload.kernel.features`` as probed on each.
"""

import base64
import json
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT / "tests" / "data" / "btf"
sys.path.insert(0, str(HERE))

import guest  # noqa: E402

CHECKS_SCRIPT = "tests/qemu/guest_checks.py"
TABLE_HEADER = ("| kernel | BTF | attach | ring buffer | raw tracepoints | tp_btf | memlock charged "
                "| BTF kinds sanitized |\n| --- | --- | --- | --- | --- | --- | --- | --- |")


def parse_report(text):
    """The JSON between the report markers (bytes or str)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    begin, end = "@@REPORT-BEGIN@@\n", "\n@@REPORT-END@@"
    if begin not in text or end not in text:
        raise ValueError("no report in the guest's result channel")
    return json.loads(text.split(begin, 1)[1].split(end, 1)[0])


def run_in_guest(btf=True, timeout=600):
    """Boot the guest once, run every check; (GuestRun, report or None)."""
    argv = ["python3", CHECKS_SCRIPT] + (["--btf"] if btf else [])
    r = guest.run(argv, timeout=timeout)
    try:
        return r, parse_report(r.result)
    except ValueError:
        return r, None


def run_on_host(only="features,objects"):
    out = subprocess.run([sys.executable, str(HERE / "guest_checks.py"), "--only", only],
                         capture_output=True, text=True, cwd=str(ROOT))
    return parse_report(out.stdout)


def yes(v):
    return "yes" if v else "no"


def table_row(report, btf_size):
    f = report["features"]
    btf_note = f"yes ({btf_size / 1e6:.1f} MB)" if btf_size else "no"
    kinds = ", ".join(f["unsupported_btf_kinds"]) or "none"
    return (f"| {report['kernel']} | {btf_note} | "
            f"{'perf link' if f['has_perf_link'] else 'ioctl'} | {yes(f['has_ringbuf'])} | "
            f"{yes(f['has_raw_tracepoint'])} | {yes(f.get('has_tp_btf'))} | "
            f"{yes(f['memlock_charged'])} | {kinds} |")


def btf_path(release):
    return DATA / f"vmlinux-{release}.btf.xz"


def core_path(release):
    return DATA / f"core-{release}.json"


def object_digests():
    """sha256 of the objects whose insn numbers the libbpf data refers to."""
    import hashlib
    paths = sorted((ROOT / "prebuilt").glob("*.bpf.o")) + [ROOT / "tests/objects/core_kernel.bpf.o"]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def write_data(report):
    release = report["kernel"]
    btf = report["btf"]
    btf_path(release).write_bytes(base64.b64decode(btf["xz_base64"]))
    data = {"kernel": release, "source": "bpftool -d prog loadall in the guest (libbpf)",
            "features": report["features"], "objects_sha256": object_digests(),
            "libbpf": {name: {"patched": rec["patched"], "poisoned": rec["poisoned"]}
                       for name, rec in report["libbpf"].items() if not name.startswith("_")}}
    core_path(release).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def main():
    r, report = run_in_guest(btf=True)
    if report is None or r.returncode:
        sys.stderr.write(r.output[-3000:])
        return 1
    write_data(report)
    host = run_on_host("features")
    print(TABLE_HEADER)
    print(table_row(host, os.path.getsize("/sys/kernel/btf/vmlinux")))
    print(table_row(report, report["btf"]["raw_size"]))
    print(f"wrote {btf_path(report['kernel'])} and {core_path(report['kernel'])}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
