"""The cgroup-path parser: many real and tricky layouts, table-driven."""

import pytest

from pybpfload.tools.containers import (
    HOST, Identity, classify_process, cgroup_paths, helper_role, identify, identify_path)

H64 = "3f2a" * 16
H64B = "9c1d" * 16
UID = "0e8a2c1b-5f3d-4a6e-9b7c-1d2e3f4a5b6c"
UID_ = UID.replace("-", "_")

# (path, runtime, container_id, pod_uid, helper)
LAYOUTS = [
    # docker
    (f"/docker/{H64}", "docker", H64, None, None),
    (f"/system.slice/docker-{H64}.scope", "docker", H64, None, None),
    (f"/docker/{H64}/init.scope", "docker", H64, None, None),
    (f"/docker/{H64}/a/b/c", "docker", H64, None, None),
    (f"docker-{H64}.scope", "docker", H64, None, None),             # top cut off
    (f"{H64}/init.scope".join(["/docker/", ""]), "docker", H64, None, None),
    (f"/docker/{H64}/docker/{H64B}", "docker", H64B, None, None),   # docker in docker
    (f"/mine.slice/docker-{H64}.scope/sub", "docker", H64, None, None),
    # containerd CRI
    (f"/system.slice/cri-containerd-{H64}.scope", "containerd", H64, None, None),
    (f"/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{H64}", "containerd", H64, UID, None),
    (f"/system.slice:cri-containerd:{H64}", "containerd", H64, None, None),
    # CRI-O
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{H64}.scope",
     "cri-o", H64, UID, None),
    (f"/kubepods/burstable/pod{UID}/crio-{H64}", "cri-o", H64, UID, None),
    (f"/kubepods/burstable/pod{UID}/crio-conmon-{H64}", "cri-o", H64, UID, "conmon"),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{H64}.scope", "cri-o", H64, UID, "conmon"),
    # podman
    (f"/libpod_parent/libpod-{H64}", "podman", H64, None, None),
    (f"/machine.slice/libpod-{H64}.scope", "podman", H64, None, None),
    (f"/machine.slice/libpod-conmon-{H64}.scope", "podman", H64, None, "conmon"),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{H64}.scope/container",
     "podman", H64, None, None),
    (f"/machine.slice/machine-libpod_pod_{H64B}.slice/libpod-{H64}.scope", "podman", H64, None, None),
    ("/libpod_parent/conmon", "podman", None, None, "conmon"),
    # kubernetes
    (f"/kubepods/burstable/pod{UID}/{H64}", "containerd", H64, UID, None),
    (f"/kubepods/pod{UID}/{H64}", "containerd", H64, UID, None),
    (f"/kubepods/besteffort/pod{UID}/{H64}/init.scope", "containerd", H64, UID, None),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{H64}.scope",
     "containerd", H64, UID, None),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{H64}.scope", "containerd", H64, UID, None),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/docker-{H64}.scope", "docker", H64, UID, None),
    (f"kubepods-burstable-pod{UID_}.slice/cri-containerd-{H64}.scope", "containerd", H64, UID, None),
    (f"pod{UID}/{H64}", "containerd", H64, UID, None),
    (f"/kubepods/burstable/pod{UID}", None, None, UID, None),
    # LXC / LXD
    ("/lxc.payload.web1", "lxc", "web1", None, None),
    ("/lxc.payload.web1/system.slice/cron.service", "lxc", "web1", None, None),
    ("/lxc.payload.web1/init.scope", "lxc", "web1", None, None),
    (f"/lxc.payload.web1/system.slice/docker-{H64}.scope", "docker", H64, None, None),
    ("/lxc/old-one", "lxc", "old-one", None, None),
    ("/lxc.payload/proj_c2", "lxc", "proj_c2", None, None),
    ("/lxc.monitor.web1", "lxc", "web1", None, "lxc-monitor"),
    ("/lxc.monitor/web1", "lxc", "web1", None, "lxc-monitor"),
    # systemd-nspawn
    ("/machine.slice/machine-debian.scope", "systemd-nspawn", "debian", None, None),
    (r"/machine.slice/machine-my\x2dbox.scope", "systemd-nspawn", "my-box", None, None),
    (r"/machine.slice/machine-my\x2dbox.scope/payload/system.slice", "systemd-nspawn", "my-box", None, None),
    (r"/machine.slice/machine-my\x2dbox.scope/supervisor", "systemd-nspawn", "my-box", None, "nspawn-supervisor"),
]

NEGATIVES = [
    "/", "", "/init.scope", "/user.slice/user-1000.slice/session-3.scope",
    "/system.slice/docker.service", "/system.slice/containerd.service", "/system.slice/crio.service",
    "/system.slice/docker.socket", f"/process_api/{H64[:32]}", f"/{H64}", f"/kubepods",
    "/kubepods/burstable", "/kubepods.slice/kubepods-besteffort.slice", "/docker", "/lxc.payload.",
    r"/machine.slice/machine-qemu\x2d1\x2dvm.scope", "/system.slice/docker-compose@x.service",
    "/crio-conmon", "/libpod-xyz", "/docker/not-hex", "cker-abc.scope",
]


@pytest.mark.parametrize("path,runtime,cid,pod,helper", LAYOUTS)
def test_layouts(path, runtime, cid, pod, helper):
    ident = identify(path)
    assert (ident.runtime, ident.container_id, ident.pod_uid, ident.helper) == (runtime, cid, pod, helper)
    if helper is None and (cid or pod):
        assert ident.is_container
    else:
        assert not ident.is_container


@pytest.mark.parametrize("path", NEGATIVES)
def test_host_paths_are_not_containers(path):
    ident = identify(path)
    assert not ident.is_container, ident
    assert ident.container_id is None


PROC_DOCKER = f"""12:pids:/docker/{H64}
11:memory:/docker/{H64}
1:name=systemd:/docker/{H64}
0::/docker/{H64}
"""


def test_proc_cgroup_text_and_lines():
    assert identify(PROC_DOCKER).container_id == H64
    assert identify(PROC_DOCKER.encode()).runtime == "docker"
    assert identify(PROC_DOCKER.splitlines()).runtime == "docker"
    assert identify([(0, "", f"/docker/{H64}")]).container_id == H64
    assert cgroup_paths("0::/")[0] == ("", "/")


def test_v1_beats_empty_v2():
    # crun in legacy view: only the v1 lines name the container
    text = f"4:memory:/{H64}\n3:cpu:/libpod_parent/libpod-{H64}\n0::/\n"
    ident = identify(text)
    assert ident.runtime == "podman" and ident.container_id == H64


def test_container_beats_helper_and_host():
    lines = ["5:memory:/process_api/abc", f"4:cpu:/libpod_parent/libpod-conmon-{H64}",
             f"0::/libpod_parent/libpod-{H64}"]
    assert identify(lines).helper is None
    assert identify(lines[:2]).helper == "conmon"
    assert identify(lines[:1]) == HOST


def test_lookup_confirms_unnamed_layouts():
    calls = []

    def lookup(name, parent):
        calls.append((name, parent))
        if (parent, name) == ("default", "k1"):
            return "containerd"
        if name == "mybox":
            return "runc"
        if name == "c2":
            return "crun"
        if name == H64B:
            return "docker"
        return None

    ident = identify("/default/k1", lookup)
    assert (ident.runtime, ident.container_id, ident.namespace) == ("containerd", "k1", "default")
    assert identify("/default/k1") == HOST                 # without the lookup: unknown
    assert identify("/process_api/123/default/k1", lookup).container_id == "k1"
    assert identify("/mybox", lookup).runtime == "runc"
    assert identify("/c2/sub", lookup).runtime == "crun"
    assert identify(f"/actions_job/{H64B}", lookup).runtime == "docker"
    assert identify("/other/k2", lookup) == HOST
    assert ("k1", "default") in calls
    # systemd units are never looked up
    calls.clear()
    identify("/system.slice/foo.service", lookup)
    assert calls == []


def test_a_failing_lookup_is_ignored():
    def lookup(name, parent):
        raise OSError("boom")
    assert identify("/default/k1", lookup) == HOST


def test_garbage_never_raises():
    for junk in [b"\xff\xfe:\x00", "0::", "::::", "1:x", "\n\n", None, [], [None, 3, ("a",)],
                 "/" * 5000, "a:b:c", ":cri-containerd:", {"memory": "/docker/" + H64}]:
        identify(junk)
    assert identify({"memory": "/docker/" + H64}).container_id == H64


def test_classify():
    cont = identify(f"/docker/{H64}")
    c = classify_process(cont, 1, b"sleep")
    assert (c.type, c.own_pidns, c.helper) == ("container", True, None)
    c = classify_process(cont, 0, "sleep")        # --pid=host
    assert (c.type, c.own_pidns) == ("container", False)
    c = classify_process(HOST, 1, "sh")          # unshare -p
    assert (c.type, c.own_pidns) == ("host", True)
    c = classify_process(HOST, 0, "containerd-shim")
    assert (c.type, c.helper) == ("host", "containerd-shim")
    c = classify_process(cont, 0, "runc:[2:INIT]")
    assert c.helper == "runc-init"
    c = classify_process(identify(f"/machine.slice/libpod-conmon-{H64}.scope"), 0, "conmon")
    assert (c.type, c.helper) == ("host", "conmon")
    assert helper_role("containerd-shim-runc-v2") == "containerd-shim"
    assert helper_role("bash") is None
    assert classify_process(None, None).type == "host"


def test_identity_is_hashable_and_short():
    ident = identify_path(f"/docker/{H64}")
    assert ident.short_id == H64[:12]
    assert {ident: 1}[Identity("docker", H64, None, None, None, f"/docker/{H64}")] == 1


def test_fuzzed_paths_never_raise():
    from hypothesis import given, settings, strategies as st
    seg = st.one_of(
        st.sampled_from(["docker", "kubepods", "kubepods.slice", "lxc", "lxc.payload", "lxc.monitor",
                         "libpod_parent", "machine.slice", "supervisor", "init.scope", H64,
                         f"pod{UID}", f"docker-{H64}.scope", f"crio-conmon-{H64}", ":crio:",
                         r"machine-\x2d.scope", "machine-.scope", "lxc.payload."]),
        st.text(max_size=20))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(seg, max_size=8), st.booleans())
    def check(parts, lead):
        path = ("/" if lead else "") + "/".join(parts)
        ident = identify(path, lambda name, parent: "runc" if name == H64 else None)
        assert isinstance(ident, Identity)
        classify_process(ident, 0, path.encode("utf-8", "surrogatepass"))
        identify(f"0::{path}\n1:cpu:{path}")

    check()
