"""Start REAL containers for the tests, and always clean up after them.

:class:`Lab` builds a busybox root filesystem from the host's static busybox
(no image registry is reachable), then starts containers with the runtimes
installed here: ``unshare -p -f --mount-proc`` (a PID namespace, not a
container), runc (with or without its own PID namespace, any ``cgroupsPath``
to imitate other layouts), podman, docker (a private dockerd) and containerd
(a private containerd driven with ``ctr``).  Daemons and images are private
to the lab (own roots, sockets and state directories under one temp dir), are
started once, on first use, and are stopped by :meth:`Lab.close`, which also
removes every container, the cgroups the lab created, leftover mounts and the
temp dir; it runs even when a test failed (session fixture finaliser).

Facts of this machine behind the choices: no systemd (cgroupfs paths only),
hybrid cgroups, dockerd needs ``--bridge=none --iptables=false``, podman needs
explicit ``--ulimit`` values (no CAP_SYS_RESOURCE) and ``--network none``.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import List, Optional

CGROUP_FS = "/sys/fs/cgroup"
DOCKER_CLIENT = "/usr/bin/docker"          # Debian's client matches the Debian daemon


@dataclass
class Started:
    """One started container (or namespace): what the tests check against."""

    runtime: str                 # unshare, runc, podman, docker, containerd
    id: str                      # the runtime's full id
    name: str                    # the name it was given
    pid: int                     # host pid of its init
    own_pidns: bool
    cgroup_parent: Optional[str] = None
    extra: dict = field(default_factory=dict)


class LabError(RuntimeError):
    pass


def _run(cmd, timeout=60, check=True, **kw):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(map(str, cmd))}: rc={proc.returncode}: "
                       f"{proc.stderr.decode(errors='replace').strip()[-800:]}")
    return proc


def alive(pid):
    """True for a live, non-zombie process (PID 1 here reaps lazily)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2:][:1] not in (b"Z", b"X")


def wait_for(predicate, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def have(binary):
    return shutil.which(binary) is not None


class Lab:
    """Starts containers and daemons; :meth:`close` undoes everything."""

    def __init__(self, base=None):
        self.dir = tempfile.mkdtemp(prefix="pybpf-lab-", dir=base or "/var/tmp")
        self.tag = secrets.token_hex(3)
        self.rootfs = os.path.join(self.dir, "rootfs")
        self.started: List[Started] = []
        self.daemons = {}            # name -> Popen
        self.cgroups = []            # cgroup paths (relative to each hierarchy) the lab created
        self.ctr_ns = f"pbtest{self.tag}"
        self._spec = None
        self._images = set()

    # -- building blocks ----------------------------------------------------
    def build_rootfs(self):
        if os.path.exists(os.path.join(self.rootfs, "bin", "busybox")):
            return self.rootfs
        busybox = shutil.which("busybox") or "/bin/busybox"
        tmp = self.rootfs + ".tmp"
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var"):
            os.makedirs(os.path.join(tmp, d), exist_ok=True)
        shutil.copy2(busybox, os.path.join(tmp, "bin", "busybox"))
        applets = _run([busybox, "--list"]).stdout.decode().split()
        for a in applets:
            link = os.path.join(tmp, "bin", a)
            if not os.path.lexists(link):
                os.symlink("busybox", link)
        with open(os.path.join(tmp, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n")
        with open(os.path.join(tmp, "etc", "group"), "w") as f:
            f.write("root:x:0:\n")
        os.chmod(os.path.join(tmp, "tmp"), 0o1777)
        os.rename(tmp, self.rootfs)
        return self.rootfs

    def rootfs_tar(self):
        path = os.path.join(self.dir, "rootfs.tar")
        if not os.path.exists(path):
            _run(["tar", "-C", self.build_rootfs(), "--numeric-owner", "-cf", path, "."])
        return path

    def spec_template(self):
        if self._spec is None:
            d = tempfile.mkdtemp(dir=self.dir)
            _run(["runc", "spec"], cwd=d)
            with open(os.path.join(d, "config.json")) as f:
                self._spec = json.load(f)
            shutil.rmtree(d)
        return json.loads(json.dumps(self._spec))

    def _note_cgroup(self, path):
        """Remember cgroup dirs (path and its parents) that do not exist yet."""
        if not path or not path.startswith("/"):
            return
        parts = [p for p in path.split("/") if p]
        for i in range(1, len(parts) + 1):
            rel = "/" + "/".join(parts[:i])
            if rel in self.cgroups:
                continue
            if not any(os.path.isdir(os.path.join(CGROUP_FS, h) + rel) for h in _hierarchies()):
                self.cgroups.append(rel)

    # -- unshare --------------------------------------------------------------
    def start_unshare(self, cmd=("sleep", "600")):
        """A new PID namespace (with its own /proc), not a container."""
        proc = subprocess.Popen(["unshare", "-p", "-f", "--mount-proc", *cmd],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        child = []
        ok = wait_for(lambda: child.extend(_children(proc.pid)) or bool(child), 5, 0.01)
        if not ok:
            proc.kill()
            proc.wait()
            raise LabError("unshare: no child appeared")
        s = Started("unshare", str(child[0]), "unshare", child[0], True, extra={"popen": proc})
        self.started.append(s)
        return s

    # -- runc -------------------------------------------------------------------
    def start_runc(self, name=None, hostpid=False, cgroups_path=None, cmd=("sleep", "600")):
        """``runc run -d`` of a bundle over the busybox rootfs; ``hostpid``
        drops the PID namespace, ``cgroups_path`` is used literally."""
        name = name or f"pbt-runc-{self.tag}-{secrets.token_hex(3)}"
        bundle = os.path.join(self.dir, "bundles", name)
        os.makedirs(bundle)
        spec = self.spec_template()
        spec["process"]["terminal"] = False
        spec["process"]["args"] = list(cmd)
        spec["root"] = {"path": self.build_rootfs(), "readonly": True}
        if cgroups_path:
            spec["linux"]["cgroupsPath"] = cgroups_path
            self._note_cgroup(cgroups_path.rsplit("/", 1)[0])
        if hostpid:
            spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "pid"]
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        pidfile = os.path.join(bundle, "pid")
        s = Started("runc", name, name, 0, not hostpid, cgroups_path, {"bundle": bundle})
        self.started.append(s)          # registered first: cleaned up even if run fails
        self._detached(["runc", "run", "-d", "--pid-file", pidfile, name], name, cwd=bundle)
        with open(pidfile) as f:
            s.pid = int(f.read().strip())
        return s

    # -- podman -----------------------------------------------------------------
    def _podman(self):
        root = os.path.join(self.dir, "podman")
        return ["podman", "--root", os.path.join(root, "storage"),
                "--runroot", os.path.join(root, "run"), "--runtime", "runc",
                "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--storage-driver", "vfs"]

    def podman_storage(self):
        """The storage root (what runtime_state reads for podman)."""
        return os.path.join(self.dir, "podman", "storage")

    def start_podman(self, name=None, hostpid=False, cmd=("sleep", "600")):
        image = f"localhost/pbt-busybox-{self.tag}:latest"
        if "podman" not in self._images:
            _run(self._podman() + ["import", "--change", 'CMD ["/bin/sh"]', self.rootfs_tar(), image],
                 timeout=120)
            self._images.add("podman")
        name = name or f"pbt-podman-{self.tag}-{secrets.token_hex(3)}"
        self._note_cgroup("/libpod_parent")
        import resource
        nofile = _hard_limit(resource.RLIMIT_NOFILE)
        nproc = _hard_limit(resource.RLIMIT_NPROC)
        opts = ["--network", "none", "--name", name, "--ulimit", f"nofile={nofile}:{nofile}",
                "--ulimit", f"nproc={nproc}:{nproc}"]
        if hostpid:
            opts += ["--pid", "host"]
        s = Started("podman", "", name, 0, not hostpid)
        self.started.append(s)
        cid = _run(self._podman() + ["run", "-d", *opts, image, *cmd], timeout=120).stdout.decode().strip()
        s.id = cid
        s.pid = int(_run(self._podman() + ["inspect", "-f", "{{.State.Pid}}", cid]).stdout.decode())
        return s

    # -- docker -----------------------------------------------------------------
    def docker_root(self):
        return os.path.join(self.dir, "docker")

    def _docker(self):
        return [DOCKER_CLIENT, "-H", "unix://" + os.path.join(self.dir, "docker.sock")]

    def docker_up(self):
        if "dockerd" in self.daemons:
            return
        log = open(os.path.join(self.dir, "dockerd.log"), "wb")
        self._note_cgroup("/docker")
        proc = subprocess.Popen(
            ["dockerd", "--data-root", self.docker_root(), "--exec-root", os.path.join(self.dir, "dexec"),
             "--pidfile", os.path.join(self.dir, "dockerd.pid"),
             "-H", "unix://" + os.path.join(self.dir, "docker.sock"),
             "--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
             "--storage-driver", "vfs"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self.daemons["dockerd"] = proc

        def up():
            if proc.poll() is not None:
                raise LabError("dockerd exited: " + _tail(os.path.join(self.dir, "dockerd.log")))
            return _run(self._docker() + ["version", "--format", "{{.Server.Version}}"],
                        check=False, timeout=10).returncode == 0
        if not wait_for(up, 60, 0.2):
            raise LabError("dockerd did not come up: " + _tail(os.path.join(self.dir, "dockerd.log")))

    def start_docker(self, name=None, hostpid=False, cmd=("sleep", "600")):
        self.docker_up()
        image = f"pbt-busybox-{self.tag}:latest"
        if "docker" not in self._images:
            _run(self._docker() + ["import", "--change", 'CMD ["/bin/sh"]', self.rootfs_tar(), image],
                 timeout=120)
            self._images.add("docker")
        name = name or f"pbt-docker-{self.tag}-{secrets.token_hex(3)}"
        opts = ["--network", "none", "--name", name]
        if hostpid:
            opts += ["--pid", "host"]
        s = Started("docker", "", name, 0, not hostpid)
        self.started.append(s)
        s.id = _run(self._docker() + ["run", "-d", *opts, image, *cmd], timeout=120).stdout.decode().strip()
        s.pid = int(_run(self._docker() + ["inspect", "-f", "{{.State.Pid}}", s.id]).stdout.decode())
        return s

    # -- containerd / ctr --------------------------------------------------------
    def containerd_state(self):
        return os.path.join(self.dir, "ctrd-state")

    def _ctr(self):
        return ["ctr", "--address", os.path.join(self.dir, "ctrd.sock"), "-n", self.ctr_ns]

    def containerd_up(self):
        if "containerd" in self.daemons:
            return
        cfg = os.path.join(self.dir, "containerd.toml")
        with open(cfg, "w") as f:
            f.write('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n')
        log = open(os.path.join(self.dir, "containerd.log"), "wb")
        proc = subprocess.Popen(
            ["containerd", "--config", cfg, "--root", os.path.join(self.dir, "ctrd-root"),
             "--state", self.containerd_state(), "--address", os.path.join(self.dir, "ctrd.sock")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self.daemons["containerd"] = proc
        sock = os.path.join(self.dir, "ctrd.sock")

        def up():
            if proc.poll() is not None:
                raise LabError("containerd exited: " + _tail(os.path.join(self.dir, "containerd.log")))
            return os.path.exists(sock) and _run(self._ctr() + ["version"], check=False,
                                                 timeout=10).returncode == 0
        if not wait_for(up, 30, 0.1):
            raise LabError("containerd did not come up")

    def start_ctr(self, name=None, cmd=("sleep", "600")):
        self.containerd_up()
        image = f"docker.io/library/pbt-busybox-{self.tag}:latest"
        if "ctr" not in self._images:
            _run(self._ctr() + ["image", "import", self._oci_tar(image)],
                 timeout=120)
            self._images.add("ctr")
        name = name or f"pbt-ctr-{secrets.token_hex(3)}"
        self._note_cgroup("/" + self.ctr_ns)
        pidfile = os.path.join(self.dir, name + ".pid")
        s = Started("containerd", name, name, 0, True, extra={"namespace": self.ctr_ns})
        self.started.append(s)
        self._detached(self._ctr() + ["run", "-d", "--pid-file", pidfile, image, name, *cmd], name)
        with open(pidfile) as f:
            s.pid = int(f.read().strip())
        return s

    def _detached(self, argv, name, cwd=None):
        """Run a ``run -d`` command whose container inherits its stdio: give
        it a log file (a pipe would stay open as long as the container)."""
        logpath = os.path.join(self.dir, name + ".log")
        with open(logpath, "wb") as log:
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=cwd,
                                timeout=120).returncode
        if rc != 0:
            raise LabError(f"{argv[0]} run {name}: rc={rc}: {_tail(logpath)}")

    def _oci_tar(self, ref):
        """A one-layer OCI image layout tarball of the rootfs, for ``ctr image import``."""
        import hashlib
        import io
        import tarfile
        out = os.path.join(self.dir, "oci.tar")
        if os.path.exists(out):
            return out
        with open(self.rootfs_tar(), "rb") as f:
            layer = f.read()
        ld = hashlib.sha256(layer).hexdigest()
        cfg = json.dumps({"architecture": _goarch(), "os": "linux",
                          "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
                          "rootfs": {"type": "layers", "diff_ids": ["sha256:" + ld]}}).encode()
        cd = hashlib.sha256(cfg).hexdigest()
        man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                     "digest": "sha256:" + cd, "size": len(cfg)},
                          "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                      "digest": "sha256:" + ld, "size": len(layer)}]}).encode()
        md = hashlib.sha256(man).hexdigest()
        idx = json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + md,
            "size": len(man), "annotations": {"io.containerd.image.name": ref,
                                              "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}}]}).encode()
        with tarfile.open(out, "w") as t:
            for d in ("blobs", "blobs/sha256"):
                ti = tarfile.TarInfo(d)
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                t.addfile(ti)
            for name, data in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", idx),
                               ("blobs/sha256/" + ld, layer), ("blobs/sha256/" + cd, cfg),
                               ("blobs/sha256/" + md, man)]:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                ti.mode = 0o644
                t.addfile(ti, io.BytesIO(data))
        return out

    # -- running commands -----------------------------------------------------
    def exec(self, s, cmd, timeout=30):
        """Run ``cmd`` inside a started container (its namespaces and cgroup)."""
        if s.runtime == "runc":
            argv = ["runc", "exec", s.id, *cmd]
        elif s.runtime == "podman":
            argv = self._podman() + ["exec", s.id, *cmd]
        elif s.runtime == "docker":
            argv = self._docker() + ["exec", s.id, *cmd]
        elif s.runtime == "containerd":
            argv = self._ctr() + ["task", "exec", "--exec-id", "x" + secrets.token_hex(4), s.id, *cmd]
        else:
            argv = ["nsenter", "-t", str(s.pid), "-p", "-m", *cmd]
        return _run(argv, timeout=timeout, check=False)

    def run_short(self, runtime, cmd=("true",), **kw):
        """Start a container running a short command, wait for it, remove it."""
        start = getattr(self, "start_" + runtime)
        s = start(cmd=cmd, **kw)
        wait_for(lambda: not alive(s.pid), 20)
        self.stop(s)
        return s

    # -- stopping -------------------------------------------------------------
    def stop(self, s):
        try:
            if s.runtime == "unshare":
                p = s.extra["popen"]
                try:
                    os.kill(s.pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            elif s.runtime == "runc":
                _run(["runc", "delete", "-f", s.id], check=False)
                shutil.rmtree(s.extra.get("bundle", ""), ignore_errors=True)
            elif s.runtime == "podman" and s.id:
                _run(self._podman() + ["rm", "-f", "-t", "0", s.id], check=False, timeout=60)
            elif s.runtime == "docker" and s.id:
                _run(self._docker() + ["rm", "-f", s.id], check=False, timeout=60)
            elif s.runtime == "containerd":
                _run(self._ctr() + ["task", "kill", "-s", "SIGKILL", s.id], check=False)
                wait_for(lambda: not alive(s.pid), 10)
                _run(self._ctr() + ["task", "delete", "-f", s.id], check=False)
                _run(self._ctr() + ["container", "delete", s.id], check=False)
        finally:
            if s in self.started:
                self.started.remove(s)

    def close(self):
        """Stop everything, remove images, daemons, cgroups, mounts, the temp dir."""
        for s in list(reversed(self.started)):
            try:
                self.stop(s)
            except Exception:
                pass
        if "podman" in self._images:
            _run(self._podman() + ["rmi", "-af"], check=False, timeout=60)
        if "ctr" in self._images:
            for ref in _run(self._ctr() + ["image", "ls", "-q"], check=False).stdout.decode().split():
                _run(self._ctr() + ["image", "rm", ref], check=False)
        if "docker" in self._images:
            _run(self._docker() + ["rmi", "-f", f"pbt-busybox-{self.tag}:latest"], check=False)
        for name in ("dockerd", "containerd"):
            proc = self.daemons.pop(name, None)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        _unmount_below(self.dir)
        for rel in sorted(self.cgroups, key=len, reverse=True):
            for h in _hierarchies():
                _rmdir_tree(os.path.join(CGROUP_FS, h) + rel)
        shutil.rmtree(self.dir, ignore_errors=True)
        if os.path.exists(self.dir):       # a busy mount: try once more after a lazy unmount
            _unmount_below(self.dir, lazy=True)
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- helpers -----------------------------------------------------------------------

def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _hierarchies():
    try:
        return [h for h in os.listdir(CGROUP_FS) if os.path.isdir(os.path.join(CGROUP_FS, h))]
    except OSError:
        return []


def _rmdir_tree(path):
    if not os.path.isdir(path):
        return
    for root, dirs, _ in os.walk(path, topdown=False):
        for d in dirs:
            try:
                os.rmdir(os.path.join(root, d))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def _unmount_below(prefix, lazy=False):
    try:
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f]
    except OSError:
        return
    for mnt in sorted((m for m in mounts if m.startswith(prefix + "/")), key=len, reverse=True):
        _run(["umount", "-l" if lazy else "-R", mnt] if lazy else ["umount", mnt], check=False)


def _hard_limit(res):
    import resource
    hard = resource.getrlimit(res)[1]
    if hard == resource.RLIM_INFINITY or hard > 1048576:
        hard = 1048576
    if res == resource.RLIMIT_NPROC:
        with open("/proc/sys/kernel/pid_max") as f:
            hard = min(hard, int(f.read()))
    return hard


def _goarch():
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def _tail(path, n=800):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return ""
