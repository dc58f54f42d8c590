#!/usr/bin/env python3
"""Generate pybpfload/tools/syscall_table.py: system call number -> name
tables for x86_64, i386 (x86's 32-bit compat ABI) and arm64, read from the
kernel UAPI headers of Debian's linux-libc-dev.

Sources (under --include, default /usr/include):
  x86_64  x86_64-linux-gnu/asm/unistd_64.h   (flat #define __NR_x N)
  i386    x86_64-linux-gnu/asm/unistd_32.h   (flat)
  arm64   asm-generic/unistd.h, evaluated as arm64 includes it: 64-bit
          longs and the __ARCH_WANT_* macros of
          arch/arm64/include/uapi/asm/unistd.h (see ARM64_WANTS)

Build-time only (run by hand when the headers change; the output is
committed):  python3 bpf/gen_syscall_tables.py [--include DIR] [-o FILE]
"""
import argparse
import ast
import os
import re
import sys

# arch/arm64/include/uapi/asm/unistd.h defines these before including
# asm-generic/unistd.h (memfd_secret: enabled for arm64 as for x86).
ARM64_WANTS = (
    "__ARCH_WANT_RENAMEAT",
    "__ARCH_WANT_NEW_STAT",
    "__ARCH_WANT_SET_GET_RLIMIT",
    "__ARCH_WANT_TIME32_SYSCALLS",
    "__ARCH_WANT_SYS_CLONE3",
    "__ARCH_WANT_MEMFD_SECRET",
)

X86_64_HEADER = "x86_64-linux-gnu/asm/unistd_64.h"
I386_HEADER = "x86_64-linux-gnu/asm/unistd_32.h"
GENERIC_HEADER = "asm-generic/unistd.h"
VERSION_HEADER = "linux/version.h"

OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                      "pybpfload", "tools", "syscall_table.py")

_DEFINE = re.compile(r"#\s*define\s+(\w+)(?:\s+(.*?))?\s*$")
_NOT_NAMES = {"syscalls", "arch_specific_syscall"}


def parse_flat(text):
    """{nr: name} from a header of plain `#define __NR_<name> <nr>` lines."""
    table = {}
    for line in text.splitlines():
        m = _DEFINE.match(line)
        if m and m.group(1).startswith("__NR_") and m.group(2) and m.group(2).isdigit():
            name = m.group(1)[len("__NR_"):]
            if name not in _NOT_NAMES:
                table.setdefault(int(m.group(2)), name)
    return table


def _condition(expr, macros, bits_per_long):
    """Evaluate a preprocessor #if expression of the generic header
    (defined(), ==, !=, &&, ||, !, integers, __BITS_PER_LONG)."""
    expr = re.sub(r"defined\s*\(\s*(\w+)\s*\)|defined\s+(\w+)",
                  lambda m: "1" if (m.group(1) or m.group(2)) in macros else "0", expr)
    expr = expr.replace("__BITS_PER_LONG", str(bits_per_long))
    expr = expr.replace("&&", " and ").replace("||", " or ")
    expr = re.sub(r"!(?!=)", " not ", expr)
    tree = ast.parse(expr.strip(), mode="eval")
    allowed = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not,
               ast.Compare, ast.Eq, ast.NotEq, ast.Constant, ast.Load)
    for node in ast.walk(tree):
        if not isinstance(node, allowed):
            raise ValueError(f"unsupported #if expression: {expr!r}")
    return bool(eval(compile(tree, "<#if>", "eval"), {"__builtins__": {}}))


def parse_generic(text, wants, bits_per_long=64):
    """{nr: name} from asm-generic/unistd.h as an architecture that defines
    `wants` and has `bits_per_long`-bit longs (not compat) would see it."""
    macros = {name: "" for name in wants}
    stack = []  # per open #if: [this branch active, some branch taken]

    def active():
        return all(frame[0] for frame in stack)

    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("#"):
            continue
        directive = line[1:].strip()
        word = directive.split(None, 1)[0] if directive else ""
        rest = directive[len(word):].strip()
        rest = re.sub(r"/\*.*?\*/", "", rest).strip()
        if word in ("if", "ifdef", "ifndef"):
            if not active():
                stack.append([False, True])
                continue
            if word == "ifdef":
                value = rest in macros
            elif word == "ifndef":
                value = rest not in macros
            else:
                value = _condition(rest, macros, bits_per_long)
            stack.append([value, value])
        elif word == "elif":
            frame = stack[-1]
            parent_active = all(f[0] for f in stack[:-1])
            value = parent_active and not frame[1] and _condition(rest, macros, bits_per_long)
            frame[0] = value
            frame[1] = frame[1] or value
        elif word == "else":
            frame = stack[-1]
            frame[0] = not frame[1]
            frame[1] = True
        elif word == "endif":
            stack.pop()
        elif not active():
            continue
        elif word == "define":
            m = _DEFINE.match("#" + directive)
            if m:
                macros[m.group(1)] = (m.group(2) or "").strip()
        elif word == "undef":
            macros.pop(rest, None)

    def value_of(name, depth=0):
        value = macros.get(name, "")
        if value.isdigit():
            return int(value)
        if value in macros and depth < 8:
            return value_of(value, depth + 1)
        return None

    table = {}
    for name in macros:
        if not name.startswith("__NR_") or name[len("__NR_"):] in _NOT_NAMES:
            continue
        nr = value_of(name)
        if nr is not None:
            table.setdefault(nr, name[len("__NR_"):])
    return dict(sorted(table.items()))


def headers_version(include):
    """'6.1.192' from linux/version.h, or 'unknown'."""
    try:
        with open(os.path.join(include, VERSION_HEADER)) as f:
            text = f.read()
    except OSError:
        return "unknown"
    parts = [re.search(rf"LINUX_VERSION_{p}\s+(\d+)", text) for p in ("MAJOR", "PATCHLEVEL", "SUBLEVEL")]
    if not all(parts):
        return "unknown"
    return ".".join(m.group(1) for m in parts)


def build_tables(include):
    def read(rel):
        with open(os.path.join(include, rel)) as f:
            return f.read()

    return {
        "x86_64": parse_flat(read(X86_64_HEADER)),
        "i386": parse_flat(read(I386_HEADER)),
        "arm64": parse_generic(read(GENERIC_HEADER), ARM64_WANTS, 64),
    }


_TEMPLATE_HEAD = '''"""System call numbers -> names, per architecture ABI.

GENERATED by bpf/gen_syscall_tables.py from the Linux {version} UAPI
headers (Debian linux-libc-dev); do not edit, regenerate.  Syscalls added
by later kernels are not in the tables: syscall_name() answers
"syscall_<nr>" for them, as for any unknown number.

Tables: x86_64 (native), i386 (x86's 32-bit compat ABI), arm64 (native;
arm64's own 32-bit compat ABI, arm, is not included).
"""
import os

__all__ = ["HEADERS_VERSION", "SYSCALL_TABLES", "COMPAT_ARCH", "host_arch",
           "syscall_name", "syscall_number"]

HEADERS_VERSION = "{version}"

'''

_TEMPLATE_TAIL = '''
SYSCALL_TABLES = {{
{tables}
}}

#: the 32-bit compat ABI of each 64-bit architecture, where we have a table
COMPAT_ARCH = {{"x86_64": "i386", "arm64": "arm"}}

_MACHINE_TO_ARCH = {{"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64",
                    "arm64": "arm64", "i386": "i386", "i686": "i386"}}


def host_arch():
    """This machine's architecture under the names of SYSCALL_TABLES."""
    machine = os.uname().machine
    return _MACHINE_TO_ARCH.get(machine, machine)


def _table(arch, compat):
    arch = host_arch() if arch is None else _MACHINE_TO_ARCH.get(arch, arch)
    if compat:
        arch = COMPAT_ARCH.get(arch, arch)
    return SYSCALL_TABLES.get(arch, {{}})


def syscall_name(nr, arch=None, compat=False):
    """The name of system call `nr` on `arch` (default: this machine), in its
    32-bit compat ABI when `compat`; "syscall_<nr>" when unknown."""
    name = _table(arch, compat).get(nr)
    return name if name is not None else f"syscall_{{nr}}"


def syscall_number(name, arch=None, compat=False):
    """The number of the system call called `name`, or None."""
    for nr, known in _table(arch, compat).items():
        if known == name:
            return nr
    return None
'''


def render(tables, version):
    out = [_TEMPLATE_HEAD.format(version=version)]
    names = []
    for arch, table in tables.items():
        var = arch.upper()
        names.append(f'    "{arch}": {var},')
        out.append(f"{var} = {{\n")
        for nr in sorted(table):
            out.append(f'    {nr}: "{table[nr]}",\n')
        out.append("}\n\n")
    out.append(_TEMPLATE_TAIL.format(tables="\n".join(names)))
    return "".join(out)


def generate(include="/usr/include"):
    """The text of syscall_table.py for the headers under `include`."""
    return render(build_tables(include), headers_version(include))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--include", default="/usr/include", help="UAPI header root")
    parser.add_argument("-o", "--output", default=OUTPUT, help="file to write")
    args = parser.parse_args(argv)
    try:
        text = generate(args.include)
    except OSError as e:
        print(f"gen_syscall_tables: {e} (install linux-libc-dev)", file=sys.stderr)
        return 1
    with open(args.output, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
