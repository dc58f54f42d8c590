"""Run a command under a second kernel: Debian's packaged 6.1, booted by qemu.

The guest is an initramfs only (no disk): busybox, Debian's python3.11 with
its stdlib, the project's pure-Python dependencies (pyelftools, construct)
and bpftool, plus a tiny ``/init`` that mounts proc, sysfs, devtmpfs, tracefs,
bpffs, a hybrid cgroup tree (cgroup2 at /sys/fs/cgroup/unified, the v1
``cpu,cpuacct`` hierarchy next to it), runs ``/payload-cmd`` and powers off.

* The kernel comes from ``apt-get download linux-image-6.1.0-N-cloud-amd64-
  unsigned`` (the cloud flavour boots fastest; nothing needs a disk or a
  module), unpacked with ``dpkg-deb -x`` into the cache.
* The base image (everything but the payload) is built once and cached under
  a key made of its inputs (the init script, the python/busybox/bpftool
  binaries, the dependency versions).
* Each run prepends an *uncompressed* cpio with the payload (this checkout's
  ``pybpfload/``, ``prebuilt/``, ``tests/``) to the compressed base: the
  kernel's lz4 decoder consumes whatever follows its stream, so the base
  must come last.
* The command's console output comes back over the first serial port; the
  init prints ``@@GUEST-EXIT-CODE=N@@`` before ``poweroff -f``.  A second
  serial port (``/dev/ttyS1`` in the guest, ``$GUEST_RESULT``) is written to a
  host file and returned as ``result``: a channel for data, free of console
  noise.

KVM does not work on the VMs this runs on, so qemu emulates (``-accel tcg
-cpu max``): ~5 s to reach init.  Usable from the command line::

    python3 tests/qemu/guest.py -- python3 -c 'import os; print(os.uname())'
"""

import dataclasses
import gzip
import hashlib
import io
import os
import pathlib
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE_ENV = "PYBPFLOAD_GUEST_CACHE"
KERNEL_DEB_ENV = "PYBPFLOAD_GUEST_KERNEL_DEB"
#: the kernel the committed 6.1 test data (tests/data/btf/) came from: tried first
PREFERRED_KERNEL = "linux-image-6.1.0-57-cloud-amd64-unsigned"
KERNEL_PATTERN = re.compile(r"^linux-image-6\.1\.0-(\d+)-cloud-amd64-unsigned$")
PYTHON = "/usr/bin/python3.11"
EXIT_LINE = re.compile(rb"@@GUEST-EXIT-CODE=(\d+)@@")
#: what qemu's first run showed: where the init's marker lines start
INIT_LINE = b"@@INIT-START@@"
#: the stdlib parts the guest never needs
PY_EXCLUDE = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
              "pydoc_data", "distutils", "site-packages", "dist-packages", "unittest",
              "sitecustomize.py", "config-3.11-x86_64-linux-gnu"}

INIT = r"""#!/bin/sh
export PATH=/usr/sbin:/usr/bin HOME=/root PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH=/payload GUEST_RESULT=/dev/ttyS1
mount -t proc proc /proc
echo "@@INIT-START@@ uptime=$(cut -d' ' -f1 /proc/uptime)s kernel=$(uname -r)"
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs cgroup /sys/fs/cgroup
mkdir /sys/fs/cgroup/unified /sys/fs/cgroup/cpu,cpuacct
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
mount -t cgroup -o cpu,cpuacct cgroup /sys/fs/cgroup/cpu,cpuacct
ln -s cpu,cpuacct /sys/fs/cgroup/cpu
ln -s cpu,cpuacct /sys/fs/cgroup/cpuacct
stty -F /dev/ttyS1 raw -echo 2>/dev/null
exec </dev/console >/dev/console 2>&1
cd /payload
if [ -f /payload-cmd ]; then sh /payload-cmd; rc=$?; else rc=125; fi
sync
echo "@@GUEST-EXIT-CODE=$rc@@ uptime=$(cut -d' ' -f1 /proc/uptime)s"
poweroff -f
"""


class GuestUnavailable(Exception):
    """qemu, the kernel package or an image input is missing (the reason says which)."""


@dataclasses.dataclass
class GuestRun:
    returncode: int        # the command's exit code; 124 timeout, 125 no exit line
    output: str            # the serial console (the command's stdout and stderr)
    result: bytes          # what the command wrote to $GUEST_RESULT (/dev/ttyS1)
    seconds: float         # wall time of the qemu run
    boot_seconds: float    # until the init's first line (None if never seen)
    kernel: str            # the kernel package used


def cache_dir():
    d = os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "pybpfload", "guest")
    os.makedirs(d, exist_ok=True)
    return pathlib.Path(d)


def qemu_binary():
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        raise GuestUnavailable("qemu-system-x86_64 not installed "
                               "(apt-get install --no-install-recommends qemu-system-x86)")
    return path


# -- kernel --------------------------------------------------------------------
def _unpacked_kernels(kdir):
    found = []
    for boot in kdir.glob("*/root/boot"):
        for vmlinuz in boot.glob("vmlinuz-*"):
            found.append(vmlinuz)
    return sorted(found, key=lambda p: [int(x) if x.isdigit() else x
                                        for x in re.split(r"(\d+)", p.name)])


def _unpack(deb, kdir):
    dest = kdir / deb.name.split("_")[0]
    tmp = pathlib.Path(tempfile.mkdtemp(dir=kdir))
    try:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "root")], check=True,
                       capture_output=True)
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def kernel_package_names():
    """The 6.1 cloud kernel packages apt knows, newest ABI first."""
    if shutil.which("apt-cache") is None:
        return []
    out = subprocess.run(["apt-cache", "search", "--names-only",
                          r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$"],
                         capture_output=True, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    names = [n for n in names if KERNEL_PATTERN.match(n)]
    return sorted(names, key=lambda n: -int(KERNEL_PATTERN.match(n).group(1)))


def kernel():
    """Path of the 6.1 vmlinuz (downloaded and unpacked once, then cached).

    ``$PYBPFLOAD_GUEST_KERNEL_DEB`` names a .deb to use instead; otherwise
    the package the committed test data came from is preferred, then the
    newest one apt knows."""
    kdir = cache_dir() / "kernel"
    kdir.mkdir(exist_ok=True)
    deb = os.environ.get(KERNEL_DEB_ENV)
    if deb:
        deb = pathlib.Path(deb)
        name = deb.name.split("_")[0]
        if not (kdir / name).exists():
            _unpack(deb, kdir)
        return [v for v in _unpacked_kernels(kdir) if v.parents[2].name == name][-1]
    have = _unpacked_kernels(kdir)
    for vmlinuz in have:
        if vmlinuz.parents[2].name == PREFERRED_KERNEL:
            return vmlinuz
    names = kernel_package_names()
    if have and PREFERRED_KERNEL not in names:
        return have[-1]
    if PREFERRED_KERNEL in names:
        names.remove(PREFERRED_KERNEL)
        names.insert(0, PREFERRED_KERNEL)
    if shutil.which("dpkg-deb") is None or shutil.which("apt-get") is None:
        raise GuestUnavailable("no apt-get/dpkg-deb to fetch Debian's 6.1 kernel")
    errors = []
    for name in names[:3]:
        with tempfile.TemporaryDirectory(dir=kdir) as tmp:
            proc = subprocess.run(["apt-get", "-q", "-o", "APT::Sandbox::User=root",
                                   "download", name], cwd=tmp, capture_output=True, text=True)
            debs = list(pathlib.Path(tmp).glob("*.deb"))
            if proc.returncode == 0 and debs:
                _unpack(debs[0], kdir)
                return [v for v in _unpacked_kernels(kdir) if v.parents[2].name == name][-1]
            errors.append(f"{name}: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    raise GuestUnavailable("cannot download Debian's 6.1 cloud kernel package "
                           f"({'; '.join(map(str, errors)) or 'apt knows none'}); "
                           f"set {KERNEL_DEB_ENV} to a downloaded .deb")


def kernel_config(vmlinuz):
    cfg = vmlinuz.with_name(vmlinuz.name.replace("vmlinuz-", "config-"))
    try:
        return cfg.read_text()
    except OSError:
        return ""


# -- cpio (newc) ---------------------------------------------------------------
class Cpio:
    """Writes a newc archive; entries are added in order (parents first)."""

    def __init__(self, out):
        self.out = out
        self.ino = 1
        self.seen = set()

    def _entry(self, name, mode, data=b"", nlink=1):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
        self.ino += 1
        self.out.write(hdr.encode() + name_b)
        self.out.write(b"\0" * (-(110 + len(name_b)) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))

    def dir(self, name, mode=0o755):
        if name in self.seen or name in ("", "."):
            return
        parent = os.path.dirname(name)
        if parent:
            self.dir(parent)
        self.seen.add(name)
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def file(self, name, data, mode=0o644):
        if name in self.seen:
            return
        self.dir(os.path.dirname(name))
        self.seen.add(name)
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name, target):
        if name in self.seen:
            return
        self.dir(os.path.dirname(name))
        self.seen.add(name)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def host_file(self, name, path):
        """Copy a host file (symlinks followed, executable bits kept)."""
        with open(path, "rb") as f:
            data = f.read()
        self.file(name, data, 0o755 if os.access(path, os.X_OK) else 0o644)

    def tree(self, name, host_dir, skip=lambda rel: False):
        host_dir = str(host_dir)
        for dirpath, dirnames, filenames in os.walk(host_dir):
            rel = os.path.relpath(dirpath, host_dir)
            dirnames[:] = sorted(d for d in dirnames
                                 if not skip(os.path.normpath(os.path.join(rel, d))))
            self.dir(os.path.normpath(os.path.join(name, rel)))
            for fn in sorted(filenames):
                relf = os.path.normpath(os.path.join(rel, fn))
                if skip(relf):
                    continue
                src = os.path.join(dirpath, fn)
                if os.path.islink(src) and not os.path.exists(src):
                    continue
                self.host_file(os.path.normpath(os.path.join(name, relf)), src)

    def close(self):
        self._entry("TRAILER!!!", 0)
        self.out.write(b"\0" * (-self.out.tell() % 512) if hasattr(self.out, "tell") else b"")


# -- the base image --------------------------------------------------------------
def _module_dir(modname):
    import importlib.util
    spec = importlib.util.find_spec(modname)
    if spec is None or not spec.submodule_search_locations:
        raise GuestUnavailable(f"the Python package {modname} is not installed on the host")
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def _inputs():
    for path in (PYTHON, "/usr/lib/python3.11/os.py"):
        if not os.path.exists(path):
            raise GuestUnavailable(f"Debian's python3.11 is missing ({path})")
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    busybox = shutil.which("busybox")
    if busybox is None or not os.path.exists(bpftool):
        raise GuestUnavailable("busybox-static and bpftool are needed to build the guest image")
    mods = {m: _module_dir(m) for m in ("elftools", "construct")}
    return {"python": PYTHON, "bpftool": os.path.realpath(bpftool),
            "busybox": os.path.realpath(busybox), "modules": mods}


def _libraries(binaries):
    """The shared-library closure of ``binaries`` (ldd), as host paths."""
    libs = set()
    for b in binaries:
        out = subprocess.run(["ldd", str(b)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.search(r"=> (/\S+)", line) or re.match(r"\s*(/\S+ld-linux\S*)", line)
            if m:
                libs.add(m.group(1))
    return sorted(libs)


def _image_key(inp):
    h = hashlib.sha256(INIT.encode())
    h.update(open(__file__, "rb").read())
    for key in ("python", "bpftool", "busybox"):
        st = os.stat(inp[key])
        h.update(f"{inp[key]}:{st.st_size}:{st.st_mtime_ns}".encode())
    for mod, d in sorted(inp["modules"].items()):
        for p in sorted(d.rglob("*.py")):
            st = p.stat()
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _compressor():
    lz4 = shutil.which("lz4")
    if lz4:
        return [lz4, "-l", "-1", "-q"], "lz4"
    return None, "gzip"


def base_image():
    """The compressed base initramfs (cached by its inputs)."""
    inp = _inputs()
    key = _image_key(inp)
    path = cache_dir() / f"base-{key}.initrd"
    if path.exists():
        return path
    buf = io.BytesIO()
    cp = Cpio(buf)
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "proc", "sys", "dev", "tmp",
              "run", "root", "etc", "payload"):
        cp.dir(d)
    for d in ("bin", "sbin", "lib", "lib64"):
        cp.symlink(d, f"usr/{d}")
    cp.file("init", INIT.encode(), 0o755)
    cp.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    cp.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    cp.host_file("usr/bin/busybox", inp["busybox"])
    applets = subprocess.run([inp["busybox"], "--list-full"], capture_output=True,
                             text=True).stdout.split()
    cp.host_file("usr/bin/python3.11", inp["python"])
    cp.symlink("usr/bin/python3", "python3.11")
    cp.host_file("usr/sbin/bpftool", inp["bpftool"])
    cp.tree("usr/lib/python3.11", "/usr/lib/python3.11",
            skip=lambda rel: rel.split("/")[0] in PY_EXCLUDE
            or (rel.startswith("lib-dynload/_test") or rel.startswith("lib-dynload/xx")))
    for mod, d in inp["modules"].items():
        cp.tree(f"usr/lib/python3/dist-packages/{mod}", d,
                skip=lambda rel: rel.endswith(".pyc") or "__pycache__" in rel)
    dynload = sorted(pathlib.Path("/usr/lib/python3.11/lib-dynload").glob("*.so"))
    for lib in _libraries([inp["python"], inp["bpftool"]] + dynload):
        guest = lib[1:]
        if guest.startswith("lib"):        # merged /usr: /lib/x is /usr/lib/x
            guest = "usr/" + guest
        cp.host_file(guest, lib)
    for a in applets:
        a = a.lstrip("/")
        if a.startswith(("bin/", "sbin/")):
            a = "usr/" + a
        cp.symlink(a, "/usr/bin/busybox")
    cp.close()
    cmd, _ = _compressor()
    raw = buf.getvalue()
    if cmd:
        data = subprocess.run(cmd, input=raw, capture_output=True, check=True).stdout
    else:
        data = gzip.compress(raw, compresslevel=1)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


# -- the payload and the run -----------------------------------------------------
PAYLOAD_DIRS = ("pybpfload", "prebuilt", "tests/objects", "tests/qemu", "tests/data")


def payload(command, extra_files=None):
    """An uncompressed cpio: this checkout under /payload and /payload-cmd."""
    buf = io.BytesIO()
    cp = Cpio(buf)
    skip = lambda rel: "__pycache__" in rel or rel.endswith(".pyc")
    for d in PAYLOAD_DIRS:
        if (ROOT / d).is_dir():
            cp.tree(f"payload/{d}", ROOT / d, skip)
    for name, data in (extra_files or {}).items():
        cp.file(f"payload/{name}", data)
    script = "cd /payload || exit 125\n" + " ".join(shlex.quote(str(a)) for a in command) + "\n"
    cp.file("payload-cmd", script.encode())
    cp.close()
    return buf.getvalue()


def run(command, timeout=600, memory_mb=1024, extra_files=None, log=None):
    """Boot the 6.1 kernel, run ``command`` (argv list) in /payload, power off."""
    qemu = qemu_binary()
    vmlinuz = kernel()
    base = base_image()
    with tempfile.TemporaryDirectory(prefix="pybpfload-guest-") as tmp:
        initrd = os.path.join(tmp, "initrd")
        with open(initrd, "wb") as f:
            f.write(payload(command, extra_files))
            with open(base, "rb") as b:
                shutil.copyfileobj(b, f)
        result_path = os.path.join(tmp, "result")
        argv = [qemu, "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", str(memory_mb),
                "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
                "-serial", "stdio", "-serial", f"file:{result_path}",
                "-kernel", str(vmlinuz), "-initrd", initrd,
                "-append", "console=ttyS0 quiet panic=-1 rdinit=/init"]
        t0 = time.monotonic()
        boot = None
        out = bytearray()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        timed_out = False
        try:
            deadline = t0 + timeout
            os.set_blocking(proc.stdout.fileno(), False)
            import selectors
            sel = selectors.DefaultSelector()
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                if not sel.select(min(left, 1.0)):
                    if proc.poll() is not None:
                        break
                    continue
                chunk = proc.stdout.read(65536)
                if not chunk:
                    break
                out += chunk
                if log is not None:
                    log.write(chunk)
                    log.flush()
                if boot is None and INIT_LINE in out:
                    boot = time.monotonic() - t0
            sel.close()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
        seconds = time.monotonic() - t0
        try:
            with open(result_path, "rb") as f:
                result = f.read()
        except OSError:
            result = b""
    m = list(EXIT_LINE.finditer(out))
    rc = int(m[-1].group(1)) if m else (124 if timed_out else 125)
    return GuestRun(rc, out.decode("utf-8", "replace").replace("\r\n", "\n"),
                    result.replace(b"\r\n", b"\n"), seconds, boot,
                    vmlinuz.parents[2].name)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    try:
        r = run(argv, log=sys.stdout.buffer)
    except GuestUnavailable as exc:
        print(f"guest: unavailable: {exc}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    if r.result:
        sys.stderr.write(f"[guest] result channel: {len(r.result)} bytes\n")
    sys.stderr.write(f"[guest] {r.kernel} rc={r.returncode} boot={r.boot_seconds} "
                     f"total={r.seconds:.1f}s\n")
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
