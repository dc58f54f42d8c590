"""The kernel-free layer: ELF objects, BTF, .BTF.ext and relocations.

Pure functions over bytes; nothing in this package calls bpf(2) or imports
``pybpfload.kernel``.
"""
