"""A small domain classifier for evaluation: the class-matching rate of a translation.

Trained on one domain's labelled images, it tells which class a translated image
landed in; the share of translations that keep their source's class is the
class-matching rate (the JD-BW paper's central qualitative claim, made measurable).
Labels never enter a translation objective: only this monitor sees them.
"""

from typing import Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from flax import serialization

from i2i_jax import files


class DomainClassifier(nn.Module):
  """conv32-conv64-fc128 with max pooling: enough for digits at 32x32."""

  num_classes: int

  @nn.compact
  def __call__(self, x, return_features: bool = False):
    for features in (32, 64):
      x = nn.relu(nn.Conv(features, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    feats = nn.relu(nn.Dense(128)(x))
    logits = nn.Dense(self.num_classes)(feats)
    return (logits, feats) if return_features else logits


def train_classifier(batches: Iterator[dict], num_classes: int, image_shape, *, steps: int,
                     seed: int = 0, lr: float = 1e-3, log_fn: Callable[[str], None] | None = None):
  """Fits a DomainClassifier on batches {"image": (B,H,W,C) float, "label": (B,)}.

  Returns the params. Unlabelled samples (label -1) are masked out of the loss.
  """
  model = DomainClassifier(num_classes)
  params = model.init(jax.random.key(seed), jnp.zeros((1,) + tuple(image_shape)))["params"]
  tx = optax.adam(lr)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, images, labels):
    def loss_fn(p):
      logits = model.apply({"params": p}, images)
      mask = labels >= 0
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
      return jnp.sum(ce * mask) / jnp.maximum(mask.sum(), 1)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  for i in range(steps):
    batch = next(batches)
    params, opt_state, loss = step(params, opt_state, batch["image"], batch["label"])
    if log_fn and (i + 1) % max(steps // 5, 1) == 0:
      log_fn(f"classifier step {i + 1}/{steps}: loss {float(loss):.4f}")
  return params


def predict(params, images, num_classes: int, batch_size: int = 500) -> np.ndarray:
  """Predicted class of each image, in chunks to bound memory."""
  model = DomainClassifier(num_classes)
  apply = jax.jit(lambda p, x: jnp.argmax(model.apply({"params": p}, x), -1))
  out = [np.asarray(apply(params, images[i:i + batch_size]))
         for i in range(0, len(images), batch_size)]
  return np.concatenate(out)


def accuracy(predicted, labels) -> float:
  """Share of labelled samples (label >= 0) whose prediction equals the label."""
  predicted, labels = np.asarray(predicted), np.asarray(labels)
  mask = labels >= 0
  if not mask.any():
    raise ValueError("accuracy needs at least one labelled sample (all labels are -1)")
  return float(np.mean(predicted[mask] == labels[mask]))


def save_params(path: str, params) -> None:
  files.write_atomic(path, serialization.to_bytes(params))


def load_params(path: str, num_classes: int, image_shape):
  """Restores params saved by `save_params`; the template fixes shapes and dtypes."""
  template = DomainClassifier(num_classes).init(
      jax.random.key(0), jnp.zeros((1,) + tuple(image_shape)))["params"]
  return serialization.from_bytes(template, epath.Path(path).read_bytes())
