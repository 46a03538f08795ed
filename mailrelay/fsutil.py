"""Files that hold state, messages or logs: private folders, durable renames."""

from __future__ import annotations

import errno
import os
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
