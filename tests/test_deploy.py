"""The Kubernetes DaemonSet (``deploy/kubernetes/daemonset.yaml``) names what the tools need.

The expectations come from the tools themselves where they can: the kernel
BTF path, the tracefs path and every runtime's default state root are taken
from pybpfload's modules, and each container's command line is parsed by the
real CLI parser, so a root added to the tool but not to the manifest, or a
mistyped option, fails here.
"""

import argparse
import importlib
import os
import posixpath

import pytest

yaml = pytest.importorskip("yaml")

from pybpfload import cli  # noqa: E402
from pybpfload.kernel.tracefs import TRACEFS_PATHS  # noqa: E402
from pybpfload.obj.btf import KERNEL_BTF_PATH  # noqa: E402
from pybpfload.tools.prometheus import parse_listen  # noqa: E402
from pybpfload.tools.runtime_state import DEFAULT_ROOTS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(ROOT, "deploy", "kubernetes", "daemonset.yaml")

#: what a pod may add: BPF/PERFMON for the BPF road, NET_ADMIN for the
#: connector road, SYS_PTRACE (optional) for /proc/<pid>/ns of host processes
ALLOWED_CAPS = {"BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE"}


@pytest.fixture(scope="module")
def docs():
    with open(MANIFEST) as f:
        return [d for d in yaml.safe_load_all(f) if d]


@pytest.fixture(scope="module")
def pod(docs):
    ds = [d for d in docs if d["kind"] == "DaemonSet"]
    assert len(ds) == 1
    spec = ds[0]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    return spec["template"]


def _containers(pod):
    return {c["name"]: c for c in pod["spec"]["containers"]}


def _mounts(pod, container):
    """{mountPath: (hostPath path, readOnly)} of a container's hostPath mounts."""
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    out = {}
    for m in container.get("volumeMounts", []):
        vol = volumes[m["name"]]          # every mount names a declared volume
        if "hostPath" in vol:
            out[m["mountPath"]] = (vol["hostPath"]["path"], bool(m.get("readOnly")))
    return out


def _parse(container):
    """The container's command parsed by pybpfload's own CLI parser."""
    argv = container["command"] + container.get("args", [])
    assert argv[:3] == ["python3", "-m", "pybpfload"], argv
    command, rest = argv[3], argv[4:]
    module = importlib.import_module(cli.COMMANDS[command][0])
    parser = argparse.ArgumentParser(prog=command)
    module.add_arguments(parser)
    return command, parser.parse_args(rest)        # SystemExit on an unknown option


def test_host_pid_and_network_namespaces(pod):
    spec = pod["spec"]
    assert spec["hostPID"] is True            # /proc in the pod is the host's
    assert spec["hostNetwork"] is True        # the process-events connector lives there
    assert spec["automountServiceAccountToken"] is False    # no API access needed
    assert {"operator": "Exists"} in spec["tolerations"]    # every node


def test_classify_writes_json_and_can_fall_back(pod):
    command, args = _parse(_containers(pod)["classify"])
    assert command == "classify" and args.json and args.source == "auto"


def test_syscalls_serves_prometheus_where_the_annotations_say(pod):
    c = _containers(pod)["syscalls"]
    command, args = _parse(c)
    assert command == "syscalls"
    host, port = parse_listen(args.prometheus)
    assert host == "0.0.0.0"
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == port
    assert port in [p["containerPort"] for p in c["ports"]]


@pytest.mark.parametrize("name", ["classify", "syscalls"])
def test_reads_the_hosts_kernel_cgroup_and_runtime_state_read_only(pod, name):
    c = _containers(pod)[name]
    mounts = _mounts(pod, c)
    needed = [posixpath.dirname(KERNEL_BTF_PATH), "/sys/fs/cgroup", TRACEFS_PATHS[0]]
    needed += DEFAULT_ROOTS.values()
    for path in needed:
        # mounted at the same path as on the host (the tools' defaults), or a
        # part of it below (docker: only <root>/containers is read)
        hits = [(mp, src, ro) for mp, (src, ro) in mounts.items()
                if mp == path or mp.startswith(path + "/")]
        assert hits, f"{name}: nothing mounts {path}"
        for mp, src, ro in hits:
            assert src == mp and ro, f"{name}: {mp} must be the host's, read-only"
    # /proc comes from hostPID: nothing may hide it
    assert not [mp for mp in c.get("volumeMounts", []) if mp["mountPath"].startswith("/proc")]


@pytest.mark.parametrize("name", ["classify", "syscalls"])
def test_capabilities_not_privileged(pod, name):
    c = _containers(pod)[name]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["runAsUser"] == 0              # Kubernetes grants added caps to root only
    caps = sc["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert {"BPF", "PERFMON"} <= set(caps["add"]) <= ALLOWED_CAPS
    if name == "classify":
        assert "NET_ADMIN" in caps["add"]
    assert sc["readOnlyRootFilesystem"] is True
    limits = c["resources"]["limits"]
    assert limits["memory"] and limits["cpu"]
    # the kernel BTF index cache is writable despite the read-only root
    assert any(m["mountPath"] == "/var/cache/pybpfload" for m in c["volumeMounts"])
