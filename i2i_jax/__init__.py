"""The foundation both methods stand on, in three rooms and a few shared modules.

  data/        where images come from and how they become device batches:
               sources, folders, domains, transforms, pipeline, prefetch
  training/    the training skeleton every method's stages run: trainer (the
               skeleton), loop, state, checkpoint, writers, progress, sharding, cli,
               runtime
  evaluation/  how translations are scored: metrics, inception, torch_checkpoint,
               classifier, evaluators
  layers       network blocks shared by both methods' models (and `from_config`)
  images       grids and PNG files
  files        write_atomic: every file a run writes is whole or absent
  errors       the user's mistakes, reported as one line
  benchmark    step timing and profiling for benchmarks/

A method package (jdbw_jax, balagan_jax) imports from here and never the reverse.
"""
