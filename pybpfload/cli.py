"""``python -m pybpfload COMMAND``: the command line.

Each command lives in its own module under ``pybpfload.tools`` with two
functions, ``add_arguments(parser)`` and ``run(args) -> int``.  Only the
module of the command being run is imported, so ``inspect`` does not pay for
what ``classify`` uses.

Errors the user can cause (``BPFError``) are printed as one line on stderr
with a non-zero exit; ``--debug`` adds the traceback.
"""

import argparse
import importlib
import os
import sys

#: command -> (module, one-line description)
COMMANDS = {
    "inspect": ("pybpfload.tools.inspect", "show an object's programs, maps, variables and CO-RE relocations"),
    "load": ("pybpfload.tools.load", "load an object's programs and maps and pin them in bpffs"),
    "classify": ("pybpfload.tools.classify", "every exec on the host, live, as container or host"),
    "ps": ("pybpfload.tools.ps", "running processes classified as container or host (no BPF)"),
    "syscalls": ("pybpfload.tools.syscalls", "live per-container system-call counts"),
    "btf": ("pybpfload.tools.btf_cmd", "dump BTF (the kernel's by default), e.g. as a C header"),
}

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _top_parser():
    p = argparse.ArgumentParser(
        prog="python -m pybpfload",
        description="A pure-Python eBPF loader and container-aware process tools.",
        epilog="Run 'python -m pybpfload COMMAND --help' for a command's options.")
    p.add_argument("--debug", action="store_true", help="show tracebacks and loader details")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, desc) in COMMANDS.items():
        sub.add_parser(name, help=desc, add_help=False)
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    command = argv[0] if argv and not argv[0].startswith("-") else None
    if command not in COMMANDS:
        parser = _top_parser()
        if command is None and not argv:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        parser.parse_args(argv)  # prints help or the usage error and exits
        return EXIT_USAGE
    module_name, desc = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"python -m pybpfload {command}", description=desc)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and loader details")
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    args.debug = debug or args.debug
    return run_command(module.run, args)


def run_command(run, args):
    """Run a command's ``run(args)``, turning errors into one line on stderr."""
    from .errors import BPFError

    try:
        return run(args) or 0
    except BPFError as exc:
        if args.debug:
            import traceback
            traceback.print_exc()
            if getattr(exc, "log", None):   # a verifier rejection: its whole log
                print(exc.log.rstrip("\n"), file=sys.stderr)
        print(f"pybpfload: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (| head): leave quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 0
