"""BalaGAN's objectives (Section 3.2, "Losses") and the encoder's NT-Xent (Section 3.1).

The GAN terms follow the authors' code, which is FUNIT's (`GPPatchMcResDis.calc_*`,
`FUNITModel.forward`): every adversarial term is a mean over the patch map of the
label-indexed discriminator output (`models.select_class`). Weights are applied by
the training step: gan_w 1, fm_w 1, r_w 0.1 (config) and the R1 weight 10, which
FUNIT and BalaGAN hard-code in their `dis_update`.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax


def d_hinge_real_loss(real_response: jax.Array) -> jax.Array:
  """E_x[max(0, 1 - D_adv(x)_{m(x)})]: the real half of L_GAN(D) (Section 3.2).

  `real_response` is the indexed patch map (B, h, w) of real images under their own
  modality; the mean runs over batch and patches (FUNIT `calc_dis_real_loss`).
  """
  return jnp.mean(jax.nn.relu(1.0 - real_response))


def d_hinge_fake_loss(fake_response: jax.Array) -> jax.Array:
  """E_{x,y}[max(0, 1 + D_adv(G(x, y))_{m(y)})]: the fake half of L_GAN(D).

  `fake_response` is the patch map of translations indexed by the reference's
  modality m(y) (FUNIT `calc_dis_fake_loss`).
  """
  return jnp.mean(jax.nn.relu(1.0 + fake_response))


def g_adversarial_loss(fake_response: jax.Array) -> jax.Array:
  """L_GAN(G) = -E_{x,y}[D_adv(G(x, y))_{m(y)}] (Section 3.2; FUNIT `calc_gen_loss`).

  FUNIT averages this over the translation G(x, y) and the reconstruction G(x, x)
  (`0.5 * (l_adv_t + l_adv_r)`); the training step passes each response here.
  """
  return -jnp.mean(fake_response)


def d_classification_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """L_CE(D) = CrossEntropy(D_cls(x), 1_{m(x)}) on real images only (Section 3.2).

  `logits` (B, k+1) are the classifier head's spatially averaged patch logits
  (authors' `calc_dis_cls_loss`); the mean runs over the batch (torch's default).
  """
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def reconstruction_loss(reconstruction: jax.Array, images: jax.Array) -> jax.Array:
  """L_R(G) = E_x[|x - G(x, x)|_1] as FUNIT's `recon_criterion`: a mean over pixels."""
  return jnp.mean(jnp.abs(reconstruction - images))


def feature_matching_loss(fake_features: jax.Array, real_features: jax.Array) -> jax.Array:
  """L_FM(G) = E[|D_f(G(x, y)) - D_f(y)|_1] (Section 3.2), as FUNIT computes it.

  FUNIT compares the discriminator trunk's features after averaging them over space
  (`feat.mean(3).mean(2)`), i.e. (B, C) vectors, with a mean absolute difference. It
  uses two such terms: translation vs reference (l_m_rec) and reconstruction vs
  source (l_c_rec); call this once for each. Features are (B, h, w, C).
  """
  return jnp.mean(jnp.abs(fake_features.mean(axis=(1, 2)) - real_features.mean(axis=(1, 2))))


def r1_penalty(response_fn: Callable, images: jax.Array, has_aux: bool = False):
  """R1(D) = E_x[|grad D_adv(x)|^2] on real images (Mescheder et al., 2018), FUNIT's way.

  FUNIT's `calc_grad2` differentiates the *mean* of the indexed real response over
  batch and patches w.r.t. the images, squares, sums over everything and divides by
  the batch size: sum_b |d mean(resp) / d x_b|^2 / B. This is reproduced exactly (the
  1/(B h w) factor inside the gradient included). The response is returned too so the
  caller can reuse the same forward pass for the real hinge loss, as FUNIT does.

  Args:
    response_fn: images -> indexed response (B, h, w), or (response, aux) if has_aux.
    images: the real images (B, H, W, C) the gradient is taken at.
    has_aux: whether `response_fn` returns auxiliary outputs.

  Returns:
    (penalty, response) or (penalty, (response, aux)) when has_aux.
  """
  if has_aux:
    response, vjp, aux = jax.vjp(response_fn, images, has_aux=True)
  else:
    response, vjp = jax.vjp(response_fn, images)
  (grad,) = vjp(jnp.full_like(response, 1.0 / response.size))
  penalty = jnp.sum(jnp.square(grad.astype(jnp.float32))) / images.shape[0]
  return penalty, ((response, aux) if has_aux else response)


def nt_xent_loss(z_i: jax.Array, z_j: jax.Array, temperature: float = 0.5) -> jax.Array:
  """SimCLR's NT-Xent (Chen et al., 2020) on two views, as the authors' `NTXentLoss`.

  The 2N projections are compared by cosine similarity / temperature; each view's
  positive is the other view of its image, its negatives the other 2N - 2 views (self
  similarity is excluded). The cross-entropy is averaged over all 2N anchors.
  z_i, z_j: (N, d) projections of the two augmented views.
  """
  if z_i.shape != z_j.shape:
    raise ValueError(f"views differ in shape: {z_i.shape} vs {z_j.shape}")
  n = z_i.shape[0]
  z = jnp.concatenate([z_i, z_j], axis=0).astype(jnp.float32)
  z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-8)  # torch's cosine eps
  logits = (z @ z.T) / temperature
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
  positives = (jnp.arange(2 * n) + n) % (2 * n)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, positives))
