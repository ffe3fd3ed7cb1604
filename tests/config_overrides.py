"""Dotted-key overrides for test configs, as --config.a.b=v does on the command line."""


def apply_overrides(config, overrides):
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config
