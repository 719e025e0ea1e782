"""Named arrays in one memory-mapped file that the learner and its env worker processes all map.

Not multiprocessing.shared_memory: on Python 3.11 a process that attaches to a block registers it with the
resource tracker, which then unlinks it when that process exits (bpo-38119; `track=False` arrived in 3.13), and
a learner killed with SIGKILL would leave its blocks in /dev/shm. Here the learner creates the file, the workers
map it, and the learner unlinks its name as soon as they have: the memory lives exactly as long as some process
maps it, whatever way each of them ends.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from dataclasses import dataclass

import numpy as np

_ALIGN = 64  # each array starts on a cache line: two processes writing neighbouring arrays do not share one


@dataclass(frozen=True)
class ArraySpec:
    offset: int
    shape: tuple[int, ...]
    dtype: str


class SharedArrays:
    """Arrays by name over one mapping. `create` (the learner) lays them out; `attach` (a worker) maps them again."""

    def __init__(self, path: str, layout: dict[str, ArraySpec], size: int, owner: bool):
        self.path, self.layout, self.size, self._owner = path, layout, size, owner
        with open(path, "r+b") as fh:
            self._map = mmap.mmap(fh.fileno(), size)
        self.arrays = {
            name: np.ndarray(spec.shape, dtype=np.dtype(spec.dtype), buffer=self._map, offset=spec.offset)
            for name, spec in layout.items()
        }

    @classmethod
    def create(cls, shapes: dict[str, tuple[tuple[int, ...], np.dtype]]) -> SharedArrays:
        layout, size = {}, 0
        for name, (shape, dtype) in shapes.items():
            layout[name] = ArraySpec(size, tuple(shape), np.dtype(dtype).str)
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            size += -(-max(nbytes, 1) // _ALIGN) * _ALIGN
        directory = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        fd, path = tempfile.mkstemp(prefix="daf-envs-", dir=directory)
        try:
            os.ftruncate(fd, size)  # zero-filled
        finally:
            os.close(fd)
        try:
            return cls(path, layout, size, owner=True)
        except BaseException:
            os.unlink(path)
            raise

    @classmethod
    def attach(cls, path: str, layout: dict[str, ArraySpec], size: int) -> SharedArrays:
        return cls(path, layout, size, owner=False)

    def unlink(self) -> None:
        """Remove the file's name (the learner, once every worker has mapped it); mappings stay valid."""
        if self._owner:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        self.unlink()
        self.arrays.clear()
        try:
            self._map.close()
        except BufferError:  # a view is still referenced somewhere: the mapping goes with the last reference
            pass
