"""The on-disk cache of the kernel BTF type index.

Indexing the ~127k types of a kernel BTF takes a Python loop over every
record and a sort; the result depends only on the BTF bytes, so it is stored
on disk and reused.  The index is a pair of ``array('I')``: the word
position of each type record, and the type indexes sorted by name (the name
index, see :mod:`.btf`).

Key (32 bytes): the kernel's GNU build id, read from ``/sys/kernel/notes``
(an ELF note list; its first 16 bytes and a CRC-32 of all of it), the BTF
size, and CRC-32s of the BTF's first and last 64 KiB, so a rebuilt kernel or
changed BTF never reuses a stale index.  ``zlib.crc32`` rather than a
hashlib digest: hashlib maps libcrypto (~2.6 MB of RSS) and the key guards
against staleness, not against an attacker (the cache directory is trusted:
see Safety).  Never the sysfs file's mtime (it is the boot time, not a
content stamp).

Safety: the directory is opened with O_NOFOLLOW|O_DIRECTORY and files are
opened relative to it with O_NOFOLLOW; a cache file must be a regular file
owned by us (or root); writes go to a temporary file renamed into place.
Every failure to read or write the cache is silent: the index is rebuilt.

File layout: MAGIC (8 bytes) | u32 version | u32 count | 32-byte key |
u32 adler32 of the payload | u32 named, padded to 64 bytes | payload: count
little-endian u32 positions, then ``named`` little-endian u32 type indexes
in name order (the named types).  A hit maps the file and uses the arrays in place (no copy).
Files of another version (older layouts) are ignored and rebuilt.
"""

import mmap
import os
import stat
import struct
import sys
import zlib
from array import array

from ..errors import BTFError

NOTES_PATH = "/sys/kernel/notes"
NT_GNU_BUILD_ID = 3
SYSTEM_CACHE_DIR = "/var/cache/pybpfload"

_MAGIC = b"PYBTFIDX"
_VERSION = 5
_HEAD = struct.Struct("<8sII32sII")
_HEAD_SIZE = 64                      # header padded so the arrays are aligned
_SAMPLE = 64 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def kernel_build_id(notes_path=NOTES_PATH):
    """The running kernel's GNU build id as bytes, or None when not found.

    ``/sys/kernel/notes`` holds ELF notes: u32 namesz, u32 descsz, u32 type,
    then the name and the descriptor, each padded to 4 bytes.
    """
    try:
        with open(notes_path, "rb") as f:
            notes = f.read()
    except OSError:
        return None
    return parse_build_id(notes)


def parse_build_id(notes):
    """The GNU build id descriptor in an ELF note list, or None."""
    pos = 0
    n = len(notes)
    while pos + 12 <= n:
        namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
        pos += 12
        name_end = pos + namesz
        desc = pos + ((namesz + 3) & ~3)
        desc_end = desc + descsz
        if desc_end > n:
            return None
        if ntype == NT_GNU_BUILD_ID and notes[pos:name_end].rstrip(b"\0") == b"GNU":
            return bytes(notes[desc:desc_end]) or None
        pos = desc + ((descsz + 3) & ~3)
    return None


def cache_key(data, build_id=None, notes_path=NOTES_PATH):
    """32-byte key for a kernel BTF blob, or None without a build id."""
    if build_id is None:
        build_id = kernel_build_id(notes_path)
    if not build_id:
        return None
    size = len(data)
    return struct.pack("<16sIIII", bytes(build_id[:16]), zlib.crc32(build_id), size & 0xFFFFFFFF,
                       zlib.crc32(data[:_SAMPLE]), zlib.crc32(data[max(0, size - _SAMPLE):]))


def default_cache_dir():
    """``$PYBPFLOAD_CACHE_DIR``, else /var/cache/pybpfload when writable, else ~/.cache/pybpfload."""
    env = os.environ.get("PYBPFLOAD_CACHE_DIR")
    if env:
        return env
    if os.access(SYSTEM_CACHE_DIR, os.W_OK) or (
            not os.path.exists(SYSTEM_CACHE_DIR) and os.access(os.path.dirname(SYSTEM_CACHE_DIR), os.W_OK)):
        return SYSTEM_CACHE_DIR
    return os.path.join(os.path.expanduser("~"), ".cache", "pybpfload")


def cache_file_name(key):
    return f"btf-index-{key.hex()}.bin"


def _open_dir(cache_dir, create):
    if create:
        try:
            os.makedirs(cache_dir, mode=0o755, exist_ok=True)
        except OSError:
            return None
    try:
        fd = os.open(cache_dir, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode) or not _trusted_owner(st) or st.st_mode & 0o002:
            os.close(fd)
            return None
    except OSError:
        os.close(fd)
        return None
    return fd


def _trusted_owner(st):
    return st.st_uid in (0, os.geteuid())


def load_index(cache_dir, key):
    """The cached (positions, name order) pair of u32 arrays for ``key``, or None."""
    if not key:
        return None
    dfd = _open_dir(cache_dir, create=False)
    if dfd is None:
        return None
    try:
        fd = os.open(cache_file_name(key), os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=dfd)
    except OSError:
        os.close(dfd)
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _trusted_owner(st) or st.st_size < _HEAD_SIZE:
            return None
        blob = mmap.mmap(fd, st.st_size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
        magic, version, count, stored_key, checksum, named = _HEAD.unpack_from(blob, 0)
        if magic != _MAGIC or version != _VERSION or stored_key != key:
            return None
        keys_at = _HEAD_SIZE + 4 * count
        if named > count or st.st_size != keys_at + 4 * named:
            return None
        view = memoryview(blob)
        if zlib.adler32(view[_HEAD_SIZE:]) != checksum:
            return None
        if sys.byteorder != "little":
            offsets = array("I", view[_HEAD_SIZE:_HEAD_SIZE + 4 * count])
            keys = array("I", view[keys_at:])
            offsets.byteswap()
            keys.byteswap()
            return offsets, keys
        # zero-copy: the arrays are views of the private read-only mapping
        return view[_HEAD_SIZE:keys_at].cast("I"), view[keys_at:].cast("I")
    except (OSError, struct.error, ValueError, TypeError):
        return None
    finally:
        os.close(fd)
        os.close(dfd)


def store_index(cache_dir, key, index):
    """Write the index for ``key`` atomically; any failure is ignored (read-only hosts)."""
    if not key:
        return False
    dfd = _open_dir(cache_dir, create=True)
    if dfd is None:
        return False
    tmp = f".{cache_file_name(key)}.{os.getpid()}.tmp"
    try:
        offsets = array("I", index[0])
        keys = array("I", index[1])
        if len(offsets) < len(keys):
            return False
        if sys.byteorder != "little":
            offsets.byteswap()
            keys.byteswap()
        payload = offsets.tobytes() + keys.tobytes()
        blob = _HEAD.pack(_MAGIC, _VERSION, len(offsets), key, zlib.adler32(payload),
                          len(keys)).ljust(
            _HEAD_SIZE, b"\0") + payload
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC,
                     0o644, dir_fd=dfd)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, cache_file_name(key), src_dir_fd=dfd, dst_dir_fd=dfd)
        return True
    except (OSError, ValueError, OverflowError, TypeError, BTFError):
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        return False
    finally:
        os.close(dfd)
