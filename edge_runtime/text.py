"""Text inputs: the bundle's tokenizer turns strings into the model's ``input_ids`` / ``attention_mask``.

A text bundle ships its tokenizer (a Hugging Face ``tokenizer.json``, run with the ``tokenizers`` package — an
optional dependency: ``pip install 'edge-runtime[text]'``) and records how to use it in the manifest's ``text``
section (:class:`edge_runtime.manifest.TextSpec`): the maximum length (longer texts are truncated, and the
result says which were), the padding (``longest``: to the longest text of the batch; ``max_length``: always to
``max_length``) and which model inputs it fills. The workstation tokenizes training, calibration and test data
with this same class, so the device sees exactly the ids the model was trained and calibrated on.

Example:
    >>> enc = TextEncoder.from_file("tokenizer.json", max_length=64)      # doctest: +SKIP
    >>> batch = enc.encode(["a dog", "the cat sat on the mat"])          # doctest: +SKIP
    >>> batch.feeds["input_ids"].shape, batch.truncated.tolist()         # doctest: +SKIP
    ((2, 8), [False, False])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError, InputError

PADDINGS = ("longest", "max_length")


@dataclass
class TextBatch:
    """Tokenized texts: the named model inputs (int64, (N, T)) and which texts were cut at ``max_length``."""

    feeds: dict[str, np.ndarray]
    truncated: np.ndarray
    lengths: np.ndarray


def check_texts(texts: Any, field: str = "text") -> list[str]:
    """Texts as a list of non-empty ``str``: bytes must be UTF-8; anything else is an :class:`InputError`
    naming ``field`` (and the item)."""
    if isinstance(texts, (str, bytes)):
        texts = [texts]
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    if not isinstance(texts, Sequence) or isinstance(texts, (str, bytes)):
        raise InputError(f"{field}: expected a list of strings, got {type(texts).__name__}")
    if not texts:
        raise InputError(f"{field}: no texts given")
    out = []
    for i, t in enumerate(texts):
        if isinstance(t, bytes):
            try:
                t = t.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{field}[{i}]: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        if not isinstance(t, str):
            raise InputError(f"{field}[{i}]: expected a string, got {type(t).__name__}")
        if not t.strip():
            raise InputError(f"{field}[{i}]: empty text")
        out.append(t)
    return out


class TextEncoder:
    """Runs a ``tokenizer.json`` with fixed truncation and padding rules.

    Args:
        tokenizer: a ``tokenizers.Tokenizer``.
        max_length: the longest sequence (special tokens included) the model gets; longer texts are truncated.
        padding: ``longest`` (pad to the batch's longest) or ``max_length``.
        input_ids, attention_mask: the model input names the ids and the mask go to.
        pad_id: the id padded positions get (the tokenizer's ``[PAD]``).
    """

    def __init__(self, tokenizer: Any, *, max_length: int, padding: str = "longest", input_ids: str = "input_ids",
                 attention_mask: str = "attention_mask", pad_id: int = 0) -> None:
        if padding not in PADDINGS:
            raise ConfigError(f"text padding: expected one of {', '.join(PADDINGS)}, got {padding!r}")
        if int(max_length) < 2:
            raise ConfigError(f"text max_length: expected >= 2, got {max_length}")
        self.max_length = int(max_length)
        self.padding = padding
        self.names = (input_ids, attention_mask)
        self.pad_id = int(pad_id)
        tokenizer.no_padding()
        tokenizer.no_truncation()  # truncation is done here, so that truncated texts can be reported
        self.tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> TextEncoder:
        """Load a ``tokenizer.json``.

        Raises:
            ConfigError: the ``tokenizers`` package is missing, or the file is not a readable tokenizer.
        """
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ConfigError("text inputs need the 'tokenizers' package: pip install 'edge-runtime[text]'") from None
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises its own exception type
            raise ConfigError(f"{path}: not a readable tokenizer.json ({exc})") from None
        pad = tok.token_to_id("[PAD]")
        kwargs.setdefault("pad_id", 0 if pad is None else pad)
        return cls(tok, **kwargs)

    def encode(self, texts: Any, *, field: str = "text") -> TextBatch:
        """Tokenize a batch of texts (see :func:`check_texts` for what is refused)."""
        items = check_texts(texts, field)
        encodings = self.tokenizer.encode_batch(items)
        full = [e.ids for e in encodings]
        cut = np.array([len(ids) > self.max_length for ids in full], dtype=bool)
        kept = [self._truncate(ids, e.special_tokens_mask) if c else list(ids)
                for ids, e, c in zip(full, encodings, cut)]
        lengths = np.array([len(k) for k in kept], dtype=np.int64)
        width = self.max_length if self.padding == "max_length" else int(lengths.max())
        ids = np.full((len(kept), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(kept), width), dtype=np.int64)
        for i, k in enumerate(kept):
            ids[i, :len(k)] = k
            mask[i, :len(k)] = 1
        return TextBatch({self.names[0]: ids, self.names[1]: mask}, cut, lengths)

    def _truncate(self, ids: Sequence[int], special: Sequence[int]) -> list[int]:
        """Keep the leading special tokens, as many content tokens as fit, and the trailing special tokens."""
        n = len(ids)
        lead = 0
        while lead < n and special[lead]:
            lead += 1
        trail = 0
        while trail < n - lead and special[n - 1 - trail]:
            trail += 1
        room = self.max_length - lead - trail
        if room < 0:
            return list(ids[:self.max_length])
        return list(ids[:lead + room]) + list(ids[n - trail:])
