"""Training: the skeleton every stage of every method runs, and what it stands on.

  trainer     the skeleton: restore or init, replicate, jit, loop with TensorBoard,
              samples and evaluation (`Trainer`, `Schedule`)
  loop        the step loop: periodic actions, checkpoints, preemption, divergence
  state       `NetState` (params, stats, optimizer state, optimizer) and step helpers
  checkpoint  orbax checkpoints of the state and the streams' positions; config.json
  checksums   per-array checksums saved with checkpoints, checked on restore
  writers     TensorBoard events without TensorFlow, and a reader for tests
  progress    steps/s, input wait and ETA lines
  sharding    the data-parallel mesh, replicated state, batch sharding, per-host batch size
  cli         --config/--workdir entrypoints with one-line errors
  runtime     process set-up: multi-host join, compile cache
  hosts       multi-host: process 0 writes the shared files, the others wait for them
"""
