"""Files a run writes are whole or absent: a kill in the middle of a write leaves the
next start nothing truncated to trip over."""

import itertools

import numpy as np
import pytest
from etils import epath

from i2i_jax import files
from i2i_jax.evaluation import evaluators

_SHAPE = (8, 8, 1)


def _batches():
  rng = np.random.default_rng(0)
  return itertools.repeat({"image": rng.normal(size=(4, *_SHAPE)).astype(np.float32),
                           "label": np.arange(4) % 2})


def _classifier(path):
  return evaluators.cached_classifier(str(path), _batches, 2, _SHAPE, steps=1, seed=0)


def test_a_kill_while_saving_the_judge_leaves_no_file_the_next_start_reads(tmp_path,
                                                                            monkeypatch):
  path = tmp_path / "classifier_x.msgpack"
  write_bytes = epath.Path.write_bytes

  def killed_halfway(self, data):
    if self.parent != path.parent:  # e.g. jax's compilation cache: written whole
      return write_bytes(self, data)
    write_bytes(self, data[:len(data) // 2])
    raise SystemExit("killed")  # what a SIGKILL leaves: half the bytes, nothing after

  with monkeypatch.context() as patched:
    patched.setattr(epath.Path, "write_bytes", killed_halfway)
    with pytest.raises(SystemExit):
      _classifier(path)
  assert not path.exists()
  params = _classifier(path)  # the next start trains it again rather than failing
  np.testing.assert_array_equal(_classifier(path)["Dense_0"]["kernel"],
                                params["Dense_0"]["kernel"])


def test_write_atomic_replaces_whole_and_leaves_no_temporary_file(tmp_path):
  path = tmp_path / "a" / "summary.json"
  files.write_atomic(path, "old")
  files.write_atomic(path, b"new")
  assert path.read_text() == "new"
  assert sorted(p.name for p in path.parent.iterdir()) == ["summary.json"]
