"""Run one fuzz target under atheris (coverage-guided, libFuzzer).

    python3 tests/fuzz/run.py TARGET [libFuzzer options...]

e.g. ``python3 tests/fuzz/run.py btf -max_total_time=60``.  The seeds of the
target (from the committed objects) and its regression corpus are written to
a temporary directory that libFuzzer starts from; crashing inputs are written
as ``crash-*`` files in the current directory (or ``-artifact_prefix=``).
Copy a crash into ``tests/fuzz/corpus/<target>/`` once the parser is fixed.

libFuzzer ends the process with exit(), so the fuzzing runs in a child
process and this one removes the temporary files afterwards.  Needs atheris
(``pip install atheris``); the normal suite does not.
"""

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
CHECKOUT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)          # the fuzz package
sys.path.insert(0, CHECKOUT)       # pybpfload from this checkout


def child(name, argv):
    import atheris
    with atheris.instrument_imports(include=["pybpfload"]):
        import pybpfload.obj.elf  # noqa: F401
        import pybpfload.obj.btf  # noqa: F401
        import pybpfload.obj.btf_ext  # noqa: F401
        import pybpfload.obj.layout  # noqa: F401
        import pybpfload.kernel.perf_buffer  # noqa: F401
        import pybpfload.kernel.ringbuf  # noqa: F401
        import pybpfload.tools.containers  # noqa: F401
        import pybpfload.tools.runtime_state  # noqa: F401
    from fuzz import targets
    targets.btfs()                  # parse the seed BTFs before fuzzing starts
    atheris.Setup([sys.argv[0]] + argv, targets.TARGETS[name])
    atheris.Fuzz()


def main():
    from fuzz import targets
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3:])
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        sys.exit(f"usage: {sys.argv[0]} TARGET [libFuzzer options]; targets: "
                 f"{' '.join(targets.TARGETS)}")
    name = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix=f"pybpf-fuzz-{name}-")
    try:
        seed_dir = os.path.join(tmp, "seeds")
        os.mkdir(seed_dir)
        for i, data in enumerate(targets.seeds(name)):
            with open(os.path.join(seed_dir, f"seed-{i:03d}"), "wb") as f:
                f.write(data)
        for path, _ in targets.corpus(name):
            shutil.copy(path, os.path.join(seed_dir, "regression-" + path.name))
        env = dict(os.environ, PYBPF_FUZZ_TMP=tmp)
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name] + sys.argv[2:] + [seed_dir]
        return subprocess.call(cmd, env=env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        targets.cleanup()


if __name__ == "__main__":
    sys.exit(main())
