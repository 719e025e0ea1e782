"""Torch files read without running their code or letting a small file take the machine's memory:
`read_torch_file` is DAF's one reader of torch files (checkpoints, trainer state, bundle weights).
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

from daf.files import zip_directory_size


class UnsafeTorchFile(ValueError):
    """DAF refused to torch.load the file: corrupt, truncated, a pickle that would run code, or sized to take the
    machine (see `torch_file_problem`)."""


TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


# Bounds on a torch file, checked before torch.load reads it. torch.save writes a zip whose members are stored, not
# compressed, so a genuine file's members add up to about its size on disk; anything that declares (or, through its
# pickle, asks torch to allocate) much more than the file holds is refused, not read.
MAX_TORCH_FILE_BYTES = 4 << 30  # DAF's networks are a few MB; user policies' weights in bundles are capped at 1 GiB
MAX_TORCH_MEMBERS = 50_000  # one member per storage: ten times a large model's state dict and optimizer state
# A central directory record is 46 bytes plus the name; torch's names ("archive/data/123") are short, so 256 bytes a
# record on average is ample, and parsing a directory within it costs at most ~150 MB of ZipInfo objects.
MAX_TORCH_DIRECTORY_BYTES = MAX_TORCH_MEMBERS * 256
MAX_PICKLE_BYTES = 16 << 20  # data.pkl: ~20 opcodes and ~150 bytes a tensor, so far above any real state dict
# Each opcode makes at most one object, ~220 bytes at worst (an empty set): 1M opcodes caps what the pickle alone
# can make torch build at ~250 MB (8 MiB of EMPTY_SET opcodes took torch's unpickler to 1.9 GB), and at ~20 opcodes
# a tensor it is 50,000 tensors.
MAX_PICKLE_OPS = 1_000_000
_ZIP_MAGIC = b"PK\x03\x04"  # what torch.load looks for at offset 0 to read a file as torch.save's zip format


def read_torch_file(path: str | os.PathLike[str], *, mmap: bool = False, max_bytes: int = MAX_TORCH_FILE_BYTES) -> Any:
    """torch.load without executing code (weights_only=True), on the CPU, after `torch_file_problem` found the file
    bounded. Raises UnsafeTorchFile with the reason (for torch's: the first line; it raises many exception types for
    bad files, some with pages of text). `mmap=True` maps the storages from the file instead of copying them into
    memory: for callers that copy or drop the tensors soon (truncating the file under a mapping kills the process)."""
    problem = torch_file_problem(path, max_bytes)
    if problem:
        raise UnsafeTorchFile(problem)
    import torch  # here, not at import: reading a result or writing a report must not load torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        text = str(exc).strip()
        raise UnsafeTorchFile(text.splitlines()[0][:300] if text else type(exc).__name__) from None


def torch_file_problem(path: str | os.PathLike[str], max_bytes: int = MAX_TORCH_FILE_BYTES) -> str | None:
    """Why torch.load should not read `path`, or None. Reads the zip's directory and data.pkl without torch: every
    member must be stored (torch.save never compresses; a compressed member can inflate to any size) and the members
    must add up to at most twice the file (+1 MiB); the pickle is walked with stand-ins for everything torch would
    build (`_PickleScan`), so a storage or tensor larger than the file allows, or a call such as bytearray(4 GiB), is
    refused before torch allocates it. torch's legacy (pre-1.6, non-zip) format is refused: its pickle declares
    storage sizes that torch allocates before it reads the data, and there is no directory to check them against."""
    try:
        size = os.stat(path).st_size
        if size > max_bytes:
            return f"is {size} bytes, over the {max_bytes}-byte limit for a torch file"
        with open(path, "rb") as fh:
            if fh.read(4) != _ZIP_MAGIC:
                return (
                    "is not in the zip format torch.save has written since torch 1.6 (a legacy torch file, or not a "
                    "torch file): DAF does not read the legacy format, whose headers can make torch allocate memory "
                    "the file does not hold; load it with a trusted torch and re-save it with torch.save"
                )
            directory = zip_directory_size(fh)
            if directory is None:
                return "is not a complete zip (truncated or corrupt): no end of central directory"
            entries, directory_bytes = directory
            if entries > MAX_TORCH_MEMBERS or directory_bytes > MAX_TORCH_DIRECTORY_BYTES:
                return (
                    f"declares {entries} members in a {directory_bytes}-byte directory, over the limits of "
                    f"{MAX_TORCH_MEMBERS} members and {MAX_TORCH_DIRECTORY_BYTES} bytes"
                )
            with zipfile.ZipFile(fh) as zf:
                infos = zf.infolist()
                budget = min(2 * size + (1 << 20), max_bytes)
                return _torch_members_problem(infos, size, budget) or _torch_pickle_problem(zf, infos, budget)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, RuntimeError) as exc:  # zipfile's errors on bad headers
        return f"cannot be read as a zip: {exc}"


def _torch_members_problem(infos: list[zipfile.ZipInfo], size: int, allowed: int) -> str | None:
    """`allowed`: twice the file's size + 1 MiB (within the absolute limit). Stored members hold their bytes in the
    file, so a genuine file's members add up to about its size; the margin covers nothing a real file needs, and
    members that overlap to count the same bytes again are refused by it."""
    if len(infos) > MAX_TORCH_MEMBERS:  # the end record may understate what the directory holds
        return f"has {len(infos)} members, over the limit of {MAX_TORCH_MEMBERS}"
    names: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename[:200]
        if info.filename in names:
            return f"has member {name!r} twice"
        names.add(info.filename)
        if info.compress_type != zipfile.ZIP_STORED:
            return (
                f"member {name!r} is compressed (method {info.compress_type}): torch.save stores members "
                "uncompressed, and a compressed member can inflate to any size"
            )
        if info.flag_bits & 0x1:
            return f"member {name!r} is encrypted"
        if info.file_size != info.compress_size:
            return f"member {name!r} is stored but declares {info.file_size} bytes for {info.compress_size}"
        total += info.file_size
        if total > allowed:
            return (
                f"members declare {total}+ bytes, more than the {allowed} a {size}-byte file can account for "
                "(twice its size + 1 MiB, within the limit)"
            )
    return None


def _torch_pickle_problem(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], budget: int) -> str | None:
    if not infos or "/" not in infos[0].filename:
        return "is a zip but not torch.save's: its first member is not in an archive folder"
    prefix = infos[0].filename.split("/", 1)[0]  # torch reads every record under the first member's folder
    sizes = {info.filename: info.file_size for info in infos}
    pickle_size = sizes.get(f"{prefix}/data.pkl")
    if pickle_size is None:
        return f"is a zip but not torch.save's: it has no {prefix}/data.pkl"
    if pickle_size > MAX_PICKLE_BYTES:
        return f"has a {pickle_size}-byte data.pkl, over the {MAX_PICKLE_BYTES}-byte limit"
    scan = _PickleScan(io.BytesIO(zf.read(f"{prefix}/data.pkl")), sizes, prefix, budget)
    try:
        scan.load()
    except _Refused as exc:
        return str(exc)
    except Exception as exc:  # a pickle torch could not load either; say why without a traceback
        return f"has a malformed data.pkl ({type(exc).__name__}: {str(exc)[:200]})"
    return None


class _Refused(Exception):
    pass


class _Ref:
    """A global named by the pickle. Calling it records the size of what torch would build, and builds nothing."""

    __slots__ = ("name", "scan")

    def __init__(self, name: str, scan: _PickleScan):
        self.name, self.scan = name, scan

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.scan.call(self.name, args)

    def __setstate__(self, state: Any) -> None:
        pass


class _Stub:
    """What torch would build (a storage, a tensor, anything else): its size in bytes, nothing allocated."""

    __slots__ = ("numel", "itemsize", "scan")

    def __init__(self, numel: int = 0, itemsize: int = 1, scan: _PickleScan | None = None):
        self.numel, self.itemsize, self.scan = numel, itemsize, scan

    def __setstate__(self, state: Any) -> None:
        # torch's BUILD on a legacy tensor is tensor.set_(storage, offset, size, stride): another view to bound.
        if self.scan and isinstance(state, tuple) and len(state) >= 3:
            self.scan.bound(self.scan.numel(state[2]) * self.itemsize, "a tensor's set_ state")


class _Dict(dict):
    def __setstate__(self, state: Any) -> None:  # OrderedDict's attributes (a state dict's _metadata)
        pass


_VIEWS = {
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_qtensor",  # allocates its size, then views the storage
}
_SAME_TENSOR = {
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch.nn.parameter.Parameter",
}
# Built from their arguments' contents, never from a size they name.
_NO_ALLOCATION = {
    "builtins.complex",
    "_codecs.encode",
    "torch.device",
    "torch.serialization._get_layout",
    "torch._utils._rebuild_meta_tensor_no_storage",
    "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_nested_tensor",
}


def _counted(load: Any) -> Any:
    def step(self: _PickleScan) -> None:
        self.ops += 1
        if self.ops > MAX_PICKLE_OPS:
            raise _Refused(f"has a data.pkl of more than {MAX_PICKLE_OPS} opcodes")
        load(self)

    return step


def _new_object(self: _PickleScan) -> None:  # NEWOBJ: cls.__new__(cls, *args), which torch runs for its classes
    args = self.stack.pop()
    self.append(self.stack.pop()(*args))


def _new_object_ex(self: _PickleScan) -> None:
    self.stack.pop()  # kwargs
    args = self.stack.pop()
    self.append(self.stack.pop()(*args))


class _PickleScan(pickle._Unpickler):
    """Python's own unpickler with stand-ins for every global and storage, so walking a hostile data.pkl allocates
    only the pickle's own small objects (and at most MAX_PICKLE_OPS of them). It refuses a storage whose declared
    size is not its record's, and anything torch would allocate past `budget` bytes: a tensor view (stride 0 makes a
    view of any size over one element, and torch copies it on a dtype change), a legacy constructor or bytearray
    called with a size."""

    dispatch = {code: _counted(load) for code, load in pickle._Unpickler.dispatch.items()}
    dispatch[pickle.NEWOBJ[0]] = _counted(_new_object)
    dispatch[pickle.NEWOBJ_EX[0]] = _counted(_new_object_ex)

    def __init__(self, file: io.BytesIO, sizes: dict[str, int], prefix: str, budget: int):
        super().__init__(file)
        self.sizes, self.prefix, self.budget, self.ops = sizes, prefix, budget, 0

    def find_class(self, module: str, name: str) -> _Ref:
        return _Ref(f"{module}.{name}", self)

    def persistent_load(self, pid: Any) -> _Stub:
        # torch.save's storages: ("storage", storage type, key, location, numel); the data is the record data/<key>.
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise _Refused(f"has a persistent id that is not a storage: {str(pid)[:100]}")
        _, kind, key, _, numel = pid
        itemsize = self.itemsize(kind)
        record = self.sizes.get(f"{self.prefix}/data/{key}")
        if not isinstance(numel, int) or record is None or numel * itemsize != record:
            raise _Refused(
                f"declares a storage data/{str(key)[:50]} of {str(numel)[:30]} x {itemsize} bytes, but its record "
                f"holds {record} bytes"
            )
        return _Stub(numel, itemsize, self)

    def call(self, name: str, args: tuple) -> Any:
        if name in _VIEWS:
            itemsize = self.itemsize(args[6]) if name.endswith("_v3") else self.stub(args[0]).itemsize
            numel = self.numel(args[2])
            self.bound(numel * itemsize, "a tensor")
            return _Stub(numel, itemsize, self)
        if name == "torch._utils._rebuild_device_tensor_from_cpu_tensor":  # data.to(dtype): a copy
            numel = self.stub(args[0]).numel
            self.bound(numel * self.itemsize(args[1]), "a tensor converted to another dtype")
            return _Stub(numel, self.itemsize(args[1]), self)
        if name == "torch._utils._rebuild_wrapper_subclass":  # (cls, dtype, size, ...): a tensor of that size
            numel = self.numel(args[2])
            self.bound(numel * self.itemsize(args[1]), "a tensor subclass")
            return _Stub(numel, self.itemsize(args[1]), self)
        if name in _SAME_TENSOR:
            return args[0] if args else _Stub()
        if name == "torch._tensor._rebuild_from_type_v2":  # (func, type, args, state): func(*args)
            return args[0](*args[2])
        if name == "torch.Size":
            return tuple(args[0]) if args else ()
        if name in ("collections.OrderedDict", "collections.Counter"):
            return _Dict()
        if name == "builtins.set":
            return set()
        if name in _NO_ALLOCATION:
            return _Stub()
        # Anything else (bytearray(n), torch.FloatTensor(n, m), a storage class called with a size): its integer
        # arguments may be sizes. torch.save never writes such calls, so 16 bytes an element is a safe worst case.
        dims = [a for a in args if isinstance(a, int)] + [
            d for a in args if isinstance(a, tuple | list) for d in a if isinstance(d, int)
        ]
        numel = self.numel(dims)
        self.bound(16 * numel, f"{name}(...)")
        return _Stub(numel, 16, self)

    def bound(self, nbytes: int, what: str) -> None:
        if nbytes > self.budget:
            raise _Refused(
                f"has a data.pkl that could make torch.load allocate up to {nbytes} bytes for {what}, more than "
                f"the {self.budget} bytes a file of this size can account for"
            )

    @staticmethod
    def numel(dims: Any) -> int:
        if not isinstance(dims, tuple | list) or not all(isinstance(d, int) for d in dims):
            raise _Refused(f"has a tensor size that is not a tuple of integers: {str(dims)[:100]}")
        if any(d <= 0 for d in dims):
            return 0  # empty (or negative, which torch refuses): nothing allocated
        count = 1
        for d in dims:
            count *= d
            if count > 1 << 62:  # past any budget: stop before multiplying huge integers further
                break
        return count

    @staticmethod
    def stub(value: Any) -> _Stub:
        if not isinstance(value, _Stub):
            raise _Refused(f"rebuilds a tensor from {type(value).__name__}, not a storage or tensor")
        return value

    @staticmethod
    def itemsize(kind: Any) -> int:
        """Bytes an element of a dtype or storage type named by the pickle (16, the largest, when unknown)."""
        import torch
        from torch.storage import _get_dtype_from_pickle_storage_type

        if not isinstance(kind, _Ref):
            return 16
        module, _, name = kind.name.rpartition(".")
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name).itemsize
        if name == "UntypedStorage":
            return 1
        try:
            return _get_dtype_from_pickle_storage_type(name).itemsize
        except (KeyError, AttributeError):
            return 16


def first_non_finite(value: Any) -> str | None:
    """The name of the first floating tensor in `value` (nested dicts, lists and tuples, as torch.load returns them)
    holding a NaN or an infinity, or None. Names join keys with dots and indexes in brackets ("net.actor.weight")."""
    import torch

    # Each pending item carries (parent trail, key): names are built only for the tensor found, since building each
    # item's full name would cost the square of the nesting depth a hostile pickle chooses.
    pending: list[tuple[Any, tuple | None]] = [(value, None)]
    seen: set[int] = set()  # a pickle can make a list that contains itself
    while pending:
        item, trail = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            if _tensor_non_finite(item):
                return _trail_name(trail)
        elif isinstance(item, dict):
            pending.extend((v, (trail, k, False)) for k, v in reversed(list(item.items())))
        elif isinstance(item, list | tuple):
            pending.extend((v, (trail, i, True)) for i, v in reversed(list(enumerate(item))))
    return None


def _trail_name(trail: tuple | None) -> str:
    parts: list[str] = []
    while trail is not None:
        trail, key, is_index = trail
        parts.append(f"[{key}]" if is_index else f".{str(key)[:100]}")
    name = "".join(reversed(parts[:20])).lstrip(".")  # the innermost 20 levels: enough to find it
    return (name if len(parts) <= 20 else f"...{name}") or "(the tensor)"


def _tensor_non_finite(tensor: Any) -> bool:
    import torch

    if tensor.layout != torch.strided or tensor.device.type != "cpu":
        return False  # sparse, quantized or meta tensors: no dense values here to check
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return False
    flat = tensor.detach().reshape(-1)  # a copy only for a strided view, which the load's checks kept within bounds
    step = 1 << 22  # chunks: isfinite's mask of a 1 GiB tensor would be another 256 MB
    for start in range(0, flat.numel(), step):
        chunk = flat[start : start + step]
        try:
            finite = bool(torch.isfinite(chunk).all())
        except (RuntimeError, NotImplementedError):  # float8 and other dtypes without isfinite on CPU
            finite = bool(torch.isfinite(chunk.float()).all())
        if not finite:
            return True
    return False


def looks_like_torch(path: str | os.PathLike[str]) -> bool:
    """torch.save output (a zip holding */data.pkl), a raw pickle, or a torch-ish suffix."""
    if Path(path).suffix in TORCH_SUFFIXES:
        return True
    with open(path, "rb") as fh:
        if fh.read(1) == b"\x80":
            return True
        directory = zip_directory_size(fh)
        # A directory past a torch file's bounds is left to the policy's loader, unparsed: zipfile would build an
        # object for each of its entries, and a 1 GiB file of tiny ones would take this process's memory.
        if directory is None or directory[0] > MAX_TORCH_MEMBERS or directory[1] > MAX_TORCH_DIRECTORY_BYTES:
            return False
        try:
            with zipfile.ZipFile(fh) as zf:
                return any(n.endswith("data.pkl") for n in zf.namelist())
        except zipfile.BadZipFile:
            return False


def weights_refusal(exc: UnsafeTorchFile) -> str:
    """How a refused weights file is described, wherever it was refused."""
    return f"refused by torch.load(weights_only=True) (unsafe, corrupt or oversized): {exc}"


def unsafe_weights(path: str | os.PathLike[str]) -> str | None:
    """Why torch.load(weights_only=True), or DAF's bounds on torch files, refuse a file (an unsafe, corrupt or
    oversized one), or None when it loads."""
    try:
        read_torch_file(path, mmap=True)  # mmap: the tensors are only looked at here, never kept
    except UnsafeTorchFile as exc:
        return weights_refusal(exc)
    return None


def refused_data_file(path: str | os.PathLike[str]) -> str | None:
    """Why a policy's data file is refused: a torch file (or any pickle) that `unsafe_weights` refuses. Other files
    are the policy's own format, for its own loader."""
    return unsafe_weights(path) if looks_like_torch(path) else None
