"""Files that hold state, messages or logs: private folders, durable renames."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path


def make_private_dirs(directory: Path) -> None:
    """Create `directory` and the missing folders above it, each 0700 whatever the umask
    (os.makedirs leaves the intermediate ones to it). A folder made meanwhile by another
    process is fine; a file in the way raises NotADirectoryError naming it."""
    missing: list[Path] = []
    here = directory
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    for one in reversed(missing):
        try:
            os.mkdir(one, 0o700)
            os.chmod(one, 0o700)
        except FileExistsError:
            if not one.is_dir():
                raise NotADirectoryError(
                    errno.ENOTDIR, "exists and is not a directory", str(one)
                ) from None


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable. Raises OSError; a filesystem that cannot fsync a
    directory (or a directory that cannot be opened) is not an error."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def open_for_reading(path: str | os.PathLike[str], *, regular: bool = True) -> int:
    """A descriptor to read `path`; with `regular`, a FIFO, device or socket is refused
    (OSError "not a regular file") before anything waits on it: opening a FIFO blocks until
    a writer comes, reading /dev/zero never ends."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        if regular and not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file (see `open_for_reading`)."""
    with os.fdopen(open_for_reading(path), "rb") as fh:
        return fh.read()


def open_own_file(path: str | os.PathLike[str], flags: int) -> int:
    """Open a file mailrelay keeps beside its state or logs (creating it 0600, O_EXCL, when
    missing), never through a symbolic link, and only a regular file this user owns: a link
    or file that another user planted in a shared folder is refused, not written through."""
    base = flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        try:
            fd = os.open(path, base)
        except FileNotFoundError:
            try:
                fd = os.open(path, base | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # made meanwhile by another process
                fd = os.open(path, base)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symbolic link; not followed") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if info.st_uid != os.geteuid():
            raise PermissionError(errno.EPERM, f"owned by another user (uid {info.st_uid})")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def replace_private(target: Path, data: bytes, *, sync: bool) -> None:
    """Put `data` at `target` whole or not at all: a new 0600 temp file beside it (whatever
    the umask, never through a link), written, fsynced with `sync`, renamed over `target`.
    Raises OSError, with the temp file gone."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        with open(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
