"""A user's own model in a recipe: a factory in their ``.py`` file (opt-in code import) or a ``torch.export`` file,
optional weights (safetensors or ``torch.load(weights_only=True)``), exits attached by :func:`attach_exits`.

::

    model:
      factory: examples/resnet_digits.py:build_resnet     # or an importable "package.module:function"
      kwargs: {num_classes: 10}
      weights: resnet.safetensors                         # optional: .safetensors, .pt, .pth, .bin
      exits: {at: [layer1, layer2, layer3], heads: auto, freeze_backbone: false}

    model: {exported: model.pt2, exits: {at: auto:3}}     # a torch.export program: no code is imported

Importing a factory runs the user's code, so :func:`build_user_model` refuses it unless ``allow_code`` is set
(``edge-runtime convert --allow-code``). The bundle records the factory's name and the sha256 of the weights
and of the exported file (``extra.model_source``); the bundle itself never holds code.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from converters.models.attach import attach_exits
from converters.models.contract import EarlyExitModel
from converters.models.registry import HEADS
from edge_runtime.errors import ConfigError
from edge_runtime.files import sha256_file

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_EXITS: dict[str, Any] = {"at": None, "heads": "auto", "head_kwargs": {}, "freeze_backbone": False}


def is_user_model(value: Any) -> bool:
    """Whether a recipe's ``model`` section names a user's model (``factory`` or ``exported``)."""
    return isinstance(value, dict) and ("factory" in value or "exported" in value)


def validate_user_model(value: dict[str, Any], where: str) -> dict[str, Any]:
    """Check a ``model: {factory | exported, kwargs, weights, exits}`` section (nothing is imported here)."""
    allowed = {"factory", "exported", "kwargs", "weights", "exits"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"recipe key {where}.{unknown[0]!r} is not known; allowed: {', '.join(sorted(allowed))}")
    if ("factory" in value) == ("exported" in value):
        raise ConfigError(f"recipe key {where}: give either factory (a user's code, with --allow-code) or exported "
                          "(a torch.export .pt2 file), not both")
    out: dict[str, Any] = {"kwargs": {}, "weights": None}
    if "factory" in value:
        f = value["factory"]
        if not isinstance(f, str) or f.count(":") != 1 or not all(f.split(":")):
            raise ConfigError(f"recipe key {where}.factory: expected 'module:function' or 'path/file.py:function', "
                              f"got {f!r}")
        out["factory"] = f
    else:
        e = value["exported"]
        if not isinstance(e, str) or not e.endswith(".pt2"):
            raise ConfigError(f"recipe key {where}.exported: expected the path of a torch.export '.pt2' file, "
                              f"got {e!r}")
        out["exported"] = e
        if value.get("kwargs") or value.get("weights"):
            raise ConfigError(f"recipe key {where}: an exported program carries its weights; kwargs and weights "
                              "go with factory")
    kwargs = value.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"recipe key {where}.kwargs: expected a mapping, got {type(kwargs).__name__}")
    out["kwargs"] = dict(kwargs)
    w = value.get("weights")
    if w is not None and (not isinstance(w, str) or not w.endswith(WEIGHT_SUFFIXES)):
        raise ConfigError(f"recipe key {where}.weights: expected a path ending in {', '.join(WEIGHT_SUFFIXES)}, "
                          f"got {w!r}")
    out["weights"] = w
    out["exits"] = _validate_exits(value.get("exits"), f"{where}.exits")
    return out


def _validate_exits(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"recipe key {where}: expected a mapping with 'at' (module names or 'auto:K')")
    unknown = sorted(set(value) - set(_EXITS))
    if unknown:
        raise ConfigError(f"recipe key {where}.{unknown[0]!r} is not known; allowed: {', '.join(sorted(_EXITS))}")
    out = {**_EXITS, **value}
    at = out["at"]
    if isinstance(at, str):
        if not at.startswith("auto:") or not at[5:].isdigit() or int(at[5:]) < 1:
            raise ConfigError(f"recipe key {where}.at: expected a list of module names or 'auto:K' (K >= 1), "
                              f"got {at!r}")
    elif not isinstance(at, list) or not at or not all(isinstance(a, str) and a for a in at):
        raise ConfigError(f"recipe key {where}.at: expected a list of module names or 'auto:K', got {at!r}")
    heads = out["heads"]
    names = [heads] if isinstance(heads, str) else heads if isinstance(heads, list) else None
    if names is None:
        raise ConfigError(f"recipe key {where}.heads: expected 'auto', a head name or a list, got {heads!r}")
    for i, h in enumerate(names):
        name = h.get("name") if isinstance(h, dict) else h
        if not isinstance(name, str) or (name != "auto" and name not in HEADS):
            raise ConfigError(f"recipe key {where}.heads[{i}]: unknown exit-head type {name!r}; known: auto, "
                              f"{', '.join(HEADS.names())}")
    if not isinstance(out["head_kwargs"], dict):
        raise ConfigError(f"recipe key {where}.head_kwargs: expected a mapping")
    if not isinstance(out["freeze_backbone"], bool):
        raise ConfigError(f"recipe key {where}.freeze_backbone: expected true or false, got {out['freeze_backbone']!r}")
    return out


def resolve_path(path: str, base_dir: Path | None, what: str) -> Path:
    """A recipe path: as given (relative to the working directory), else relative to the recipe's folder."""
    p = Path(path)
    for candidate in ([p] if p.is_absolute() else [p] + ([base_dir / p] if base_dir is not None else [])):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"recipe key {what}: {path} is not a file"
                      + (f" (looked in the working directory and in {base_dir})" if base_dir is not None else ""))


def load_factory(spec: str, *, base_dir: Path | None = None, allow_code: bool = False) -> Callable[..., Any]:
    """Import ``module:function`` or ``path/file.py:function`` (runs the module's code: only with ``allow_code``)."""
    if not allow_code:
        raise ConfigError(f"recipe key model.factory: importing {spec.split(':')[0]!r} runs its code; allow it with "
                          "edge-runtime convert --allow-code (or convert(..., allow_code=True)), or give "
                          "model.exported (a torch.export .pt2 file) instead")
    module_name, func_name = spec.split(":")
    try:
        if module_name.endswith(".py") or "/" in module_name:
            path = resolve_path(module_name, base_dir, "model.factory")
            unique = f"_edge_runtime_user_{abs(hash(str(path.resolve())))}"
            mod_spec = importlib.util.spec_from_file_location(unique, path)
            if mod_spec is None or mod_spec.loader is None:
                raise ConfigError(f"recipe key model.factory: {path} is not an importable Python file")
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[unique] = module
            mod_spec.loader.exec_module(module)
        else:
            extra = [str(base_dir)] if base_dir is not None else []
            sys.path[:0] = extra
            try:
                module = importlib.import_module(module_name)
            finally:
                for p in extra:
                    sys.path.remove(p)
    except ConfigError:
        raise
    except Exception as exc:  # the user's module raised while importing
        raise ConfigError(f"recipe key model.factory: importing {module_name!r} failed: "
                          f"{type(exc).__name__}: {exc}") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ConfigError(f"recipe key model.factory: {module_name!r} has no function {func_name!r}")
    return fn


def load_weights(model: nn.Module, path: Path) -> str:
    """Load a state dict (safetensors, or ``torch.load(weights_only=True)``) strictly; returns its sha256.

    Raises:
        ConfigError: unreadable file, or missing/unexpected/mis-shaped keys (listed).
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]
    except Exception as exc:
        raise ConfigError(f"{path}: cannot read the weights ({type(exc).__name__}: {_first(exc)})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state)
                    if isinstance(state[k], torch.Tensor) and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if keys:
                parts.append(f"{label} {len(keys)}: {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}")
        raise ConfigError(f"{path}: the weights do not match the model ({'; '.join(parts)})")
    model.load_state_dict(state, strict=True)
    return sha256_file(path)


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def build_user_model(spec: dict[str, Any], example: torch.Tensor | tuple[torch.Tensor, ...], *,
                     base_dir: Path | None = None, allow_code: bool = False,
                     verbose: bool = True) -> tuple[EarlyExitModel, dict[str, Any]]:
    """Build the user's model from a validated recipe ``model`` section and attach its exits.

    Returns:
        The early-exit model and the record the bundle keeps (``extra.model_source``).
    """
    record: dict[str, Any] = {}
    if "factory" in spec:
        fn = load_factory(spec["factory"], base_dir=base_dir, allow_code=allow_code)
        try:
            net = fn(**spec["kwargs"])
        except Exception as exc:
            raise ConfigError(f"recipe key model.factory: {spec['factory']}(**{spec['kwargs']}) raised "
                              f"{type(exc).__name__}: {exc}") from None
        if not isinstance(net, nn.Module):
            raise ConfigError(f"recipe key model.factory: {spec['factory']} returned {type(net).__name__}, "
                              "not an nn.Module")
        record.update(factory=spec["factory"], kwargs=dict(spec["kwargs"]))
        if spec.get("weights"):
            path = resolve_path(spec["weights"], base_dir, "model.weights")
            record["weights"] = {"file": path.name, "sha256": load_weights(net, path)}
        net.eval()
        source: Any = net
    else:
        path = resolve_path(spec["exported"], base_dir, "model.exported")
        try:
            source = torch.export.load(str(path))
        except Exception as exc:
            raise ConfigError(f"{path}: not a readable torch.export program ({type(exc).__name__}: "
                              f"{_first(exc)})") from None
        record["exported"] = {"file": path.name, "sha256": sha256_file(path)}
    ex = spec["exits"]
    model = attach_exits(source, example, at=ex["at"], heads=ex["heads"], head_kwargs=ex["head_kwargs"],
                         freeze_backbone=ex["freeze_backbone"], verbose=verbose)
    record["exits"] = model.attach_info
    model.source_record = record
    return model, record
