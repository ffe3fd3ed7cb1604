"""Saving and resuming training: the state pytree plus the grain iterators' positions.

A thin layer over orbax's CheckpointManager (v0 `args` API): one checkpoint step
holds an item "state" (any pytree: flax TrainStates, struct dataclasses, dicts,
typed PRNG keys), its arrays' "checksums", and one item per named grain iterator,
so resuming continues the data stream exactly where the saved run was.
"""

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from i2i_jax import files
from i2i_jax.errors import CheckpointError
from i2i_jax.training import checksums, hosts

_STATE = "state"
_CHECKSUMS = "checksums"
# tensorstore's status codes for failures that may pass: not damage to the checkpoint.
_TRANSIENT_STATUSES = ("PERMISSION_DENIED", "UNAVAILABLE", "DEADLINE_EXCEEDED",
                       "UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "CANCELLED", "ABORTED")
_MAX_NAMED_PROBLEMS = 8  # enough to see the pattern; not a wall of text


class Checkpointer:
  """Periodic, asynchronous checkpoints of a training run in `directory`.

  `save` returns as soon as the arrays are copied to host memory; the files are
  written in the background, so the caller may donate or overwrite the state
  right away. Only the last `max_to_keep` steps are kept.
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3,
               save_interval_steps: int = 1):
    # orbax's default policy also saves whenever no checkpoint exists yet, whatever
    # the step; spelling the policy out makes `save_interval_steps` exact while
    # keeping orbax's save-on-preemption.
    policy = ocp.checkpoint_managers.AnySavePolicy([
        ocp.checkpoint_managers.FixedIntervalPolicy(save_interval_steps),
        ocp.checkpoint_managers.PreemptionCheckpointingPolicy(),
    ])
    # orbax rejects relative paths (tensorstore needs absolute ones).
    self._manager = ocp.CheckpointManager(
        files.absolute(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             save_decision_policy=policy))
    self._metadata_handler = ocp.StandardCheckpointHandler()

  @property
  def directory(self) -> epath.Path:
    return self._manager.directory

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    """Whether `save(step, ...)` without `force` would write (the cadence)."""
    return int(step) not in self._manager.all_steps() and self._manager.should_save(int(step))

  def save(self, step: int, state, data_iterators: Mapping[str, Any] | None = None, *,
           force: bool = False) -> bool:
    """Saves `state` and the iterators' positions if `step` is due; True if it saved.

    `force` saves regardless of `save_interval_steps` (end of training,
    preemption). A step that is already saved is skipped, so a forced save right
    after a periodic one at the same step is harmless.
    """
    step = int(step)
    if step in self._manager.all_steps() or not (force or self._manager.should_save(step)):
      return False
    items = {_STATE: ocp.args.StandardSave(state),
             _CHECKSUMS: ocp.args.JsonSave(checksums.of(state)),
             **_iterator_args(data_iterators, grain.checkpoint.CheckpointSave)}
    return self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, target_state, data_iterators: Mapping[str, Any] | None = None,
              step: int | None = None) -> tuple[Any, int] | None:
    """Restores step `step` (default: the latest) as `(state, step)`; None if none exists.

    The state comes back with the structure, dtypes and shardings of
    `target_state` (concrete arrays or `jax.ShapeDtypeStruct`s carrying
    shardings), so a replicated target gives a replicated state. The iterators
    are moved to their saved positions in place.

    Without `step`, a latest checkpoint that is damaged (files truncated or lost,
    e.g. a disk that filled up; array bytes that fail their checksums) is moved
    aside to `corrupt/` and the one before it is restored, so a damaged write never
    ends a run. An error that may pass (permissions, a vanished mount, a network
    timeout) leaves every checkpoint where it is and fails.

    Raises:
      CheckpointError: if `step` was not saved, no checkpoint is readable, reading
        one fails for a reason other than damage, or the checkpoint's arrays do not
        fit `target_state` (e.g. it was written by a run with another config).
    """
    self._manager.wait_until_finished()
    if step is not None:
      step = int(step)
      if step not in self._manager.all_steps():
        raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; "
                              f"saved steps: {self.all_steps()}")
      return self._restore_step(step, target_state, data_iterators), step
    steps = sorted(self._manager.all_steps(), reverse=True)
    for i, candidate in enumerate(steps):
      try:
        return self._restore_step(candidate, target_state, data_iterators), candidate
      except CheckpointError:
        raise  # Readable but written for another state: falling back would not help.
      except Exception as e:  # orbax/tensorstore raise OSError, ValueError, JSON errors...
        if not self._means_damage(candidate, e):
          raise CheckpointError(
              f"cannot read checkpoint step {candidate} in {self.directory} "
              f"({type(e).__name__}: {e}); that is no sign of damage but of access "
              "(permissions, a lost mount or network?), so it was left in place: fix the "
              "cause and re-run") from e
        if i == len(steps) - 1:
          raise CheckpointError(f"no readable checkpoint in {self.directory}; the oldest, "
                                f"step {candidate}, fails with {type(e).__name__}: {e}") from e
        aside = self._set_aside(candidate)
        logging.warning("Checkpoint step %d in %s is unreadable (%s: %s); moved it to %s and "
                        "falling back to step %d.", candidate, self.directory,
                        type(e).__name__, e, aside, steps[i + 1])
    return None

  def _restore_step(self, step: int, target_state, data_iterators):
    abstract_state = jax.tree.map(_abstract, target_state)
    self._check_fits(step, abstract_state)
    items = {_STATE: ocp.args.StandardRestore(abstract_state),
             **_iterator_args(data_iterators, grain.checkpoint.CheckpointRestore)}
    has_checksums = (self._step_dir(step) / _CHECKSUMS).exists()  # older runs saved none
    if has_checksums:
      items[_CHECKSUMS] = ocp.args.JsonRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    if has_checksums:
      damaged = checksums.damaged(restored[_CHECKSUMS], restored[_STATE])
      if damaged:
        raise _DamagedArrays(f"arrays {', '.join(damaged[:_MAX_NAMED_PROBLEMS])} of step "
                             f"{step} do not match their checksums")
    return restored[_STATE]

  def _step_dir(self, step: int) -> epath.Path:
    return ocp.step.find_step_path(self.directory, ocp.step.standard_name_format(), step=step)

  def _means_damage(self, step: int, error: Exception) -> bool:
    """Whether `error`, raised reading `step`, says the checkpoint itself is damaged.

    Unreadable contents (ValueError: tensorstore's DATA_LOSS, bad JSON, failed
    checksums) and a file missing from a step directory that is there are damage.
    Any other OSError (permission, I/O, a stale handle), a transient tensorstore
    status, or a step directory that has vanished is not.
    """
    chain = []
    while error is not None and error not in chain:
      chain.append(error)
      error = error.__cause__ or error.__context__
    if any(status in str(e) for e in chain for status in _TRANSIENT_STATUSES):
      return False
    if any(isinstance(e, OSError) and not isinstance(e, FileNotFoundError) for e in chain):
      return False
    try:
      if not self._step_dir(step).exists():
        return False
    except (OSError, ValueError):  # orbax: ValueError when the directory itself is gone
      return False
    return any(isinstance(e, (ValueError, FileNotFoundError, KeyError, EOFError))
               for e in chain)

  def _set_aside(self, step: int) -> epath.Path:
    """Moves an unreadable step out of the manager's view, keeping it for inspection.

    Left in place, it would also block saving that step number again.
    """
    step_dir = self._step_dir(step)
    aside = self.directory / "corrupt" / f"{step}-{int(time.time())}"
    if hosts.is_primary():
      # On an object store a folder exists only while an object is under it, and
      # epath renames only into an existing folder: the note makes it one.
      note = aside.parent / "README.txt"
      if not note.exists():
        files.write_atomic(note, "Checkpoint steps that failed to restore, moved here for "
                                 "inspection; the run's log says why.\n")
      step_dir.rename(aside)
    hosts.barrier(f"set aside {step}")  # every process reloads after the move
    self._manager.reload()
    return aside

  def _check_fits(self, step: int, abstract_state):
    """Compares the saved array shapes with the target's, naming every mismatch.

    orbax itself only reports the first mismatching shape, without saying which
    array it belongs to.
    """
    saved_tree = self._metadata_handler.metadata(self._step_dir(step) / _STATE).tree
    saved = {key: tuple(meta.shape)
             for key, meta in ocp.tree.to_flat_dict(saved_tree).items() if meta is not None}
    target = {ocp.utils.tuple_path_from_keypath(path): _stored_shape(leaf)
              for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
    problems = []
    for key in sorted(saved.keys() | target.keys()):
      name = "/".join(key)
      if key not in saved:
        problems.append(f"{name}: missing from the checkpoint (target shape {target[key]})")
      elif key not in target:
        problems.append(f"{name}: in the checkpoint (shape {saved[key]}) but not in the target")
      elif saved[key] != target[key]:
        problems.append(f"{name}: checkpoint shape {saved[key]} != target shape {target[key]}")
    if problems:
      shown = problems[:_MAX_NAMED_PROBLEMS]
      if len(problems) > len(shown):
        shown.append(f"... and {len(problems) - len(shown)} more")
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} does not fit the target state "
          "(was it written with another config?):\n  " + "\n  ".join(shown))

  def wait_until_finished(self):
    """Blocks until background writes are committed (before exiting or reading files)."""
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()
    self._metadata_handler.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc_info):
    del exc_info
    self.close()


class _DamagedArrays(ValueError):
  """Array bytes that restored without an error but fail their checksums."""


def _iterator_args(data_iterators: Mapping[str, Any] | None, args_cls) -> dict[str, Any]:
  data_iterators = data_iterators or {}
  for reserved in (_STATE, _CHECKSUMS):
    if reserved in data_iterators:
      raise ValueError(f"the data iterator name {reserved!r} is reserved")
  return {name: args_cls(iterator) for name, iterator in data_iterators.items()}


def _abstract(leaf):
  """Arrays -> ShapeDtypeStructs keeping their shardings, so orbax restores onto them.

  `ocp.utils.to_shape_dtype_struct` is not used: it turns typed PRNG keys into
  their uint32 key data, and the restored state would then hold raw key data.
  """
  if isinstance(leaf, jax.Array):
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
  return leaf


def _stored_shape(leaf) -> tuple[int, ...]:
  """The shape orbax stores for `leaf`: typed PRNG keys are saved as their key data."""
  dtype = getattr(leaf, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    return tuple(jax.eval_shape(jax.random.key_data, leaf).shape)
  return tuple(getattr(leaf, "shape", ()))


def save_config(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> None:
  """Creates `workdir` and writes the run's config to `workdir/config.json` (process 0)
  for later reference: `load_config` reads it back. Returns when every process may."""
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if hosts.is_primary():
    files.write_atomic(workdir / "config.json", config.to_json_best_effort(indent=2) + "\n")
  hosts.barrier("config.json")


def load_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The config that `save_config` wrote into a training workdir."""
  path = epath.Path(workdir) / "config.json"
  if not path.exists():
    raise CheckpointError(f"{path} not found: --workdir must be a training workdir")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def restore_state(workdir: str | os.PathLike, target_state, step: int = 0):
  """The state of `workdir/checkpoints` at `step` (0: the latest), with the structure of
  `target_state` (e.g. `jax.eval_shape` of the method's init): what translation and
  evaluation start from."""
  with Checkpointer(epath.Path(workdir) / "checkpoints") as checkpointer:
    restored = checkpointer.restore(target_state, step=step or None)
  if restored is None:
    raise CheckpointError(f"no checkpoint in {workdir}/checkpoints")
  state, restored_step = restored
  logging.info("Restored step %d from %s", restored_step, workdir)
  return state
