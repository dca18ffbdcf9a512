"""The recipe section ``kangaroo`` and the build it describes: corpus -> tokenizer -> LM -> adapter -> bundle.

::

    name: kangaroo_lm
    seed: 0
    kangaroo:
      corpus: {max_bytes: 2500000, holdout_every: 20}          # the Python standard library's sources
      tokenizer: {vocab_size: 2048}                             # byte-level BPE (tokenizers)
      lm: {dim: 256, layers: 8, heads: 4, ffn_dim: 688, exit_layer: 1, context: 128}
      train:                                                    # the recipe `train` section's shape
        threads: null
        stages:
          - {name: lm, loss: {name: kangaroo_lm}, optimizer: {name: adamw}, lr: 0.002, epochs: 1, batch_size: 16}
          - {name: adapter, loss: {name: kangaroo_adapter}, optimizer: {name: adamw}, lr: 0.002, epochs: 1,
             batch_size: 16}
      eta: 0.6                                                  # drafting stop (top-1 probability)
      gamma: 6                                                  # drafting cap (tokens per round)
      prompts: {count: 20, lines: 3}                            # held-out benchmark prompts kept in the bundle

The LM and its adapter train with the shared trainer (checkpointed every epoch, ``resume`` continues); the held-out
part of the corpus reports the LM's loss and how often the adapter's top-1 token is the LM's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from converters.methods.kangaroo.corpus import encode_documents, heldout_prompts, load_corpus, train_tokenizer, windows
from converters.methods.kangaroo.export import export_lm_bundle
from converters.methods.kangaroo.losses import evaluate_lm
from converters.methods.kangaroo.model import KangarooLM, LMConfig
from converters.recipe.sections import SECTIONS, expect_mapping, expect_type, section
from converters.training.dist import init_distributed, shutdown
from converters.training.trainer import StageConfig, Trainer, run_fingerprint
from edge_runtime.errors import ConfigError
from edge_runtime.manifest import write_manifest

KEY = "kangaroo"
_LM_DEFAULTS = LMConfig().to_dict()


def _int(value: Any, where: str, low: int) -> int:
    v = int(expect_type(value, int, where))
    if v < low:
        raise ConfigError(f"recipe key {where}: must be an integer >= {low}, got {value!r}")
    return v


@section(KEY)
def kangaroo_section(value: Any, where: str) -> dict[str, Any]:
    """Validate the ``kangaroo`` section (errors name the key) and fill in its defaults."""
    spec = expect_mapping(value, where, {"corpus": {}, "tokenizer": {}, "lm": {}, "train": None, "eta": 0.6,
                                         "gamma": 6, "prompts": {}, "eval_windows": 64}, required=("train",))
    corpus = expect_mapping(spec["corpus"], f"{where}.corpus", {"name": "python_stdlib", "root": None,
                                                                 "max_bytes": 2_500_000, "holdout_every": 20,
                                                                 "max_file_bytes": 200_000})
    if corpus["name"] != "python_stdlib":
        raise ConfigError(f"recipe key {where}.corpus.name: expected python_stdlib, got {corpus['name']!r}")
    for key, low in (("max_bytes", 1000), ("holdout_every", 2), ("max_file_bytes", 1)):
        _int(corpus[key], f"{where}.corpus.{key}", low)
    tok = expect_mapping(spec["tokenizer"], f"{where}.tokenizer", {"vocab_size": 2048, "min_frequency": 2})
    _int(tok["vocab_size"], f"{where}.tokenizer.vocab_size", 260)
    _int(tok["min_frequency"], f"{where}.tokenizer.min_frequency", 1)
    lm = expect_mapping(spec["lm"], f"{where}.lm", {k: v for k, v in _LM_DEFAULTS.items() if k != "vocab_size"})
    try:
        LMConfig(vocab_size=tok["vocab_size"], **lm)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"recipe key {where}.lm: {exc}") from None
    _, train_validator = SECTIONS.get("train")
    train = train_validator(spec["train"], f"{where}.train")
    eta = float(expect_type(spec["eta"], (int, float), f"{where}.eta"))
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"recipe key {where}.eta: must be in [0, 1], got {eta}")
    prompts = expect_mapping(spec["prompts"], f"{where}.prompts", {"count": 20, "lines": 3})
    _int(prompts["count"], f"{where}.prompts.count", 1)
    _int(prompts["lines"], f"{where}.prompts.lines", 1)
    return {"corpus": corpus, "tokenizer": tok, "lm": lm, "train": train, "eta": eta,
            "gamma": _int(spec["gamma"], f"{where}.gamma", 0), "prompts": prompts,
            "eval_windows": _int(spec["eval_windows"], f"{where}.eval_windows", 1)}


def build_lm_bundle(spec: dict[str, Any], staging: Path, *, name: str, seed: int, tolerance: float = 1e-4,
                    opset: int = 17, checkpoint: Path | None = None, resume: bool = False, progress: bool = True,
                    sections: dict[str, Any] | None = None) -> bool:
    """Train the LM and its adapter as ``spec`` (a validated ``kangaroo`` section) says and write the bundle into
    ``staging`` (manifest last). Returns False on ranks other than 0 under ``torchrun`` (they write nothing).

    Raises:
        ConfigError: a bad corpus or setting; ExportError: export or verification failed.
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    corpus = load_corpus(root=spec["corpus"]["root"], max_bytes=spec["corpus"]["max_bytes"],
                         holdout_every=spec["corpus"]["holdout_every"], max_file_bytes=spec["corpus"]["max_file_bytes"])
    tok = train_tokenizer(corpus.train, spec["tokenizer"]["vocab_size"],
                          min_frequency=spec["tokenizer"]["min_frequency"])
    cfg = LMConfig(vocab_size=tok.get_vocab_size(), **spec["lm"])
    train_w = windows(encode_documents(tok, corpus.train), cfg.context)
    held_w = windows(encode_documents(tok, corpus.heldout), cfg.context)[:spec["eval_windows"]]
    t_data = time.perf_counter() - t0
    lm = KangarooLM(cfg)
    train_spec = spec["train"]
    ctx = init_distributed(train_spec["device"])
    threads = torch.get_num_threads()
    if train_spec["threads"]:
        torch.set_num_threads(train_spec["threads"])
    try:
        run_id = run_fingerprint(spec, seed, corpus.source["sha256"])
        trainer = Trainer(lm, [StageConfig.from_dict(s) for s in train_spec["stages"]], train_w[:, :-1],
                          train_w[:, 1:], seed=seed, checkpoint_path=checkpoint, resume=resume, run_id=run_id,
                          progress=progress, dist=ctx)
        history = trainer.fit()
    finally:
        torch.set_num_threads(threads)
        shutdown(ctx)
    if not ctx.is_main:
        return False
    lm = lm.to("cpu").eval()
    t_train = time.perf_counter() - t0 - t_data
    heldout = evaluate_lm(lm, torch.from_numpy(held_w[:, :-1]), torch.from_numpy(held_w[:, 1:]))
    info = {"corpus": corpus.source,
            "prompts": heldout_prompts(corpus.heldout, spec["prompts"]["count"], lines=spec["prompts"]["lines"]),
            "training": {"train_tokens": int(train_w[:, 1:].size), "heldout_tokens": int(held_w[:, 1:].size),
                         "seconds": {"data": round(t_data, 1), "train": round(t_train, 1)},
                         "history": [{k: h[k] for k in ("stage", "name", "epoch", "loss") if k in h} for h in history],
                         "heldout": heldout}}
    manifest = export_lm_bundle(lm, tok, staging, name=name, eta=spec["eta"], gamma=spec["gamma"], tolerance=tolerance,
                                opset=opset, info=info, sections=sections, seed=seed)
    manifest["extra"][KEY]["training"]["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    write_manifest(staging, manifest)
    return True

