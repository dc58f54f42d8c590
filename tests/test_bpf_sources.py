"""The BPF programs in bpf/: the committed prebuilt objects load and pass
the verifier (through libbpf, with bpftool), rebuilding them from source
gives the same bytes, and classify really captures what it claims when
attached to the running kernel (events read back with bpftool's perf
reader, decoded with the offsets the object's own BTF gives)."""
import contextlib
import ctypes
import json
import os
import shutil
import signal
import struct
import subprocess
import time
import uuid

import pytest

from conftest import PREBUILT, ROOT

OBJECTS = {
    "classify": {"handle_exec", "handle_exit", "handle_fork"},
    "syscalls": {"count_syscalls", "count_syscalls_raw"},
    "floor": {"floor_raw_tp", "floor_tp"},
}
BPFTOOL = shutil.which("bpftool") or "/usr/sbin/bpftool"
CGROUP_V2 = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"

needs_bpftool = pytest.mark.skipif(not os.path.exists(BPFTOOL), reason="bpftool is not installed")


# -- helpers ---------------------------------------------------------------

def _v1_memory_subsys_id():
    """The index of the memory controller in task->cgroups->subsys[] (its
    row in /proc/cgroups) when memory is mounted as a v1 hierarchy."""
    with open("/proc/cgroups") as f:
        rows = [line.split() for line in f if not line.startswith("#")]
    for index, row in enumerate(rows):
        if row[0] == "memory" and row[1] != "0" and os.path.isdir("/sys/fs/cgroup/memory"):
            return index
    return None


def patched_object(src, dst, values):
    """Copy the object src to dst with .rodata variables set: values maps a
    variable name to (struct format, value).  libbpf loads .rodata with the
    ELF section's bytes, so this is how a knob reaches it through bpftool."""
    from elftools.elf.elffile import ELFFile

    data = bytearray(src.read_bytes())
    found = set()
    with open(src, "rb") as f:
        elf = ELFFile(f)
        names = [s.name for s in elf.iter_sections()]
        rodata_index = names.index(".rodata")
        rodata = elf.get_section(rodata_index)
        for sym in elf.get_section_by_name(".symtab").iter_symbols():
            if sym.name in values and sym["st_shndx"] == rodata_index:
                fmt, value = values[sym.name]
                struct.pack_into(fmt, data, rodata["sh_offset"] + sym["st_value"], value)
                found.add(sym.name)
    assert found == set(values), f"not in .rodata: {set(values) - found}"
    dst.write_bytes(bytes(data))
    return dst


@contextlib.contextmanager
def loaded(obj):
    """bpftool prog loadall obj into a fresh bpffs directory (programs under
    progs/, maps under maps/); everything is unpinned (so freed) on exit."""
    pin = f"/sys/fs/bpf/pybpfload-test-{uuid.uuid4().hex[:12]}"
    os.mkdir(pin)
    try:
        res = subprocess.run([BPFTOOL, "prog", "loadall", str(obj), pin + "/progs",
                              "pinmaps", pin + "/maps"], capture_output=True, text=True)
        assert res.returncode == 0, f"bpftool loadall {obj.name} failed:\n{res.stderr[-4000:]}"
        yield pin
    finally:
        shutil.rmtree(pin, ignore_errors=True)


_libc = ctypes.CDLL(None, use_errno=True)
_NR = {"x86_64": (321, 298), "aarch64": (280, 241)}.get(os.uname().machine)


def _syscall(nr, *args):
    r = _libc.syscall(nr, *args)
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return r


def _bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    return _syscall(_NR[0], ctypes.c_int(cmd), buf, ctypes.c_uint(128))


def _pinned_prog_fd(path):
    name = ctypes.create_string_buffer(path.encode())
    return _bpf(7, struct.pack("=QII", ctypes.addressof(name), 0, 0))  # BPF_OBJ_GET


def _attach_tracepoint(prog_fd, tracefs, group, event):
    """perf_event_open the tracepoint and run prog_fd on it; returns the fd."""
    with open(f"{tracefs}/events/{group}/{event}/id") as f:
        tp_id = int(f.read())
    attr = struct.pack("=IIQQ", 2, 128, tp_id, 1).ljust(128, b"\0")  # PERF_TYPE_TRACEPOINT
    buf = ctypes.create_string_buffer(attr, 128)
    fd = _syscall(_NR[1], buf, ctypes.c_int(-1), ctypes.c_int(0), ctypes.c_int(-1),
                  ctypes.c_ulong(8))  # all tasks, cpu 0 (tracepoint perf events fire everywhere)
    try:
        import fcntl
        fcntl.ioctl(fd, 0x40042408, prog_fd)  # PERF_EVENT_IOC_SET_BPF
        fcntl.ioctl(fd, 0x2400, 0)  # PERF_EVENT_IOC_ENABLE
    except BaseException:
        os.close(fd)
        raise
    return fd


def _attach_raw_tracepoint(prog_fd, name):
    """name None: a tp_btf program (its tracepoint was given at load)."""
    cname = ctypes.create_string_buffer(name.encode()) if name else None
    return _bpf(17, struct.pack("=QI", ctypes.addressof(cname) if name else 0,
                                prog_fd))  # RAW_TRACEPOINT_OPEN


@pytest.fixture
def tracefs():
    for path in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.exists(path + "/events"):
            yield path
            return
    path = "/sys/kernel/tracing"
    subprocess.run(["mount", "-t", "tracefs", "nodev", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", path], check=False)


@pytest.fixture
def cgroups():
    """make(root, *parts) creates nested cgroup directories; all are
    removed afterwards (the test's processes have exited by then)."""
    made = []

    def make(root, *parts):
        path = root
        for part in parts:
            path = os.path.join(path, part)
            if not os.path.isdir(path):
                os.mkdir(path)
                made.append(path)
        return path

    yield make
    for path in reversed(made):  # children first; exited tasks leave lazily
        for _ in range(50):
            try:
                os.rmdir(path)
                break
            except OSError:
                time.sleep(0.05)


def _struct_layout(obj, name):
    """{member: (byte offset, byte size)} of struct `name` in obj's BTF."""
    out = subprocess.run([BPFTOOL, "btf", "dump", "file", str(obj), "-j"],
                         capture_output=True, text=True, check=True).stdout
    types = {t["id"]: t for t in json.loads(out)["types"]}

    def size(tid):
        t = types[tid]
        while t["kind"] in ("TYPEDEF", "VOLATILE", "CONST"):
            t = types[t["type_id"]]
        if t["kind"] == "ARRAY":
            return t["nr_elems"] * size(t["type_id"])
        return t["size"]

    struct_type = next(t for t in types.values() if t.get("name") == name and t["kind"] == "STRUCT")
    return {m["name"]: (m["bits_offset"] // 8, size(m["type_id"])) for m in struct_type["members"]}


class Record:
    """Fields of one event record, read through a BTF layout."""

    def __init__(self, data, layout):
        self.data, self.layout = data, layout

    def int(self, name):
        off, size = self.layout[name]
        return int.from_bytes(self.data[off:off + size], "little", signed=name == "exit_code")

    def str(self, name):
        off, size = self.layout[name]
        return self.data[off:off + size].split(b"\0", 1)[0].decode()

    def raw(self, name):
        off, size = self.layout[name]
        return self.data[off:off + size]

    def path(self, name, depth_name):
        off, size = self.layout[name]
        return [self.data[off + i * 128:off + (i + 1) * 128].split(b"\0", 1)[0].decode()
                for i in range(self.int(depth_name))]


class _EventPipe:
    """`bpftool -j map event_pipe` on a pinned perf event array, its output
    collected by a thread (unbuffered through stdbuf)."""

    def __init__(self, events_map):
        import threading

        self.proc = subprocess.Popen(["stdbuf", "-o0", BPFTOOL, "-j", "map", "event_pipe",
                                      "pinned", events_map],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.chunks = []
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self):
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):
            self.chunks.append(chunk)

    def wait_ready(self, timeout=10.0):
        """Exec a marker until its event shows up: until then the reader's
        rings are not in the map yet and events are dropped."""
        marker = f"pybtest-marker-{uuid.uuid4().hex[:8]}"
        needle = ",".join(str(b) for b in marker.encode()).encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()[-2000:]
            subprocess.run(["/bin/true", marker], check=True)
            time.sleep(0.05)
            if needle in b"".join(self.chunks):
                return
        raise AssertionError("bpftool map event_pipe never delivered an event")

    def stop(self):
        """Stop the reader; the raw records it read."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(timeout=10)
        self.proc.stderr.close()
        return _event_pipe_samples(b"".join(self.chunks))


def _event_pipe_samples(out):
    """The raw records in `bpftool -j map event_pipe` output."""
    return [bytes(item["data"]) for item in json.loads(out) if "data" in item]


# -- tests -----------------------------------------------------------------

@pytest.mark.root
@needs_bpftool
@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_prebuilt_object_loads_and_verifies(name):
    with loaded(PREBUILT / f"{name}.bpf.o") as pin:
        assert set(os.listdir(pin + "/progs")) == OBJECTS[name]


@pytest.mark.root
@needs_bpftool
@pytest.mark.parametrize("name,knobs", [
    ("classify", {"v1_subsys_id": ("<i", 4), "want_forks": ("<B", 1), "targ_uid": ("<I", 0)}),
    ("syscalls", {"v1_subsys_id": ("<i", 4), "count_all": ("<B", 1)}),
    ("syscalls", {"count_all": ("<B", 1)}),
])
def test_knob_variants_pass_the_verifier(tmp_path, name, knobs):
    """The branches dead with the default knobs are verified too."""
    obj = patched_object(PREBUILT / f"{name}.bpf.o", tmp_path / f"{name}.bpf.o", knobs)
    with loaded(obj) as pin:
        assert set(os.listdir(pin + "/progs")) == OBJECTS[name]


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_rebuild_reproduces_committed_bytes(tmp_path, name):
    if not shutil.which("clang") or not shutil.which("llvm-strip"):
        pytest.skip("clang/llvm-strip are not installed")
    shutil.copytree(ROOT / "bpf", tmp_path / "bpf")
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    target = f"prebuilt/{name}.bpf.o"
    subprocess.run(["make", "-s", target], cwd=tmp_path, check=True)
    assert (tmp_path / target).read_bytes() == (PREBUILT / f"{name}.bpf.o").read_bytes()


@pytest.mark.root
@needs_bpftool
def test_classify_captures_exec_exit_fork(tmp_path, tracefs, cgroups):
    """Attach classify (v1 memory hierarchy chosen, forks on) and run
    `sh -c "true ...; exit 3"` in fresh cgroups, then
    `unshare --pid --fork true` in a new pid namespace; check every field
    of the events against what /proc and the cgroup filesystems say."""
    if _NR is None:
        pytest.skip("unknown syscall numbers for this architecture")
    v1_id = _v1_memory_subsys_id()
    knobs = {"want_forks": ("<B", 1)}
    if v1_id is not None:
        knobs["v1_subsys_id"] = ("<i", v1_id)
    obj = patched_object(PREBUILT / "classify.bpf.o", tmp_path / "classify.bpf.o", knobs)
    exec_layout = _struct_layout(obj, "exec_event")
    exit_layout = _struct_layout(obj, "exit_event")
    fork_layout = _struct_layout(obj, "fork_event")

    tag = f"pybtest-{uuid.uuid4().hex[:8]}"
    v2_leaf = cgroups(CGROUP_V2, tag, "inner")
    deep = cgroups(CGROUP_V2, tag, *[f"d{i}" for i in range(10)])
    v1_leaf = cgroups("/sys/fs/cgroup/memory", tag, "inner") if v1_id is not None else None

    def join(*leaves):
        def enter():
            for leaf in leaves:
                if leaf:
                    with open(leaf + "/cgroup.procs", "w") as f:
                        f.write("0")
        return enter

    fds = []
    with loaded(obj) as pin:
        try:
            for prog, event in (("handle_exec", "sched_process_exec"),
                                ("handle_exit", "sched_process_exit")):
                prog_fd = _pinned_prog_fd(f"{pin}/progs/{prog}")
                fds.append(prog_fd)
                fds.append(_attach_tracepoint(prog_fd, tracefs, "sched", event))
            prog_fd = _pinned_prog_fd(f"{pin}/progs/handle_fork")
            fds.append(prog_fd)
            fds.append(_attach_raw_tracepoint(prog_fd, "sched_process_fork"))

            reader = _EventPipe(f"{pin}/maps/events")
            try:
                reader.wait_ready()
                long_arg = "x" * 300
                sh = subprocess.Popen(["/bin/sh", "-c", "/bin/true hello world; exit 3"],
                                      preexec_fn=join(v2_leaf, v1_leaf))
                sh.wait()
                subprocess.run(["unshare", "--pid", "--fork", "/bin/true", long_arg], check=True)
                subprocess.run(["/bin/true", "deep"], preexec_fn=join(deep), check=True)
                time.sleep(0.3)
            finally:
                samples = reader.stop()
        finally:
            for fd in fds:
                os.close(fd)

    assert samples, "no events read"
    types = {}
    for s in samples:
        types.setdefault(struct.unpack_from("<I", s)[0], []).append(s)
    execs = [Record(s, exec_layout) for s in types.get(1, [])]
    exits = [Record(s, exit_layout) for s in types.get(2, [])]
    forks = [Record(s, fork_layout) for s in types.get(3, [])]

    def st_ino(path):
        return os.stat(path).st_ino

    # sh itself
    sh_exec = [e for e in execs if e.int("pid") == sh.pid]
    assert len(sh_exec) == 1
    e = sh_exec[0]
    assert e.layout["comm"][1] == 16 and e.str("comm") == "sh"
    assert e.str("filename") == "/bin/sh" and e.int("filename_len") == len("/bin/sh")
    assert e.raw("args")[:e.int("args_len")] == b"/bin/sh\0-c\0/bin/true hello world; exit 3\0"
    assert e.int("args_truncated") == 0
    assert e.int("ppid") == os.getpid() and e.int("tid") == sh.pid
    assert e.int("ns_pid") == sh.pid and e.int("pid_ns_level") == 0
    assert e.int("pid_ns_inum") == st_ino("/proc/self/ns/pid")
    assert e.int("mnt_ns_inum") == st_ino("/proc/self/ns/mnt")
    assert e.int("cgroup_ns_inum") == st_ino("/proc/self/ns/cgroup")
    assert (e.int("uid"), e.int("gid")) == (os.getuid(), os.getgid())
    assert e.int("cgroup_id") == st_ino(v2_leaf)
    assert e.path("cgroup_v2_path", "cgroup_v2_depth") == \
        os.path.relpath(v2_leaf, CGROUP_V2).split("/")[::-1]
    assert e.int("cgroup_v2_truncated") == 0
    if v1_id is not None:
        assert e.int("v1_subsys_id") == v1_id
        assert e.int("v1_cgroup_id") == st_ino(v1_leaf)
        assert e.path("cgroup_v1_path", "cgroup_v1_depth") == [ "inner", tag]
    assert 0 < e.int("time_ns") <= time.monotonic_ns()

    # the forked child that exec'd true
    fork = [f for f in forks if f.int("parent_pid") == sh.pid]
    assert len(fork) == 1
    child = fork[0].int("child_pid")
    assert fork[0].int("cgroup_id") == st_ino(v2_leaf)
    t = [e for e in execs if e.int("pid") == child]
    assert len(t) == 1 and t[0].str("comm") == "true" and t[0].int("ppid") == sh.pid
    assert t[0].raw("args")[:t[0].int("args_len")] == b"/bin/true\0hello\0world\0"
    # exits: the child with 0, sh with 3 (wait status 3 << 8)
    codes = {x.int("pid"): x.int("exit_code") for x in exits}
    assert codes.get(child) == 0 and codes.get(sh.pid) == 3 << 8
    assert [x.str("comm") for x in exits if x.int("pid") == sh.pid] == ["sh"]

    # true inside a new pid namespace is its pid 1, one level down
    ns = [e for e in execs if e.str("comm") == "true" and e.int("pid_ns_level") == 1]
    assert len(ns) == 1
    assert ns[0].int("ns_pid") == 1 and ns[0].int("pid") != 1
    assert ns[0].int("pid_ns_inum") != st_ino("/proc/self/ns/pid")
    assert ns[0].int("args_truncated") == 1 and ns[0].int("args_len") == 256
    assert ns[0].raw("args")[:14] == b"/bin/true\0xxxx"

    # a cgroup 11 levels deep: the 8 innermost names, cut flag set
    d = [e for e in execs if e.int("cgroup_id") == st_ino(deep)]
    assert len(d) == 1
    assert d[0].path("cgroup_v2_path", "cgroup_v2_depth") == [f"d{i}" for i in range(9, 1, -1)]
    assert d[0].int("cgroup_v2_truncated") == 1


# -- syscalls.bpf.c ----------------------------------------------------------

MAX_SYSCALLS, COMPAT_BASE = 1024, 512

# a 64-bit x86 process entering the kernel through int $0x80 makes an ia32
# (compat) system call: mov eax, 64 (i386 getppid); int 0x80; ret
_IA32_GETPPID = bytes.fromhex("b840000000cd80c3")


def _bpftool_json(*args):
    res = subprocess.run([BPFTOOL, "-j", *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout) if res.stdout.strip() else None


def _hex(data):
    return ["hex", *(f"{b:02x}" for b in data)]


def _percpu_sum(map_path, key):
    item = _bpftool_json("map", "lookup", "pinned", map_path, "key", *_hex(struct.pack("<I", key)))
    total = 0
    for per_cpu in item["values"]:
        value = per_cpu["value"]
        total += int.from_bytes(bytes(int(b, 16) for b in value), "little") \
            if isinstance(value, list) else int(value)
    return total


def _child_script(calls, ia32):
    """A python child doing `calls` getppid() (through int $0x80 when ia32)."""
    if not ia32:
        return f"import os\nfor _ in range({calls}): os.getppid()\n"
    return (
        "import ctypes, mmap\n"
        "m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        f"m.write(bytes.fromhex('{_IA32_GETPPID.hex()}'))\n"
        "f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))\n"
        f"for _ in range({calls}): f()\n"
    )


@pytest.mark.root
@needs_bpftool
@pytest.mark.parametrize("mode", ["v2", "v1", "count_all"])
@pytest.mark.parametrize("prog", ["count_syscalls", "count_syscalls_raw"])
def test_syscalls_counts_watched_cgroup(tmp_path, cgroups, mode, prog):
    """Attach count_syscalls; a child in a watched cgroup calls getppid N
    times: exactly N land in (its slot, getppid); an unwatched child's calls
    are not counted (unless count_all: slot 0)."""
    import sys

    from pybpfload.tools.syscall_table import syscall_number

    if _NR is None or os.uname().machine != "x86_64":
        pytest.skip("the test's syscall numbers are x86_64's")
    v1_id = _v1_memory_subsys_id()
    if mode == "v1" and v1_id is None:
        pytest.skip("no v1 memory hierarchy")
    knobs = {"count_all": ("<B", 1 if mode == "count_all" else 0)}
    if mode == "v1":
        knobs["v1_subsys_id"] = ("<i", v1_id)
    obj = patched_object(PREBUILT / "syscalls.bpf.o", tmp_path / "syscalls.bpf.o", knobs)

    tag = f"pybtest-{uuid.uuid4().hex[:8]}"
    root = "/sys/fs/cgroup/memory" if mode == "v1" else CGROUP_V2
    watched_cg = cgroups(root, tag, "watched")
    other_cg = cgroups(root, tag, "other")
    slot, calls = 7, 5000
    getppid = syscall_number("getppid", "x86_64")
    ia32_getppid = syscall_number("getppid", "i386")

    def run_in(cgroup, ia32=False):
        def enter():
            with open(cgroup + "/cgroup.procs", "w") as f:
                f.write("0")
        subprocess.run([sys.executable, "-c", _child_script(calls, ia32)],
                       preexec_fn=enter, check=True)

    fds = []
    with loaded(obj) as pin:
        _bpftool_json("map", "update", "pinned", f"{pin}/maps/watched",
                      "key", *_hex(struct.pack("<Q", os.stat(watched_cg).st_ino)),
                      "value", *_hex(struct.pack("<I", slot)))
        try:
            prog_fd = _pinned_prog_fd(f"{pin}/progs/{prog}")
            fds.append(prog_fd)
            fds.append(_attach_raw_tracepoint(prog_fd, None if prog == "count_syscalls"
                                              else "sys_enter"))
            run_in(watched_cg)
            run_in(watched_cg, ia32=True)
            run_in(other_cg)
        finally:
            for fd in fds:
                os.close(fd)
        counts = f"{pin}/maps/counts"
        native = _percpu_sum(counts, slot * MAX_SYSCALLS + getppid)
        compat = _percpu_sum(counts, slot * MAX_SYSCALLS + COMPAT_BASE + ia32_getppid)
        other = _percpu_sum(counts, getppid)
        execve = _percpu_sum(counts, slot * MAX_SYSCALLS + syscall_number("execve", "x86_64"))
        overflow = _percpu_sum(f"{pin}/maps/overflow", 0)

    # python's own start-up does not call getppid
    assert native == calls
    assert compat == calls
    assert execve >= 1  # counting starts in the child before it execs python
    if mode == "count_all":  # every other task on the host counts there too
        assert other >= calls
    else:
        assert other == 0
    assert overflow == 0
