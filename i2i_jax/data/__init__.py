"""Data: where a domain's images come from and how they become device batches.

  sources     random-access record sources: arrays (embedded MNIST), tfds, subsets,
              relabelled unions; tfds-style split strings
  folders     image folders as sources (decoding, corrupt-file policy)
  domains     the domain config (`default_domain_config`) and the source it names
  transforms  per-record and per-batch transforms, class re-sampling
  pipeline    grain pipelines from a domain config: training batches, fixed samples,
              every record in record order
  prefetch    device batches a step ahead, with checkpointable stream positions
"""
