"""REAL containers started here, identified from their real /proc/<pid>/cgroup.

Each runtime installed on this machine starts a busybox container (with and
without its own PID namespace where the runtime allows); identify() on the
container init's actual cgroup lines must name the runtime and id,
runtime_state must name it from the runtime's own files, and ``ps --json``
must list it as a container.  A new PID namespace alone (unshare) must stay
a host process.
"""

import io
import json
import os
import time

import pytest

from pybpfload.tools import procfs, ps
from pybpfload.tools.containers import classify_process, identify
from pybpfload.tools.runtime_state import RuntimeState

from runtimes import Lab, alive, have

pytestmark = [pytest.mark.root, pytest.mark.containers]

UID = "0e8a2c1b-5f3d-4a6e-9b7c-1d2e3f4a5b6c"


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0:
        pytest.skip("needs root to start containers")
    with Lab() as the_lab:
        yield the_lab


@pytest.fixture
def state(lab):
    return RuntimeState({"docker": lab.docker_root(), "podman": lab.podman_storage(),
                         "containerd": lab.containerd_state()}, negative_ttl=0)


def _need(binary):
    if not have(binary):
        pytest.skip(f"{binary} is not installed")


@pytest.fixture
def started(lab):
    """Containers a test starts; stopped after it even when it fails."""
    mine = []
    yield mine
    for s in mine:
        lab.stop(s)


def _ps_records(state):
    return {r["pid"]: r for r in ps.records(state=state)}


def _check(s, state, runtime, cid, name, own_pidns):
    p = procfs.read_process(s.pid)
    ident = identify(p.cgroup, state)
    assert (ident.runtime, ident.container_id) == (runtime, cid), p.cgroup
    cls = classify_process(ident, p.pidns_level, p.comm)
    assert cls.type == "container"
    assert cls.own_pidns is own_pidns
    assert p.pidns_level == (1 if own_pidns else 0)
    info = state.info(ident.runtime, ident.container_id, ident.namespace)
    assert info.name == name
    rec = _ps_records(state)[s.pid]
    assert (rec["type"], rec["runtime"], rec["container_id"], rec["container_name"], rec["own_pidns"]) == \
        ("container", runtime, cid, name, own_pidns)
    return ident, rec


@pytest.mark.parametrize("hostpid", [False, True])
def test_runc(lab, state, started, hostpid):
    _need("runc")
    s = lab.start_runc(hostpid=hostpid)
    started.append(s)
    _check(s, state, "runc", s.id, s.id, not hostpid)
    # a command exec'd into the container is the same container
    out = lab.exec(s, ["sh", "-c", "cat /proc/self/cgroup"])
    assert out.returncode == 0 and s.id.encode() in out.stdout


@pytest.mark.parametrize("cgroups_path,runtime,pod", [
    (f"/kubepods/burstable/pod{UID}/" + "ab" * 32, "containerd", UID),
    (f"/kubepods/besteffort/pod{UID}/crio-" + "cd" * 32, "cri-o", UID),
    ("/docker/" + "ef" * 32, "docker", None),
    ("/lxc.payload.web1", "lxc", None),
    ("/machine.slice/machine-my\\x2dbox.scope", "systemd-nspawn", None),
])
def test_imitated_layouts(lab, state, started, cgroups_path, runtime, pod):
    """runc placed in another runtime's cgroup layout: identify reads the real kernel paths."""
    _need("runc")
    s = lab.start_runc(cgroups_path=cgroups_path)
    started.append(s)
    lines = open(f"/proc/{s.pid}/cgroup").read()
    assert cgroups_path in lines
    ident = identify(lines, state)
    leaf = cgroups_path.rsplit("/", 1)[1]
    expect_id = {"cri-o": leaf[len("crio-"):], "lxc": "web1", "systemd-nspawn": "my-box"}.get(runtime, leaf)
    assert (ident.runtime, ident.container_id, ident.pod_uid) == (runtime, expect_id, pod)
    assert classify_process(ident, procfs.read_process(s.pid).pidns_level).type == "container"


def test_unshare_is_a_host_process_in_its_own_pidns(lab, state, started):
    s = lab.start_unshare()
    started.append(s)
    p = procfs.read_process(s.pid)
    assert p.pidns_level == 1 and p.nspid[-1] == 1
    cls = classify_process(identify(p.cgroup, state), p.pidns_level, p.comm)
    assert (cls.type, cls.own_pidns) == ("host", True)
    assert _ps_records(state)[s.pid]["type"] == "host"


@pytest.mark.parametrize("hostpid", [False, True])
def test_podman(lab, state, started, hostpid):
    _need("podman")
    s = lab.start_podman(hostpid=hostpid)
    started.append(s)
    _, rec = _check(s, state, "podman", s.id, s.name, not hostpid)
    assert rec["image"].startswith("localhost/pbt-busybox")
    # its parent is conmon, a helper, on the host
    parent = _ps_records(state)[rec["ppid"]]
    assert parent["helper"] == "conmon" and parent["type"] == "host"


@pytest.mark.parametrize("hostpid", [False, True])
def test_docker(lab, state, started, hostpid):
    _need("dockerd")
    s = lab.start_docker(hostpid=hostpid)
    started.append(s)
    _, rec = _check(s, state, "docker", s.id, s.name, not hostpid)
    assert rec["image"].startswith("pbt-busybox")
    parent = _ps_records(state)[rec["ppid"]]
    assert parent["helper"] == "containerd-shim" and parent["type"] == "host"


def test_containerd_native_needs_the_state_lookup(lab, state, started):
    _need("containerd")
    s = lab.start_ctr()
    started.append(s)
    ident, _ = _check(s, state, "containerd", s.id, s.id, True)
    assert ident.namespace == lab.ctr_ns
    # without the runtime's state, /<ns>/<id> is not claimed as a container
    assert not identify(procfs.read_process(s.pid).cgroup).is_container


def test_short_lived_container_is_gone_after_run(lab):
    _need("runc")
    s = lab.run_short("runc", cmd=("sh", "-c", "exit 0"))
    assert not alive(s.pid)
    assert not os.path.exists(f"/run/runc/{s.id}")


def test_ps_command_filters(lab, state, started, capsys):
    _need("runc")
    s = lab.start_runc(cmd=("sleep", "600"))
    started.append(s)
    from pybpfload.cli import main
    assert main(["ps", "--json", "--container", s.id]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert lines and all(r["container_id"] == s.id for r in lines)
    assert s.pid in [r["pid"] for r in lines]
    assert main(["ps", "--host"]) == 0
    out = capsys.readouterr().out
    assert s.id[:12] not in out and "PID" in out.splitlines()[0]
    assert main(["ps", "--containers", "--runtime", "runc"]) == 0
    out = capsys.readouterr().out
    row = [l.split() for l in out.splitlines() if l.split()[0] == str(s.pid)][0]
    assert row[6] == s.id[:12]                      # 12-char ids in the table
