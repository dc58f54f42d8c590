"""pybpfload: a pure-Python eBPF loader (no BCC, no libbpf, no compiler).

The library API::

    import pybpfload

    with pybpfload.open_object("prog.bpf.o") as obj:
        obj.set_variable("target_tgid", 1234)     # .rodata, before load
        obj.load()
        obj.attach()                              # every program, by SEC() name
        with obj.ring_buffer("events") as events:
            for raw in events.poll(1000):
                ...
        for key, value in obj.typed_map("calls").items():   # decoded through BTF
            ...

Names are imported lazily (PEP 562), so ``import pybpfload`` stays cheap:
the ELF/BTF layer and ctypes load only when first used.
"""

import importlib

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "BPFObject": "pybpfload.kernel.bpf_object",
    "TypedMap": "pybpfload.kernel.bpf_object",
    "Map": "pybpfload.kernel.maps",
    "Program": "pybpfload.kernel.programs",
    "Link": "pybpfload.kernel.attach",
    "PerfBuffer": "pybpfload.kernel.perf_buffer",
    "RingBuffer": "pybpfload.kernel.ringbuf",
    "Layout": "pybpfload.obj.layout",
    "BTF": "pybpfload.obj.btf",
    "read_object": "pybpfload.obj.elf",
    "read_object_file": "pybpfload.obj.elf",
    # errors
    "BPFError": "pybpfload.errors",
    "ParseError": "pybpfload.errors",
    "ELFError": "pybpfload.errors",
    "BTFError": "pybpfload.errors",
    "RelocationError": "pybpfload.errors",
    "ConfigError": "pybpfload.errors",
    "KernelError": "pybpfload.errors",
    "NoPrivilegeError": "pybpfload.errors",
    "NotSupportedError": "pybpfload.errors",
    "VerifierError": "pybpfload.errors",
    "AttachError": "pybpfload.errors",
    "PinError": "pybpfload.errors",
}

__all__ = sorted(_EXPORTS) + ["open_object", "__version__"]


def open_object(source, **kwargs):
    """Open a BPF ELF object (a path, or its bytes) as a :class:`BPFObject`.

    Nothing touches the kernel until ``load()``; use it as a context manager
    so that everything loaded is closed again.
    """
    from .kernel.bpf_object import BPFObject
    return BPFObject(source, **kwargs)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pybpfload' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
