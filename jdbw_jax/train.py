"""JD-BW training: what is JD-BW's own (streams, state, sample grids, evaluation); the
shared `i2i_jax.training.trainer` runs the loop, checkpoints and TensorBoard."""

import functools

import jax

from i2i_jax.data import pipeline
from i2i_jax.training import hosts, sharding, trainer
from i2i_jax.training.checkpoint import save_config
from jdbw_jax import evaluate
from jdbw_jax.method import JDBW, TrainState

# One (d + 1)-stacked batch per domain, split over the devices along the batch axis (1).
put_batch = functools.partial(sharding.shard_batch, batch_axis=1)


def make_streams(config):
  """Source ("x") and target ("y") grain iterators yielding (d + 1)-stacked batches."""
  batch = sharding.per_host_batch_size(config.batch_size)
  domains = {"x": config.data.source, "y": config.data.target}
  return {name: iter(pipeline.make_domain_dataset(domain, batch_size=batch,
                                                  seed=config.seed + offset,
                                                  steps_per_call=config.d_steps + 1))
          for offset, (name, domain) in enumerate(domains.items())}


def train_and_evaluate(config, workdir: str) -> TrainState:
  """Trains JD-BW on config's source/target domains; workdir holds everything of the run.

  Re-running with the same workdir resumes from its latest checkpoint.
  """
  save_config(workdir, config)
  sample_x, sample_y = evaluate.fixed_inputs(config, config.num_samples, seed=config.seed)
  model = JDBW(config, sample_x["image"].shape[1:], sample_y["image"].shape[1:])
  # Checkpoints name the streams data_x and data_y.
  stage = trainer.Trainer(workdir, jax.jit(model.init_state)(jax.random.key(config.seed)),
                          make_streams(config), trainer.Schedule.from_config(config),
                          checkpoint_prefix="data_")
  translate = evaluate.make_translate_fn(model)

  def sample_grids(state, step):
    return evaluate.sample_grids(model, translate, state, sample_x["image"], sample_y["image"],
                                 jax.random.key(config.seed + step))

  evaluator = None
  # Process 0 evaluates alone (`trainer.Trainer.run`): only it trains or reads the judges.
  if (config.eval_every and hosts.is_primary()
      and evaluate.can_evaluate(config, config.eval.inception_weights)):
    evaluator = evaluate.Evaluator(config, workdir, model,
                                   inception_weights=config.eval.inception_weights,
                                   num_eval=config.num_eval)
  return stage.run(model.train_step, put_batch, hparams=config.to_dict(),
                   sample_grids=sample_grids, evaluate=evaluator)
