"""Raise RLIMIT_MEMLOCK, but only on kernels that still charge BPF memory to it.

Since memcg-based accounting (5.11) the limit is irrelevant; whether it is
still charged is probed (:func:`features.memlock_charged`), not guessed from
the version.
"""

import resource

from ..errors import NoPrivilegeError
from .features import memlock_charged

__all__ = ["ensure_memlock"]


def ensure_memlock(limit=resource.RLIM_INFINITY):
    """Raise RLIMIT_MEMLOCK to ``limit`` if needed; return True if it was raised."""
    if not memlock_charged():
        return False
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (limit, limit))
    except (ValueError, OSError) as exc:
        raise NoPrivilegeError(f"cannot raise RLIMIT_MEMLOCK, which this kernel charges "
                               f"BPF maps and programs to: {exc}") from None
    return True
