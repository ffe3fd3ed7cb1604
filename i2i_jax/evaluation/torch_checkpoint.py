"""Reading PyTorch checkpoints without torch: a state_dict as numpy arrays.

A PyTorch checkpoint is pickled: a zip holding `*/data.pkl` plus one raw
little-endian file per storage (torch >= 1.6), or the legacy stream of pickles
followed by the storages. A restricted unpickler rebuilds each tensor as a numpy
array and refuses every other global, so a checkpoint cannot run code. An `.npz`
with the same keys works too.
"""

import collections
import dataclasses
import io
import pickle
import zipfile

import jax.numpy as jnp
import numpy as np
from etils import epath

from i2i_jax.errors import CheckpointError

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": jnp.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER


@dataclasses.dataclass
class _Storage:
  """A torch storage: its bytes arrive after the pickle in the legacy format."""

  dtype: np.dtype
  numel: int
  data: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class _TensorRef:
  storage: _Storage
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """Stands in for torch._utils._rebuild_tensor(_v2): (storage, offset, size, stride, ...)."""
  del unused  # requires_grad, backward hooks, metadata
  return _TensorRef(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused):
  del unused
  return data


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles tensors in (ordered) dicts and refuses every other global."""

  def __init__(self, file, path, storages: dict[str, _Storage]):
    super().__init__(file)
    self._path = path
    self._storages = storages

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return _rebuild_parameter
    if module == "torch" and name in _STORAGE_DTYPES:
      return np.dtype(_STORAGE_DTYPES[name])
    raise CheckpointError(f"{self._path}: unsupported object {module}.{name} in the checkpoint "
                          "(only a dict of tensors, like a state_dict, can be read without torch)")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
      raise CheckpointError(f"{self._path}: unsupported persistent id {pid!r}")
    dtype, key, _, numel = pid[1:5]
    if len(pid) > 5 and pid[5] is not None:
      raise CheckpointError(f"{self._path}: storage views (torch < 0.4 checkpoints) are unsupported")
    return self._storages.setdefault(key, _Storage(dtype, numel))


def _to_array(ref: _TensorRef, path, name: str) -> np.ndarray:
  data = ref.storage.data
  if data is None:
    raise CheckpointError(f"{path}: the data of tensor {name!r} is missing")
  if 0 in ref.size:
    return np.zeros(ref.size, data.dtype)
  last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
  if ref.offset < 0 or min(ref.stride, default=0) < 0 or last >= data.size:
    raise CheckpointError(f"{path}: tensor {name!r} (offset {ref.offset}, size {ref.size}, "
                          f"stride {ref.stride}) lies outside its storage of {data.size}")
  strides = tuple(s * data.itemsize for s in ref.stride)
  return np.lib.stride_tricks.as_strided(data[ref.offset:], ref.size, strides).copy()


def _state_dict_arrays(obj, path) -> dict[str, np.ndarray]:
  if not isinstance(obj, dict):
    raise CheckpointError(f"{path}: expected a state_dict (a dict of tensors), got {type(obj)}")
  out = {}
  for name, value in obj.items():
    if not isinstance(value, _TensorRef):
      raise CheckpointError(f"{path}: entry {name!r} is not a tensor ({type(value)})")
    out[name] = _to_array(value, path, name)
  return out


def _read_zip_checkpoint(archive: zipfile.ZipFile, pickle_name: str, path):
  """torch >= 1.6: `<prefix>/data.pkl` plus one file `<prefix>/data/<key>` per storage."""
  prefix = pickle_name[:-len("data.pkl")]
  names = set(archive.namelist())
  order = "<"
  if prefix + "byteorder" in names and archive.read(prefix + "byteorder") == b"big":
    order = ">"
  storages: dict[str, _Storage] = {}
  state = _TorchUnpickler(io.BytesIO(archive.read(pickle_name)), path, storages).load()
  for key, storage in storages.items():
    entry = f"{prefix}data/{key}"
    if entry not in names:
      raise CheckpointError(f"{path}: storage {entry} is missing")
    storage.data = np.frombuffer(archive.read(entry), storage.dtype.newbyteorder(order))
  return state


def _read_legacy_checkpoint(file: io.BytesIO, path):
  """torch < 1.6 (and `_use_new_zipfile_serialization=False`): a stream of pickles.

  magic number, protocol version, system info, the object, the storage keys;
  then per storage an int64 element count and the raw elements.
  """

  def load_plain():
    return _TorchUnpickler(file, path, {}).load()

  try:
    magic = load_plain()
  except (pickle.UnpicklingError, EOFError, ValueError) as e:
    raise CheckpointError(f"{path}: not a PyTorch checkpoint, zip or .npz ({e})") from e
  if magic != _LEGACY_MAGIC:
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number)")
  load_plain()  # protocol version
  sys_info = load_plain()
  order = "<" if sys_info.get("little_endian", True) else ">"
  storages: dict[str, _Storage] = {}
  state = _TorchUnpickler(file, path, storages).load()
  for key in load_plain():
    if key not in storages:
      raise CheckpointError(f"{path}: data for storage {key} that no tensor uses")
    storage = storages[key]
    numel = int.from_bytes(file.read(8), "little" if order == "<" else "big")
    raw = file.read(numel * storage.dtype.itemsize)
    if len(raw) != numel * storage.dtype.itemsize:
      raise CheckpointError(f"{path}: truncated storage {key}")
    storage.data = np.frombuffer(raw, storage.dtype.newbyteorder(order))
  return state


def read_state_dict(path) -> dict[str, np.ndarray]:
  """Reads a torch.save'd state_dict (zip or legacy format) or an .npz into numpy arrays."""
  path = epath.Path(path)
  if not path.exists():
    raise CheckpointError(f"{path}: no such file")
  file = io.BytesIO(path.read_bytes())
  if not zipfile.is_zipfile(file):
    file.seek(0)  # is_zipfile reads the end of the file
    return _state_dict_arrays(_read_legacy_checkpoint(file, path), path)
  with zipfile.ZipFile(file) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
    if pickles:
      return _state_dict_arrays(_read_zip_checkpoint(archive, pickles[0], path), path)
  with np.load(file, allow_pickle=False) as npz:
    return {name: npz[name] for name in npz.files}
