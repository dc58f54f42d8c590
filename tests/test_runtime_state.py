"""Names from the runtimes' state on disk: found, and safe on hostile state."""

import json
import os

import pytest

from pybpfload.tools.containers import identify
from pybpfload.tools.runtime_state import EMPTY, RuntimeState, read_state_file

CID = "ab12" * 16
UID = "0e8a2c1b-5f3d-4a6e-9b7c-1d2e3f4a5b6c"


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data if isinstance(data, (bytes, str)) else json.dumps(data))


@pytest.fixture
def roots(tmp_path):
    r = {k: str(tmp_path / k) for k in ("docker", "podman", "containerd", "cri-o", "runc", "crun")}
    for d in r.values():
        os.makedirs(d)
    return r


def test_docker(roots):
    _write(f"{roots['docker']}/containers/{CID}/config.v2.json",
           {"Name": "/web", "Config": {"Image": "nginx:1"}})
    st = RuntimeState(roots)
    info = st.info("docker", CID)
    assert (info.name, info.image, info.found) == ("web", "nginx:1", True)
    assert st(CID, None) == "docker"
    assert identify(f"/custom_parent/{CID}", st).runtime == "docker"


def test_podman(roots):
    _write(f"{roots['podman']}/overlay-containers/containers.json",
           [{"id": CID, "names": ["happy"], "image": "img1"}, {"id": "x"}, 3, None,
            {"id": "b" * 64, "names": ["m"], "image": "f00d", "metadata": '{"image-name":"localhost/bb:1"}'},
            {"id": "c" * 64, "names": [], "image": "f00d", "metadata": "{bad"}])
    info = RuntimeState(roots).info("podman", CID)
    assert (info.name, info.image) == ("happy", "img1")
    assert RuntimeState(roots).info("podman", "f" * 64) == EMPTY
    assert RuntimeState(roots).info("podman", "b" * 64).image == "localhost/bb:1"
    assert RuntimeState(roots).info("podman", "c" * 64).image == "f00d"


def test_containerd_kubernetes_and_native(roots):
    base = f"{roots['containerd']}/io.containerd.runtime.v2.task"
    _write(f"{base}/k8s.io/{CID}/config.json", {"annotations": {
        "io.kubernetes.cri.sandbox-name": "api-7f9", "io.kubernetes.cri.sandbox-namespace": "prod",
        "io.kubernetes.cri.sandbox-uid": UID, "io.kubernetes.cri.container-name": "app",
        "io.kubernetes.cri.image-name": "reg/app:2"}})
    _write(f"{base}/default/k1/config.json", {"ociVersion": "1.0.2"})
    st = RuntimeState(roots)
    info = st.info("containerd", CID)          # namespace found among the usual ones
    assert (info.name, info.pod_name, info.pod_namespace, info.pod_uid, info.image) == \
        ("app", "api-7f9", "prod", UID, "reg/app:2")
    assert st.info("containerd", "k1", "default").name == "k1"
    assert st("k1", "default") == "containerd"
    assert st("k1", "other") is None
    ident = identify("/default/k1", st)
    assert (ident.runtime, ident.container_id, ident.namespace) == ("containerd", "k1", "default")


def test_crio(roots):
    _write(f"{roots['cri-o']}/overlay-containers/{CID}/userdata/config.json", {"annotations": {
        "io.kubernetes.pod.name": "db-0", "io.kubernetes.pod.namespace": "data",
        "io.kubernetes.pod.uid": UID, "io.kubernetes.container.name": "pg",
        "io.kubernetes.cri-o.ImageName": "pg:16"}})
    info = RuntimeState(roots).info("cri-o", CID)
    assert (info.name, info.pod_name, info.pod_namespace, info.image) == ("pg", "db-0", "data", "pg:16")


def test_runc_and_crun(roots):
    _write(f"{roots['runc']}/box1/state.json", {"id": "box1"})
    _write(f"{roots['crun']}/box2/status", {"pid": 5})
    st = RuntimeState(roots)
    assert st("box1") == "runc" and st("box2") == "crun" and st("box3") is None
    assert st.info("runc", "box1").name == "box1"
    assert st.info("crun", "box2").name == "box2"
    assert identify("/box1", st).runtime == "runc"


def test_symlinks_never_followed(roots, tmp_path):
    outside = tmp_path / "outside"
    _write(str(outside / "config.v2.json"), {"Name": "/evil"})
    os.makedirs(f"{roots['docker']}/containers")
    os.symlink(str(outside), f"{roots['docker']}/containers/{CID}")       # directory link
    os.makedirs(f"{roots['runc']}/b")
    os.symlink(str(outside / "config.v2.json"), f"{roots['runc']}/b/state.json")   # file link
    st = RuntimeState(roots)
    assert st.info("docker", CID) == EMPTY
    assert st(CID) is None
    # a real directory under runc's root is a runc container (its state.json
    # comes later than its first process), but the planted link is never read
    assert st("b") == "runc"
    assert read_state_file(roots["runc"], ["b", "state.json"]) is None


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe", b"[]", b"null", b"{\"Name\": 5}",
                                     b"[" * 100000, json.dumps({"Config": []}).encode()])
def test_malformed_state_gives_empty(roots, content):
    _write(f"{roots['docker']}/containers/{CID}/config.v2.json", content)
    _write(f"{roots['podman']}/overlay-containers/containers.json", content)
    _write(f"{roots['containerd']}/io.containerd.runtime.v2.task/default/{CID}/config.json", content)
    st = RuntimeState(roots)
    for rt in ("docker", "podman", "containerd", "cri-o", "runc", "crun", "nope", None):
        info = st.info(rt, CID)
        assert isinstance(info.name, str) and isinstance(info.image, str)
        assert info.name in ("", CID)


def test_huge_and_special_files(roots):
    _write(f"{roots['docker']}/containers/{CID}/config.v2.json", b" " * 64 + b'{"Name":"/x"}')
    st = RuntimeState(roots)
    assert st.info("docker", CID).name == "x"
    big = RuntimeState(roots)
    import pybpfload.tools.runtime_state as rs
    assert rs.read_state_file(roots["docker"], ["containers", CID, "config.v2.json"], limit=10) is None
    os.makedirs(f"{roots['runc']}/fifo")
    os.mkfifo(f"{roots['runc']}/fifo/state.json")   # must not block
    assert big("fifo") == "runc"
    assert read_state_file(roots["runc"], ["fifo", "state.json"]) is None
    assert big.info("runc", "fifo").name in ("", "fifo")


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "", "x\0y", "z" * 300, None, 5])
def test_hostile_ids(roots, bad):
    st = RuntimeState(roots)
    assert st.info("docker", bad) == EMPTY
    assert st(bad, "..") is None


def test_cache_is_bounded_and_negative_answers_expire(roots):
    now = [0.0]
    st = RuntimeState(roots, cache_size=4, negative_ttl=2.0, clock=lambda: now[0])
    assert st("late") is None
    _write(f"{roots['runc']}/late/state.json", {"id": "late"})
    assert st("late") is None            # still the cached miss
    now[0] = 3.0
    assert st("late") == "runc"          # expired: found
    for i in range(20):
        st(f"n{i}")
    assert len(st._cache) <= 4
    # a positive answer stays until evicted
    st.clear()
    assert st.info("runc", "late").name == "late"
