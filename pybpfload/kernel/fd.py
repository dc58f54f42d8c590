"""A file descriptor that closes itself.

Every kernel object pybpfload creates (map, program, link, BTF, perf event)
is held through an :class:`FD`.  ``close()`` is idempotent, ``with`` closes on
exit, and ``__del__`` is a safety net so a dropped object does not leak its
descriptor (and with it a kernel object).
"""

import os

from ..errors import KernelError

__all__ = ["FD", "Closeable", "OwnsFD"]


class Closeable:
    """``with`` closes the object; ``__del__`` closes one dropped while open
    (a safety net, so a lost reference does not leak a kernel object).
    Subclasses define ``close()``, idempotent."""

    __slots__ = ()

    def close(self):
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # half-built object, or interpreter shutdown
            pass


class OwnsFD(Closeable):
    """A kernel object held through one :class:`FD` in ``self.fd``."""

    __slots__ = ()

    def fileno(self):
        return self.fd.fileno()

    def close(self):
        self.fd.close()


class FD(Closeable):
    """An owned file descriptor number."""

    __slots__ = ("_fd", "__weakref__")

    def __init__(self, fd):
        if not isinstance(fd, int) or fd < 0:
            raise KernelError(f"invalid file descriptor {fd!r}")
        self._fd = fd

    @property
    def closed(self):
        return self._fd < 0

    def fileno(self):
        """The descriptor number; raises if already closed."""
        if self._fd < 0:
            raise KernelError("use of a closed file descriptor",
                              hint="keep the object open while using it")
        return self._fd

    def __int__(self):
        return self.fileno()

    def __index__(self):
        return self.fileno()

    def dup(self):
        """A new :class:`FD` for the same kernel object (close-on-exec)."""
        return FD(os.dup(self.fileno()))

    def release(self):
        """Give up ownership: return the number, which the caller must close."""
        fd, self._fd = self._fd, -1
        return fd

    def close(self):
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def __repr__(self):
        return f"FD({self._fd})" if self._fd >= 0 else "FD(closed)"
