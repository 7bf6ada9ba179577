"""Experiment configs: load `get_config()` files, apply `--set` overrides, validate.

Every experiment is a locked `ml_collections.ConfigDict`, so a misspelt key fails loudly instead of silently
creating a new field. Errors raised here are `ConfigError`s with one-line messages that the CLI prints
without a traceback.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections

from memlab.errors import ConfigError

GROUPS = ("model", "data", "objective", "train", "eval", "mesh", "logging")
OBJECTIVE_GROUPS = ("objective", "train.curriculum_objective")  # objective key -> weight; keys may be added


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Import `path`, call its `get_config()`, apply `key=value` overrides, validate, and lock."""
    config = load_base_config(path)
    apply_overrides(config, overrides)
    validate(config)
    return config


def load_module(path: str | Path, kind: str = "experiment") -> ModuleType:
    """Import a Python file by path: experiments and sweeps are files, not packages, and build on each other
    (a baseline's experiment reuses another's setup; a sweep reads an experiment's constants)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{kind} file not found: {path} (expected a .py file)")
    spec = importlib.util.spec_from_file_location(f"memlab_{kind}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def call_file_function(path: str | Path, function: str, expected: type, kind: str) -> Any:
    """Import a user's Python file (an experiment or a sweep) and return `function()`, checking its type."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{kind} file not found: {path} (expected a .py file defining {function}())")
    module = load_module(path, kind)
    if not hasattr(module, function):
        raise ConfigError(f"{path} defines no {function}(); a {kind} file returns a {expected.__name__} from it")
    value = getattr(module, function)()
    if not isinstance(value, expected):
        raise ConfigError(f"{path}: {function}() returned {type(value).__name__}, expected {expected.__name__}")
    return value


def load_base_config(path: str | Path) -> ml_collections.ConfigDict:
    """Import an experiment file and return its locked config, before overrides."""
    config = call_file_function(path, "get_config", ml_collections.ConfigDict, "experiment")
    missing = [g for g in GROUPS if g not in config]
    if missing:
        raise ConfigError(f"{path}: config lacks the groups {missing}; every experiment has {list(GROUPS)}")
    config.lock()
    return config


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Dotted names of every leaf of a config (nested groups flattened)."""
    keys = []
    for name, value in config.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flat_keys(value, dotted + "."))
        else:
            keys.append(dotted)
    return keys


def _unknown_key(config: ml_collections.ConfigDict, key: str) -> ConfigError:
    close = difflib.get_close_matches(key, flat_keys(config), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; valid groups are {', '.join(GROUPS)}"
    return ConfigError(f"unknown config key '{key}'{hint}")


def get_value(config: ml_collections.ConfigDict, key: str) -> Any:
    """Value at a dotted key, with a ConfigError naming close matches if it does not exist."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise _unknown_key(config, key)
        node = node[part]
    return node


def parse_value(text: str) -> Any:
    """Parse an override value as a Python literal, falling back to a bare string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def set_value(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """Set a dotted key, coercing to the field's type; unknown keys and wrong types are ConfigErrors."""
    parent_key, _, leaf = key.rpartition(".")
    try:
        parent = get_value(config, parent_key) if parent_key else config
    except ConfigError:
        raise _unknown_key(config, key) from None
    if parent_key in OBJECTIVE_GROUPS and leaf not in parent:
        _add_objective(parent, parent_key, leaf, value)
        return
    if not isinstance(parent, ml_collections.ConfigDict) or leaf not in parent:
        raise _unknown_key(config, key)
    current = parent[leaf]
    if isinstance(current, ml_collections.ConfigDict):
        if not isinstance(value, dict):
            example = f"{key}.{next(iter(current.keys()), 'x')}=..."
            raise ConfigError(f"'{key}' is a group of {sorted(current.keys())}; set its members, e.g. {example}")
        for name, item in value.items():
            set_value(config, f"{key}.{name}", item)
        return
    try:
        parent[leaf] = _coerce(current, value)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"'{key}' = {value!r} has the wrong type: expected {type(current).__name__} (current value {current!r})"
        ) from err


def _add_objective(group: ml_collections.ConfigDict, group_key: str, name: str, weight: Any) -> None:
    """An objective group maps objective keys (`name` or `name@pass`) to weights; any registered objective, on
    any registered pass, may be added to the mix."""
    from memlab import objectives

    try:
        objectives.check({name: 1.0})
    except ValueError as err:
        raise ConfigError(f"'{group_key}.{name}': {err}") from None
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ConfigError(f"'{group_key}.{name}' = {weight!r} has the wrong type: expected a float weight")
    with group.unlocked():
        group[name] = float(weight)


def _coerce(current: Any, value: Any) -> Any:
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise TypeError
    if isinstance(current, int) and not isinstance(value, bool):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        raise TypeError
    if isinstance(current, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, str):
        return str(value)
    if isinstance(current, (tuple, list)):
        if isinstance(value, str):
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        if not isinstance(value, (tuple, list)):
            raise TypeError
        return type(current)(value)
    if type(value) is not type(current):
        raise TypeError
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
    """Apply `key=value` strings in order."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. model.d_model=64)")
        set_value(config, key.strip(), parse_value(text.strip()))


def validate(config: ml_collections.ConfigDict) -> None:
    """Check values across the config before any compute is spent."""
    from memlab import validation  # late import: validation consults the model and task registries

    validation.check(config)


def to_dict(config: ml_collections.ConfigDict) -> dict:
    """Plain JSON-able dict of a config (field references resolved)."""
    return json.loads(config.to_json_best_effort())


def from_dict(data: dict) -> ml_collections.ConfigDict:
    """Rebuild a locked config from `to_dict` output (e.g. a run's config.json)."""
    config = ml_collections.ConfigDict(_tuples_from_lists(data))
    config.lock()
    return config


def _tuples_from_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tuples_from_lists(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples_from_lists(v) for v in value)
    return value


def diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(diff(va, vb, f"{prefix}{k}."))
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out
