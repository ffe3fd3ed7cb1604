"""JD-BW training: data streams, jitted data-parallel step, logging, samples, evaluation."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from i2i_jax import images
from i2i_jax.data import pipeline
from i2i_jax.data.prefetch import DevicePrefetcher
from i2i_jax.evaluation import classifier, evaluators
from i2i_jax.evaluation import metrics as metrics_lib
from i2i_jax.training import loop, sharding
from i2i_jax.training.checkpoint import Checkpointer, save_config
from i2i_jax.training.writers import MetricWriter
from jdbw_jax.steps import JDBW, TrainState

def per_host_batch_size(config) -> int:
  """The global batch split over hosts; it must also split evenly over devices."""
  if config.batch_size % jax.device_count():
    raise ValueError(f"config.batch_size={config.batch_size} must be divisible by the number of "
                     f"devices ({jax.device_count()})")
  return config.batch_size // jax.process_count()

def make_streams(config):
  """Source and target grain iterators yielding (d + 1)-stacked batches."""
  batch = per_host_batch_size(config)
  return {
      "x": iter(pipeline.make_domain_dataset(
          config.data.source, batch_size=batch, seed=config.seed,
          steps_per_call=config.d_steps + 1)),
      "y": iter(pipeline.make_domain_dataset(
          config.data.target, batch_size=batch, seed=config.seed + 1,
          steps_per_call=config.d_steps + 1)),
  }

def sharded_batches(streams, mesh) -> DevicePrefetcher:
  """One (d + 1)-stacked batch per domain, sharded over the batch axis (1) and put on
  the devices a step ahead; checkpoints record its `positions`, not the streams'."""
  return DevicePrefetcher(streams, functools.partial(sharding.shard_batch, mesh=mesh,
                                                     batch_axis=1))

def make_train_step(model: JDBW, mesh):
  repl = sharding.replicated_sharding(mesh)
  return jax.jit(model.train_step, out_shardings=(repl, repl), donate_argnums=(0,))

def fixed_inputs(config, num: int, seed: int):
  """Deterministic source/target samples (numpy) for grids and evaluation."""
  return (pipeline.fixed_batch(config.data.source, num, seed=seed),
          pipeline.fixed_batch(config.data.target, num, seed=seed))

def make_translate_fn(model: JDBW):
  """Jitted (state, x, y, zx, zy) -> (Gxy x, Gyx Gxy x, Gyx y, Gxy Gyx y)."""

  @jax.jit
  def translate(state: TrainState, x, y, zx, zy):
    p, s = state.g.params, state.g.batch_stats
    gx, gy, _ = model.translate(p, s, x, y, zx, zy)
    # Round trip with the same noise: the paper's third rows ("transferred back").
    back_y, back_x, _ = model.translate(p, s, gy, gx, zx, zy)
    return gx, back_x, gy, back_y

  return translate

def sample_grids(model: JDBW, translate, state, x, y, noise_rng, num_noise: int = 8):
  """The paper's figures: source / transferred / transferred-back rows for each
  direction (Figs. 2, 5, 6), and fixed-noise grids (Figs. 4, 7, 8): row = source,
  column = one noise vector shared down the column."""
  n = x.shape[0]
  k1, k2 = jax.random.split(noise_rng)
  zx, zy = model.sample_noise(k1, n), model.sample_noise(k2, n)
  gx, back_x, gy, back_y = jax.device_get(translate(state, x, y, zx, zy))
  grids = {"x_to_y": images.make_grid([x, gx, back_x]),
           "y_to_x": images.make_grid([y, gy, back_y])}
  rows = min(n, 8)
  z = model.sample_noise(jax.random.key(0), num_noise)  # the same noise at every call
  src_x = np.repeat(x[:rows], num_noise, axis=0)
  src_y = np.repeat(y[:rows], num_noise, axis=0)
  z_tiled = jnp.tile(z, (rows, 1))
  gx_fixed, _, gy_fixed, _ = jax.device_get(translate(state, src_x, src_y, z_tiled, z_tiled))
  grids["x_to_y_fixed_noise"] = images.make_grid(
      [np.concatenate([x[r:r + 1], gx_fixed[r * num_noise:(r + 1) * num_noise]])
       for r in range(rows)])
  grids["y_to_x_fixed_noise"] = images.make_grid(
      [np.concatenate([y[r:r + 1], gy_fixed[r * num_noise:(r + 1) * num_noise]])
       for r in range(rows)])
  return grids

def classifier_batches(config, domain):
  """Labelled training batches of one domain for its evaluation classifier."""
  return iter(pipeline.make_domain_dataset(
      domain, batch_size=config.eval.classifier_batch, seed=config.seed + 7, shard_index=0,
      shard_count=1))

def can_evaluate(config, inception_weights: str) -> bool:
  """Evaluation needs a judge: labelled domains with classifiers, or Inception weights."""
  return bool(config.data.num_classes and config.eval.classifier_steps) or bool(inception_weights)

class Evaluator:
  """Both directions on fixed samples: class-matching rates, judged by classifiers of
  the other domain, and FID/KID of the translations against real images of their
  target domain, in those classifiers' features ("domain") and Inception's.

  The classifiers are trained once per workdir on each domain's labels and cached as
  classifier_{x,y}.msgpack, so resumed runs and `jdbw_jax.evaluate` reuse them.
  Unlabelled data (config.data.num_classes = 0) has none: then only Inception
  features, given their weights, score.
  """

  def __init__(self, config, workdir, x_shape, y_shape, *, inception_weights: str,
               num_eval: int):
    self.config = config
    self.num_classes = config.data.num_classes
    self.params = {}
    if self.num_classes and config.eval.classifier_steps:
      for name, domain, shape in (("x", config.data.source, x_shape),
                                  ("y", config.data.target, y_shape)):
        self.params[name] = evaluators.cached_classifier(
            os.path.join(workdir, f"classifier_{name}.msgpack"),
            functools.partial(classifier_batches, config, domain), self.num_classes, shape,
            steps=config.eval.classifier_steps, seed=config.seed)
    self.x, self.y = fixed_inputs(config, num_eval, seed=config.seed + 11)
    self.inception_weights = inception_weights
    # Translations into Y are scored against real Y in the Y classifier's features.
    self.real = {"x_to_y": self._real_features(self.y["image"], "y"),
                 "y_to_x": self._real_features(self.x["image"], "x")}

  def _real_features(self, real_images, domain_name):
    domain = (metrics_lib.domain_feature_extractor(self.params[domain_name], self.num_classes)
              if domain_name in self.params else None)
    return evaluators.RealFeatures(
        real_images, evaluators.feature_spaces(domain, self.inception_weights),
        kid_subset_size=self.config.eval.kid_subset_size,
        batch_size=self.config.eval.batch_size)

  def describe(self) -> dict[str, str]:
    """Which features the FID/KID keys' `_domain` / `_inception` suffixes refer to."""
    if self.params:
      domain = ("128-d features of classifier_y.msgpack (x_to_y) and classifier_x.msgpack "
                "(y_to_x)")
    elif not self.num_classes:
      domain = "unavailable: unlabelled data (config.data.num_classes = 0)"
    else:
      domain = "off: config.eval.classifier_steps = 0"
    return {"domain": domain, "inception": self.inception_weights or "off: no weights given"}

  def __call__(self, model: JDBW, translate, state) -> dict[str, float]:
    n = self.x["image"].shape[0]
    k1, k2 = jax.random.split(jax.random.key(self.config.seed + 13))
    gx, _, gy, _ = evaluators.in_batches(
        functools.partial(translate, state),
        (self.x["image"], self.y["image"], model.sample_noise(k1, n), model.sample_noise(k2, n)),
        self.config.eval.batch_size)
    out = {}
    if self.params:
      predict = lambda name, images_: classifier.predict(self.params[name], images_,
                                                         self.num_classes)
      out.update({
          "class_match_x_to_y": metrics_lib.class_matching_rate(predict("y", gx), self.x["label"]),
          "class_match_y_to_x": metrics_lib.class_matching_rate(predict("x", gy), self.y["label"]),
          # Sanity of the judges themselves, on real images of their own domain.
          "classifier_acc_y": classifier.accuracy(predict("y", self.y["image"]),
                                                  self.y["label"]),
          "classifier_acc_x": classifier.accuracy(predict("x", self.x["image"]),
                                                  self.x["label"]),
      })
    out.update(self.real["x_to_y"].score(gx, "x_to_y"))
    out.update(self.real["y_to_x"].score(gy, "y_to_x"))
    return out

def scalar_metrics(metrics, num_classes: int) -> dict[str, float]:
  """Flattens per-class vectors into scalars like class_share_x/3 for TensorBoard."""
  out = {}
  for key, value in metrics.items():
    value = np.asarray(value)
    if value.ndim == 0:
      out[key] = float(value)
    else:
      out.update({f"{key}/{c}": float(v) for c, v in enumerate(value[:num_classes])})
  return out

def restore_or_init(model: JDBW, config, checkpointer: Checkpointer, streams):
  state = jax.jit(model.init_state)(jax.random.key(config.seed))
  restored = checkpointer.restore(state, {f"data_{k}": it for k, it in streams.items()})
  if restored is None:
    return state, 0
  state, step = restored
  logging.info("Resumed from the checkpoint at step %d.", step)
  return state, step

def train_and_evaluate(config, workdir: str) -> TrainState:
  """Trains JD-BW on config's source/target domains; workdir holds everything of the run.

  Re-running with the same workdir resumes from its latest checkpoint.
  """
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  save_config(workdir, config)
  mesh = sharding.make_data_mesh()
  logging.info("Devices: %s (processes: %d)", jax.devices(), jax.process_count())
  streams = make_streams(config)
  sample_x, sample_y = fixed_inputs(config, config.num_samples, seed=config.seed)
  x_shape, y_shape = sample_x["image"].shape[1:], sample_y["image"].shape[1:]
  model = JDBW(config, x_shape, y_shape)

  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.max_to_keep,
                              save_interval_steps=config.checkpoint_every)
  state, start_step = restore_or_init(model, config, checkpointer, streams)
  state = sharding.replicate(state, mesh)
  train_step = make_train_step(model, mesh)
  translate = make_translate_fn(model)
  writer = MetricWriter(os.path.join(workdir, "tensorboard"))
  if start_step == 0:
    writer.write_hparams(config.to_dict())

  evaluator = None
  if config.eval_every and can_evaluate(config, config.eval.inception_weights):
    evaluator = Evaluator(config, workdir, x_shape, y_shape,
                          inception_weights=config.eval.inception_weights,
                          num_eval=config.num_eval)

  def on_metrics(step, metrics):
    scalars = scalar_metrics(metrics, config.data.num_classes)
    writer.write_scalars(step, scalars)

  def write_samples(step, state):
    grids = sample_grids(model, translate, state, sample_x["image"], sample_y["image"],
                         jax.random.key(config.seed + step))
    writer.write_images(step, grids)
    if jax.process_index() == 0:
      for name, grid in grids.items():
        images.save_png(os.path.join(workdir, "samples", f"{name}_{step:07d}.png"), grid)

  def evaluate(step, state):
    scores = evaluator(model, translate, state)
    logging.info("Step %d: %s", step, {k: round(v, 4) for k, v in scores.items()})
    writer.write_scalars(step, {f"eval/{k}": v for k, v in scores.items()})

  actions = [loop.PeriodicAction(config.sample_every, write_samples)]
  if evaluator is not None:
    actions.append(loop.PeriodicAction(config.eval_every, evaluate))
  with sharded_batches(streams, mesh) as batches:
    state = loop.run(state=state, step_fn=train_step, batches=batches,
                     start_step=start_step, num_steps=config.num_steps,
                     checkpointer=checkpointer,
                     data_iterators={f"data_{k}": p for k, p in batches.positions.items()},
                     on_metrics=on_metrics, log_every=config.log_every, actions=tuple(actions),
                     writer=writer, nonfinite=config.nonfinite,
                     max_restores=config.max_restores)
  writer.flush()
  writer.close()
  checkpointer.close()
  return state
