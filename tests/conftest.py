import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
OBJECTS = ROOT / "tests" / "objects"
PREBUILT = ROOT / "prebuilt"


def _bpf_unavailable_reason():
    if os.geteuid() != 0:
        return "needs root (bpf(2), perf_event_open, tracefs)"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "the kernel has no BTF at /sys/kernel/btf/vmlinux"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _bpf_unavailable_reason()
    if not reason:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def objects_dir():
    return OBJECTS
