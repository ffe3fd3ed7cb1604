"""Dotted-key overrides for test configs, as --config.a.b=v does on the command line."""


def apply_overrides(config, overrides):
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def command_line(config, base) -> list[str]:
  """--config.a.b=v flags that turn `base` (the --config file's config) into `config`."""
  flat, flat_base = _flatten(config.to_dict()), _flatten(base.to_dict())
  return [f"--config.{key}={value}" for key, value in flat.items() if flat_base[key] != value]


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat
