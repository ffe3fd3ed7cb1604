"""Every file a run writes is whole or absent: written beside its place, then renamed.

A kill (preemption, out of memory) in the middle of a write then leaves at most a
hidden temporary file that no reader looks at, never a truncated config, modality
assignment or classifier that breaks the next start. Paths go through
`etils.epath`, so gs:// workdirs work alike (an object appears only once written).
"""

import os

from etils import epath


def absolute(path: str | os.PathLike) -> epath.Path:
  """`path` made absolute against the working directory if local; a gs:// path is
  absolute already, and epath's `absolute()` would prefix it with the cwd."""
  path = epath.Path(path)
  return path if path.is_absolute() else path.absolute()


def write_atomic(path: str | os.PathLike, data: bytes | str) -> epath.Path:
  """Writes `data` (str as UTF-8) to `path`, creating parent dirs; returns the path.

  The temporary name starts with a dot and carries the process id: globs such as
  `*.png` skip it, and two processes never write the same temporary file.
  """
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.parent / f".{path.name}.{os.getpid()}.tmp"
  temporary.write_bytes(data.encode() if isinstance(data, str) else data)
  temporary.replace(path)
  return path
