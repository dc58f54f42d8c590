# Build the BPF objects with clang (and nothing else), run the tests.
#
#   make            rebuild prebuilt/*.bpf.o and tests/objects/*.bpf.o from their sources
#   make deps       install what the tests need (apt and pip; needs root)
#   make test       run the test suite (as root, so kernel tests run)
#   make bench      every benchmark beside the peers -> bench/RESULTS.md (root)

CLANG ?= clang
LLVM_STRIP ?= llvm-strip
PYTHON ?= python3
# -fdebug-prefix-map keeps the checkout's path out of the objects, so a
# rebuild anywhere gives the same bytes as the committed object.
BPF_CFLAGS = -g -O2 -target bpf -mcpu=v3 -Wall -Werror -Ibpf/include \
	-fdebug-prefix-map=$(CURDIR)=. -fno-ident

PROGS := $(patsubst bpf/%.bpf.c,prebuilt/%.bpf.o,$(wildcard bpf/*.bpf.c))
TEST_OBJS := $(patsubst tests/bpf/%.bpf.c,tests/objects/%.bpf.o,$(wildcard tests/bpf/*.bpf.c))

.PHONY: all deps test test-oldest-python clean
all: $(PROGS) $(TEST_OBJS)

prebuilt/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/include/*.h)
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@
	$(LLVM_STRIP) -g $@

# Test objects keep their DWARF: the ELF reader must skip .rel.debug_* sections.
tests/objects/%.bpf.o: tests/bpf/%.bpf.c $(wildcard bpf/include/*.h) $(wildcard tests/bpf/*.h)
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -Itests/bpf -c $< -o $@

# CO-RE target variants: the same source built with -DTARGET, whose .BTF the
# CO-RE tests relocate against (fields moved, resized, removed...).
CORE_TARGETS := tests/objects/core_reloc.target.bpf.o
all: $(CORE_TARGETS)
tests/objects/%.target.bpf.o: tests/bpf/%.bpf.c $(wildcard bpf/include/*.h) $(wildcard tests/bpf/*.h)
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -Itests/bpf -DTARGET -c $< -o $@

# The kernel's types as one C header, written by pybpfload itself (no bpftool):
# build a program with -DUSE_VMLINUX_H -Ibpf to use it instead of kernel_types.h.
.PHONY: vmlinux
vmlinux:
	$(PYTHON) -m pybpfload btf dump /sys/kernel/btf/vmlinux --format c --time -o bpf/vmlinux.h

# One-file zipapp: pybpfload, the prebuilt objects and the pure-Python
# dependencies (the installed versions, with their licence files in their
# .dist-info); run it as `python3 dist/pybpfload.pyz classify`.
PYZ_BUILD = build/pyz
PYZ_DEPS = pyelftools construct pyroute2
.PHONY: pyz
pyz: $(PROGS)
	rm -rf $(PYZ_BUILD) && mkdir -p $(PYZ_BUILD) dist
	$(PYTHON) -m pip install -q --disable-pip-version-check --no-compile --no-deps \
		--target $(PYZ_BUILD) . $$($(PYTHON) -c 'import sys; from importlib.metadata import version; print(" ".join(n + "==" + version(n) for n in sys.argv[1:]))' $(PYZ_DEPS))
	rm -rf $(PYZ_BUILD)/bin
	printf 'import runpy\nrunpy.run_module("pybpfload", run_name="__main__", alter_sys=True)\n' > $(PYZ_BUILD)/__main__.py
	$(PYTHON) -m zipapp $(PYZ_BUILD) -c -p '/usr/bin/env python3' -o dist/pybpfload.pyz
	@ls -l dist/pybpfload.pyz

deps:
	bash .ci/deps

# Every benchmark in one run, side by side with the peers (installs them; not
# part of CI): writes bench/RESULTS.md and bench/*.png.  Needs root.
.PHONY: bench
bench:
	$(PYTHON) bench/run_all.py

test:
	$(PYTHON) -m pytest -q tests

# The oldest Python we support, where one is installed (pyenv keeps 3.9 here):
# the kernel-free layer, the kernel layer and the tools' record building.
PY39 ?= $(firstword $(wildcard /root/.pyenv/versions/3.9*/bin/python3) $(shell command -v python3.9))
OLDEST_PY_TESTS = tests/test_btf.py tests/test_elf.py tests/test_core.py tests/test_link.py \
	tests/test_btf_ext.py tests/test_containers.py tests/test_output.py tests/test_classify.py \
	tests/test_syscalls.py tests/test_inspect.py tests/test_bpf_object.py tests/test_kernel_maps.py \
	tests/test_kernel_programs.py tests/test_kernel_rings.py tests/test_ps.py
test-oldest-python:
	@if [ -z "$(PY39)" ]; then echo "no Python 3.9 here: oldest-Python run skipped"; else \
	  $(PY39) -m pip install -q --disable-pip-version-check pyelftools construct pyroute2 pytest hypothesis && \
	  $(PY39) -m pytest -q -p no:cacheprovider $(OLDEST_PY_TESTS); fi

clean:
	rm -f $(PROGS) $(TEST_OBJS)
