"""The BalaGAN method's translation stage: its networks, train state and step (Section 3.2).

The step follows FUNIT's trainer: each iteration updates D, then G (the authors'
`gan_trainer.py`), then the generator's EMA copy used for sampling and inference.
Both updates run in ONE jitted call.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from balagan_jax import losses, models
from i2i_jax import layers
from i2i_jax.training.state import NetState, all_finite, compute_dtype, keep_finite_update

sg = jax.lax.stop_gradient


def interleave(a: jax.Array, b: jax.Array) -> jax.Array:
  """[a0, b0, a1, b1, ...]: one batch of 2B. When a and b are split over devices along
  the batch, each device's share of the result is made of its own shares of a and b,
  so no data moves between devices (concatenation would move half of it)."""
  return jnp.stack([a, b], axis=1).reshape((-1,) + a.shape[1:])


def deinterleave(ab: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The inverse of `interleave`."""
  ab = ab.reshape((-1, 2) + ab.shape[1:])
  return ab[:, 0], ab[:, 1]


class TrainState(struct.PyTreeNode):
  """Everything a run needs to continue: G and D (each with its optimizer), G's EMA, step."""

  step: jax.Array
  rng: jax.Array
  g: NetState
  g_ema: Any  # generator parameters averaged with config.ema_decay (FUNIT's gen_test)
  d: NetState


def rmsprop(lr: float, optim_cfg) -> optax.GradientTransformation:
  """PyTorch RMSprop with weight decay, as the authors' trainer (gan_trainer.py).

  torch adds weight_decay * param to the gradient, keeps alpha-averaged squares and
  divides by sqrt(v) + eps (eps outside the root).
  """
  return optax.chain(
      optax.add_decayed_weights(optim_cfg.weight_decay),
      optax.scale_by_rms(decay=optim_cfg.rmsprop_decay, eps=optim_cfg.eps, eps_in_sqrt=False,
                         bias_correction=False, initial_scale=0.0),
      optax.scale(-lr))


class BalaGAN:
  """Networks and the jittable step for `num_modalities` modalities.

  Holds no arrays: all state (optimizers included) travels in `TrainState`.
  """

  def __init__(self, config, num_modalities: int, image_shape):
    self.config = config
    dtype = compute_dtype(config.compute_dtype)
    self.num_modalities = num_modalities
    self.image_shape = tuple(image_shape)
    # config.model: the generator's fields, and the discriminator's prefixed "d_"; D's
    # classes are the modalities.
    self.gen = layers.from_config(models.Generator, config.model,
                                  out_channels=image_shape[-1], dtype=dtype)
    self.disc = layers.from_config(models.Discriminator, config.model, "d_",
                                   num_classes=num_modalities, dtype=dtype)

  def init_state(self, rng) -> TrainState:
    rng, kg, kd, kig, kid = jax.random.split(rng, 5)
    x = jnp.zeros((1,) + self.image_shape, jnp.float32)
    g_vars = self.gen.init(kg, x, x)
    d_vars = self.disc.init(kd, x, jnp.zeros((1,), jnp.int32))
    # Kaiming-normal re-draw of every kernel, as the authors' `init: kaiming`.
    g_vars = {"params": models.funit_kaiming_init(kig, g_vars["params"])}
    d_vars = {"params": models.funit_kaiming_init(kid, d_vars["params"])}
    optim = self.config.optim
    g = NetState.create(g_vars, rmsprop(optim.lr_g, optim))
    return TrainState(step=jnp.zeros((), jnp.int32), rng=rng, g=g, g_ema=g.params,
                      d=NetState.create(d_vars, rmsprop(optim.lr_d, optim)))

  def translate(self, g_params, x, y):
    return self.gen.apply({"params": g_params}, x, y)

  def generate(self, g_params, x, y):
    """(G(x, y), G(x, x)), sharing the content code of x.

    The two decodes stay separate calls: as one batch of 2B they ran 12% slower on
    XLA:CPU (one decoder conv took 3x as long), where D's batches of 2B did not.
    """
    g = lambda method, *a: self.gen.apply({"params": g_params}, *a, method=method)
    content = g(self.gen.encode_content, x)
    return (g(self.gen.decode, content, g(self.gen.encode_style, y)),
            g(self.gen.decode, content, g(self.gen.encode_style, x)))

  def d_update(self, state: TrainState, xt, y, ly):
    """FUNIT's dis_update plus BalaGAN's classifier head: hinge on real references y
    (their modality) and on translations xt = G(x, y) (y's modality), R1 on the real
    references, cross-entropy of Dcls on real images."""
    cfg = self.config.loss

    def loss_fn(d_params):
      def real_response(images):
        adv, logits, _ = self.disc.apply({"params": d_params}, images, ly)
        return adv, logits

      reg, (resp_real, logits_real) = losses.r1_penalty(real_response, y, has_aux=True)
      fake_adv, _, _ = self.disc.apply({"params": d_params}, xt, ly)
      l_real = losses.d_hinge_real_loss(resp_real)
      l_fake = losses.d_hinge_fake_loss(fake_adv)
      total = cfg.gan_w * (l_real + l_fake) + cfg.reg_w * reg
      l_cls = jnp.zeros(())
      if self.config.use_classifier_head:
        l_cls = losses.d_classification_loss(logits_real, ly)
        total = total + cfg.cls_w * l_cls
      acc = jnp.mean(jnp.argmax(logits_real, -1) == ly)
      return total, {"d_loss": total, "d_real": l_real, "d_fake": l_fake, "r1": reg,
                     "d_cls": l_cls, "d_cls_acc": acc}

    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.d.params)
    return state.replace(d=state.d.apply_gradients(grads)), metrics, grads

  def g_update(self, state: TrainState, generated, generator_vjp, x, lx, y, ly):
    """FUNIT's gen_update: adversarial on translation and reconstruction (averaged),
    L1 reconstruction of G(x, x), feature matching of D's trunk features.

    The losses are differentiated w.r.t. the generated images (xt, xr) and chained
    into G's parameters through `generator_vjp`, the pullback of `generate`. D sees
    translations and reconstructions as one batch of 2B, real images as another.
    """
    cfg = self.config.loss
    d_vars = {"params": state.d.params}
    _, _, feat_real = sg(self.disc.apply(d_vars, interleave(y, x), interleave(ly, lx)))
    feat_y, feat_x = deinterleave(feat_real)

    def loss_fn(generated):
      xt, xr = generated
      adv, _, feat = self.disc.apply(d_vars, interleave(xt, xr), interleave(ly, lx))
      (adv_t, adv_r), (feat_t, feat_r) = deinterleave(adv), deinterleave(feat)
      l_adv = 0.5 * (losses.g_adversarial_loss(adv_t) + losses.g_adversarial_loss(adv_r))
      l_rec = losses.reconstruction_loss(xr, x)
      l_fm = (losses.feature_matching_loss(feat_r, feat_x)
              + losses.feature_matching_loss(feat_t, feat_y))
      total = cfg.gan_w * l_adv + cfg.r_w * l_rec + cfg.fm_w * l_fm
      return total, {"g_loss": total, "g_adv": l_adv, "g_rec": l_rec, "g_fm": l_fm}

    image_grads, metrics = jax.grad(loss_fn, has_aux=True)(generated)
    (grads,) = generator_vjp(image_grads)
    g = state.g.apply_gradients(grads)
    decay = self.config.ema_decay
    g_ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, state.g_ema,
                                   g.params)
    return state.replace(g=g, g_ema=g_ema), metrics, grads

  def updates(self, state: TrainState, batch):
    """The D update, then the G update and the EMA.

    Returns (new state, (D metrics, D grads), (G metrics, G grads)).

    One generator pass serves both updates: the D update leaves G unchanged, so the
    translations it scores are the ones the G update differentiates (FUNIT runs G
    twice, once under no_grad in dis_update).
    """
    x, lx = batch["content"]["image"], batch["content"]["label"]
    y, ly = batch["reference"]["image"], batch["reference"]["label"]
    generated, generator_vjp = jax.vjp(lambda p: self.generate(p, x, y), state.g.params)
    new, d_metrics, d_grads = self.d_update(state, sg(generated[0]), y, ly)
    new, g_metrics, g_grads = self.g_update(new, generated, generator_vjp, x, lx, y, ly)
    return new, (d_metrics, d_grads), (g_metrics, g_grads)

  def train_step(self, state: TrainState, batch) -> tuple[TrainState, dict[str, Any]]:
    """batch["content"|"reference"]: {"image": (B, H, W, C), "label": (B,)}, drawn
    independently of each other by `config.pair_sampling` (uniformly over the images,
    or over the modalities, i.e. the (k+1)^2 pairs; `train.make_streams`). A non-finite
    update leaves the state unchanged."""
    new, d_out, g_out = self.updates(state, batch)
    new, finite_metrics = keep_finite_update(state, new.replace(step=state.step + 1),
                                             d=all_finite(d_out), g=all_finite(g_out))
    return new, {**d_out[0], **g_out[0], **finite_metrics}
