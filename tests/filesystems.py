"""Real small filesystems for fault tests: a tmpfs mounted for the test (a full disk, or a read-only one)."""

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

# CI runs as root; elsewhere mounting needs sudo (without a password prompt, so a test never hangs on one).
AS_ROOT = [] if os.geteuid() == 0 else ["sudo", "-n"]


@contextmanager
def mounted_tmpfs(where: Path, size: str):
    """A tmpfs of `size` (e.g. "400k") at `where`, lazily unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run([*AS_ROOT, "mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run([*AS_ROOT, "umount", "-l", str(where)], check=True)


def remount_read_only(where: Path) -> None:
    subprocess.run([*AS_ROOT, "mount", "-o", "remount,ro", str(where)], check=True)
