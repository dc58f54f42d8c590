"""The exceptions pybpfload raises.

Every error a user can cause (a broken object, a missing kernel feature, a
verifier rejection, no privilege) is a subclass of :class:`BPFError`, whose
``str()`` is one line saying what went wrong and, where there is one, what to
do.  The command line prints that line and exits non-zero; anything else is a
bug in pybpfload.
"""


class BPFError(Exception):
    """Base class of every error pybpfload raises on purpose."""

    #: A short hint of what the user can do; appended to the message.
    hint = ""

    def __init__(self, message, hint=None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def __str__(self):
        msg = super().__str__()
        return f"{msg} ({self.hint})" if self.hint else msg


# -- kernel-free layer -------------------------------------------------------

class ParseError(BPFError):
    """Malformed input: an ELF object, BTF, .BTF.ext or an event record."""


class ELFError(ParseError):
    """The ELF object is not a BPF object pybpfload can read."""


class BTFError(ParseError):
    """BTF data is truncated, corrupt or uses an unknown kind."""


class UnknownSectionError(ELFError):
    """A program lives in a section whose SEC() name is not understood."""


class RelocationError(BPFError):
    """A map, data, call or CO-RE relocation could not be applied."""


class ConfigError(BPFError):
    """A .rodata variable name or value given before load is wrong."""


# -- kernel layer ------------------------------------------------------------

class KernelError(BPFError):
    """A system call failed.  ``errno`` holds the error number."""

    def __init__(self, message, errno=0, hint=None):
        super().__init__(message, hint)
        self.errno = errno


class NoPrivilegeError(KernelError):
    """Not allowed: needs root or CAP_BPF/CAP_PERFMON."""

    hint = "run as root, or grant CAP_BPF and CAP_PERFMON"


class NotSupportedError(KernelError):
    """The running kernel lacks a feature (a program type, map type, BTF...)."""


class VerifierError(KernelError):
    """The kernel's verifier rejected a program.  ``log`` holds its log."""

    def __init__(self, message, errno=0, log="", hint=None):
        super().__init__(message, errno, hint)
        self.log = log


class AttachError(KernelError):
    """A program could not be attached (missing tracepoint, wrong type...)."""


class PinError(KernelError):
    """Pinning in bpffs failed or a pinned object does not match."""
