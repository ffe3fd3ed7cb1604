"""The training skeleton that every stage of both methods runs.

A method hands a `Trainer` only what is its own: the initial state, its named data
streams, the pure step `(state, batch) -> (state, metrics)`, how a host batch is put
on the devices, and optionally its sample grids and its evaluation. The trainer does
the rest the same way for all: it restores the latest checkpoint (state and stream
positions) or starts from the initial state, logs the parameter table (clu's
`parameter_overview`, as flax's examples do), replicates the state over the data
mesh, jits the step, and runs `loop.run` with TensorBoard metrics, periodic sample
grids and evaluations, checkpoints and preemption handling.

A stage's directory holds `checkpoints/`, `tensorboard/` and `samples/<grid>_<step>.png`.
"""

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from absl import logging
from clu import parameter_overview
from etils import epath
from jax.sharding import Mesh

from i2i_jax import images
from i2i_jax.data.prefetch import DevicePrefetcher
from i2i_jax.training import loop, sharding
from i2i_jax.training.checkpoint import Checkpointer
from i2i_jax.training.state import NetState
from i2i_jax.training.writers import MetricWriter

StepFn = Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]
PutBatch = Callable[[Mapping[str, Any], Mesh], Any]


@dataclasses.dataclass(frozen=True)
class Schedule:
  """How long a stage trains and how often it logs, checkpoints, samples, evaluates.

  `nonfinite` and `max_restores` say what a skipped non-finite step leads to
  (`loop.run`).
  """

  num_steps: int
  log_every: int
  checkpoint_every: int
  max_to_keep: int = 3
  sample_every: int = 0
  eval_every: int = 0
  nonfinite: str = "skip"
  max_restores: int = 3

  @classmethod
  def from_config(cls, config) -> "Schedule":
    """The config's top-level fields of the same names (every method's config has them)."""
    return cls(**{field.name: config[field.name] for field in dataclasses.fields(cls)})


def jit_train_step(train_step: StepFn, mesh: Mesh):
  """`train_step` jitted for data parallelism: outputs replicated, the input state donated."""
  replicated = sharding.replicated_sharding(mesh)
  return jax.jit(train_step, out_shardings=(replicated, replicated), donate_argnums=(0,))


def device_batches(streams: Mapping[str, Iterator], put_batch: PutBatch,
                   mesh: Mesh) -> DevicePrefetcher:
  """One batch of every stream, put on `mesh` by `put_batch(host_batch, mesh)` a step
  ahead; checkpoints record the prefetcher's `positions`, not the streams'."""
  return DevicePrefetcher(streams, functools.partial(put_batch, mesh=mesh))


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
  """Flattens vector metrics (per-class shares) into scalars like class_share_x/3."""
  out = {}
  for key, value in metrics.items():
    value = np.asarray(value)
    if value.ndim == 0:
      out[key] = float(value)
    else:
      out.update({f"{key}/{c}": float(v) for c, v in enumerate(value)})
  return out


class Trainer:
  """One training stage in `directory`, resumed where its last checkpoint left off.

  Construction restores the latest checkpoint of `directory/checkpoints` (the state,
  shaped as `initial_state`, and the streams' positions) or starts from
  `initial_state`; `run` trains to `schedule.num_steps`. Checkpoints name the streams
  `checkpoint_prefix + name`.
  """

  def __init__(self, directory: str | epath.PathLike, initial_state, streams: Mapping[str, Iterator],
               schedule: Schedule, *, checkpoint_prefix: str = ""):
    self.directory = epath.Path(directory)  # local or gs://
    self.schedule = schedule
    self._streams = dict(streams)
    self._checkpoint_prefix = checkpoint_prefix
    self._checkpointer = Checkpointer(self.directory / "checkpoints",
                                      max_to_keep=schedule.max_to_keep,
                                      save_interval_steps=schedule.checkpoint_every)
    restored = self._checkpointer.restore(initial_state, self._checkpoint_items(self._streams))
    self.state, self.start_step = restored or (initial_state, 0)
    if restored is not None:
      logging.info("Resumed from the checkpoint at step %d.", self.start_step)

  @property
  def finished(self) -> bool:
    """Whether the checkpoint already holds the last step: `run` then only restores."""
    return self.start_step >= self.schedule.num_steps

  def _checkpoint_items(self, iterators: Mapping[str, Any]) -> dict[str, Any]:
    return {self._checkpoint_prefix + name: it for name, it in iterators.items()}

  def run(self, train_step: StepFn, put_batch: PutBatch, *, hparams: Mapping[str, Any],
          sample_grids: Callable[[Any, int], Mapping[str, np.ndarray]] | None = None,
          evaluate: Callable[[Any], Mapping[str, float]] | None = None):
    """Trains from `start_step` to `schedule.num_steps`; returns the final state.

    Args:
      train_step: the pure, unjitted step `(state, batch) -> (state, metrics)`.
      put_batch: `(host batch of every stream, mesh) -> device batch`.
      hparams: written to TensorBoard when the run starts from step 0.
      sample_grids: `(state, step) -> {name: grid}`, written every
        `schedule.sample_every` steps and after the last.
      evaluate: `state -> {metric: value}`, logged and written (as eval/<metric>)
        every `schedule.eval_every` steps and after the last.
    """
    try:
      if self.finished:
        return self.state
      _log_parameters(self.state)
      mesh = sharding.make_data_mesh()
      logging.info("Devices: %s (processes: %d)", jax.devices(), jax.process_count())
      state = sharding.replicate(self.state, mesh)
      with MetricWriter(self.directory / "tensorboard") as writer, \
          device_batches(self._streams, put_batch, mesh) as batches:
        if self.start_step == 0:
          writer.write_hparams(hparams)
        actions = []
        if sample_grids is not None:
          actions.append(loop.PeriodicAction(self.schedule.sample_every, functools.partial(
              self._write_samples, writer, sample_grids)))
        if evaluate is not None:
          actions.append(loop.PeriodicAction(self.schedule.eval_every, functools.partial(
              _write_evaluation, writer, evaluate)))
        return loop.run(
            state=state, step_fn=jit_train_step(train_step, mesh), batches=batches,
            start_step=self.start_step, num_steps=self.schedule.num_steps,
            checkpointer=self._checkpointer,
            data_iterators=self._checkpoint_items(batches.positions),
            on_metrics=lambda step, metrics: writer.write_scalars(step, scalar_metrics(metrics)),
            log_every=self.schedule.log_every, actions=tuple(actions), writer=writer,
            nonfinite=self.schedule.nonfinite, max_restores=self.schedule.max_restores)
    finally:
      self._checkpointer.close()

  def _write_samples(self, writer: MetricWriter, sample_grids, step: int, state) -> None:
    grids = sample_grids(state, step)
    writer.write_images(step, grids)
    if jax.process_index() == 0:
      for name, grid in grids.items():
        images.save_png(self.directory / "samples" / f"{name}_{step:07d}.png", grid)


def _write_evaluation(writer: MetricWriter, evaluate, step: int, state) -> None:
  scores = evaluate(state)
  logging.info("Step %d: %s", step, {k: round(v, 4) for k, v in scores.items()})
  writer.write_scalars(step, {f"eval/{k}": v for k, v in scores.items()})


def _log_parameters(state) -> None:
  """The shapes and sizes of every network's parameters in `state`, one table each."""
  for field in dataclasses.fields(state):
    net = getattr(state, field.name)
    if isinstance(net, NetState):
      parameter_overview.log_parameter_overview(net.params, include_stats=False,
                                                msg=f"Parameters of {field.name}:")
