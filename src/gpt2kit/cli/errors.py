"""OS errors that the user's environment caused (a full disk, a read-only or misplaced output
path), told apart from bugs and turned into a message that names the path and the fix."""

from __future__ import annotations

import errno
import os

# OS errors caused by where the user asked gpt2kit to write, not by a bug, and what to do about
# each ({out} is the command's output flag). The first four mean the output cannot be written
# whatever the call; the others only count when the error names a path.
_ENVIRONMENT_ERRORS = {
    errno.ENOSPC: "The disk is full: free some space, or point {out} at another disk.",
    errno.EDQUOT: "Your disk quota is used up: free some space, or point {out} at another disk.",
    errno.EROFS: "That file system is read-only: point {out} at a writable folder.",
    errno.EFBIG: "That file system cannot hold a file this large: point {out} at another disk.",
    errno.EACCES: "Check the permissions of that path, or point {out} at a folder you can write to.",
    errno.EPERM: "Check the permissions of that path, or point {out} at a folder you can write to.",
    errno.ENOTDIR: "Part of that path is a file, not a folder: choose another {out}, or move the "
    "file away.",
    errno.EEXIST: "A file is in the way where a folder is needed: choose another {out}, or move "
    "the file away.",
    errno.EISDIR: "That path is a folder where a file is expected: give {out} a file name.",
    errno.ENAMETOOLONG: "Choose a shorter {out}.",
}
_WITHOUT_PATH = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def environment_error(e: OSError, output: str) -> str | None:
    """The message for an OS error caused by the user's environment, or None for any other.

    It names the path, the system's reason and the fix; `output` is the flag that chose
    where the command writes. Errors that could be bugs (no path, other codes) give None.
    """
    fix = _ENVIRONMENT_ERRORS.get(e.errno)
    if fix is None or (e.filename is None and e.errno not in _WITHOUT_PATH):
        return None
    reason = e.strerror or os.strerror(e.errno)
    where = f"{e.filename}: {reason}" if e.filename is not None else f"{reason} while writing"
    return f"{where}. {fix.format(out=output)}"
