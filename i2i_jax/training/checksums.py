"""Checksums of a state's arrays, saved with every checkpoint and checked on restore.

tensorstore's OCDBT format checksums its index but not the array bytes: a damaged
data file restores without an error, as silently wrong weights. Each array's sum of
its bits weighted by odd position-dependent factors (mod 2^32) changes with any
single flipped bit and with any other damage but for a 2^-32 chance. It is computed
on the devices, so saving fetches one number per array.
"""

import jax
import jax.numpy as jnp

_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}
# Element i weighs _STRIDE * i + 1: odd (a flipped bit always changes the sum), and
# spread over all 32 bits (swapped elements change it too).
_STRIDE = 0x3C6EF372


def _leaf_checksum(x: jax.Array) -> jax.Array:
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  bits = jax.lax.bitcast_convert_type(x, _UNSIGNED[x.dtype.itemsize]).astype(jnp.uint32)
  bits = bits.reshape(-1)
  weights = jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(_STRIDE) + jnp.uint32(1)
  return jnp.sum(bits * weights, dtype=jnp.uint32)


@jax.jit
def _checksums(leaves):
  return [_leaf_checksum(x) for x in leaves]


def of(state) -> dict[str, int]:
  """{array path: checksum} of every array in `state`."""
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  sums = jax.device_get(_checksums([jnp.asarray(leaf) for _, leaf in flat]))
  return {jax.tree_util.keystr(path): int(s) for (path, _), s in zip(flat, sums)}


def damaged(saved: dict[str, int], state) -> list[str]:
  """The paths of `state`'s arrays whose checksums differ from the `saved` ones."""
  return [path for path, value in of(state).items() if saved.get(path, value) != value]
