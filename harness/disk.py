"""Disk space for what a run writes: checked before every checkpoint, snapshot and export.

    require_free_space(folder, needed_bytes, "checkpoint step 40", key="train.output_dir")
    with staged_write(tmp, folder, "checkpoint step 40", key="train.output_dir"):
        ...write into tmp, then rename it into place...

At 8B a checkpoint is about 128 GB and a generator snapshot goes through /dev/shm at every sync,
so a full disk is a fault a long run meets. Before anything is written, the bytes it will write
(plus a margin) are compared with the folder's free space, and a shortfall is one paragraph
naming the folder, the bytes needed and the bytes free. If the disk fills anyway (another process
wrote meanwhile), the half-written staging folder is removed and the same kind of error is
raised: the previous checkpoint stays the resume point, since only whole folders are renamed
into place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

import torch

from harness.errors import HarnessError

# Files beside the tensors (config, tokenizer, JSON) and filesystem rounding: a write needs its
# tensor bytes times this, plus FIXED_OVERHEAD bytes.
MARGIN = 1.05
FIXED_OVERHEAD = 16 * 2**20


class DiskSpaceError(HarnessError):
    """A folder's filesystem has no room for what the run must write there."""


def free_bytes(folder: str | Path) -> int:
    """Bytes an unprivileged writer may still use on `folder`'s filesystem (its nearest existing parent's)."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def needed_bytes(payload_bytes: int) -> int:
    """What writing `payload_bytes` of tensors needs free, with the margin for the files around them."""
    return int(payload_bytes * MARGIN) + FIXED_OVERHEAD


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def _shortfall(
    folder: Path, what: str, needed: int, free: int, key: str | None, cause: BaseException | None = None
) -> DiskSpaceError:
    where = f" (`{key}`)" if key else ""
    happened = (
        "nothing was written"
        if cause is None
        else f"the disk filled while writing ({cause}; another process?) and the half-written folder was removed"
    )
    return DiskSpaceError(
        f"{what}: {folder}{where} needs {gib(needed)} ({needed} bytes) free but its filesystem has "
        f"{gib(free)} ({free} bytes); {happened}. Free space there or point{where or ' it'} at a "
        f"larger filesystem, then resume with --resume (the last complete checkpoint is the resume point)."
    )


def require_free_space(folder: str | Path, payload_bytes: int, what: str, key: str | None = None) -> None:
    """Refuse, before anything is written, a write of `payload_bytes` that cannot fit in `folder`."""
    needed, free = needed_bytes(payload_bytes), free_bytes(folder)
    if needed > free:
        raise _shortfall(Path(folder), what, needed, free, key)


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT, as an OSError or as the message of a library's own error (safetensors's)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text or "os error 28" in text


@contextlib.contextmanager
def staged_write(
    tmp: Path, folder: str | Path, what: str, key: str | None = None, payload_bytes: int = 0
) -> Iterator[None]:
    """Writing into the staging folder `tmp`: on any failure it is removed; a full disk becomes a
    `DiskSpaceError` naming `folder` and its free space."""
    try:
        yield
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            raise _shortfall(
                Path(folder), what, needed_bytes(payload_bytes), free_bytes(folder), key, cause=exc
            ) from exc
        raise
