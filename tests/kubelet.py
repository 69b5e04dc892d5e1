"""A folder written the way the kubelet writes a ConfigMap (or Secret) volume.

The kubelet mounts a ConfigMap as a folder holding a timestamped directory
(``..2026_12_06_01_00_00.000000001``) with the files, a ``..data`` symlink to
it, and one symlink per key (``config.toml -> ..data/config.toml``). An update
writes a new timestamped directory, points ``..data_tmp`` at it, renames that
over ``..data`` (the one atomic step) and removes the old directory
(kubernetes pkg/volume/util/atomic_writer.go).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path


class KubeletVolume:
    """A folder laid out and updated the way the kubelet writes a ConfigMap volume."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.current: Path | None = None
        self.updates = 0

    def write(self, files: dict[str, str]) -> None:
        self.updates += 1
        stamp = self.root / (time.strftime("..%Y_%m_%d_%H_%M_%S", time.gmtime()) + f".{self.updates:09d}")
        stamp.mkdir()
        for name, text in files.items():
            (stamp / name).write_text(text)
        os.symlink(stamp.name, self.root / "..data_tmp")
        os.rename(self.root / "..data_tmp", self.root / "..data")
        for name in files:
            if not (self.root / name).is_symlink():
                os.symlink(f"..data/{name}", self.root / name)
        if self.current is not None:
            shutil.rmtree(self.current)
        self.current = stamp
