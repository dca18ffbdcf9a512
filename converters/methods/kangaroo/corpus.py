"""The offline text corpus (the running Python's standard-library sources), its byte-level BPE tokenizer
(``tokenizers``), token windows for training and held-out prompts for benchmarks.

The corpus is deterministic for one Python version: ``.py`` files under ``sysconfig``'s ``stdlib`` path in sorted
order, test suites and vendored packages left out, split by file into train and held-out parts (every
``holdout_every``-th file is held out). Documents are joined with the end-of-text token.
"""

from __future__ import annotations

import hashlib
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError

#: the end-of-text token: separates documents, ends generation
EOS = "<|endoftext|>"
#: directories of the standard library left out (test suites, vendored code, tools, data)
EXCLUDED_PARTS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "lib2to3", "ensurepip",
                            "turtledemo", "__pycache__", "config-3", "pydoc_data", "encodings"})


@dataclass(frozen=True)
class Corpus:
    """Documents of the training and held-out parts, and where they came from."""

    train: tuple[str, ...]
    heldout: tuple[str, ...]
    source: dict[str, Any]


def stdlib_files(root: str | Path | None = None) -> list[Path]:
    """The standard library's ``.py`` files (sorted, relative order stable), without :data:`EXCLUDED_PARTS`."""
    base = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    if not base.is_dir():
        raise ConfigError(f"{base}: the standard-library directory does not exist (recipe key kangaroo.corpus.root)")
    out = []
    for p in sorted(base.rglob("*.py")):
        rel = p.relative_to(base).parts
        if any(part in EXCLUDED_PARTS or part.startswith("config-") for part in rel[:-1]):
            continue
        out.append(p)
    return out


def load_corpus(*, root: str | Path | None = None, max_bytes: int = 4_000_000, holdout_every: int = 20,
                max_file_bytes: int = 200_000) -> Corpus:
    """Read the standard-library corpus: files in sorted order until ``max_bytes`` (train + held out).

    Args:
        root: the directory to read (default: this Python's ``stdlib`` path).
        max_bytes: stop after this many bytes of text.
        holdout_every: every n-th file goes to the held-out part.
        max_file_bytes: skip larger files (generated tables).

    Raises:
        ConfigError: the directory is missing or holds no usable file.
    """
    base = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    train: list[str] = []
    heldout: list[str] = []
    names: list[str] = []
    total = 0
    digest = hashlib.sha256()
    for path in stdlib_files(base):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if not data.strip() or len(data) > max_file_bytes:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        (heldout if len(names) % holdout_every == holdout_every - 1 else train).append(text)
        names.append(path.relative_to(base).as_posix())
        digest.update(data)
        total += len(data)
        if total >= max_bytes:
            break
    if not train or not heldout:
        raise ConfigError(f"{base}: too few Python files for a corpus (recipe key kangaroo.corpus)")
    source = {"name": "python_stdlib", "root": str(base), "files": len(names), "bytes": total,
              "train_files": len(train), "heldout_files": len(heldout), "sha256": digest.hexdigest(),
              "python": sysconfig.get_python_version()}
    return Corpus(tuple(train), tuple(heldout), source)


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> Any:
    """A byte-level BPE tokenizer (``tokenizers``) trained on ``texts``, with :data:`EOS` as its one special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return tok


def encode_documents(tok: Any, docs: Sequence[str]) -> np.ndarray:
    """Token ids of the documents, each followed by :data:`EOS`, as one int64 stream."""
    eos = tok.token_to_id(EOS)
    ids: list[int] = []
    for enc in tok.encode_batch(list(docs)):
        ids.extend(enc.ids)
        ids.append(eos)
    return np.asarray(ids, dtype=np.int64)


def windows(stream: np.ndarray, length: int, *, stride: int | None = None) -> np.ndarray:
    """Windows of ``length + 1`` tokens (inputs and their next tokens) every ``stride`` tokens, (N, length + 1)."""
    stride = stride or length
    n = (len(stream) - length - 1) // stride + 1
    if n < 1:
        raise ConfigError(f"the corpus has {len(stream)} tokens, fewer than one window of {length + 1}")
    idx = np.arange(n)[:, None] * stride + np.arange(length + 1)[None, :]
    return stream[idx]


def heldout_prompts(docs: Sequence[str], count: int, *, lines: int = 3, min_chars: int = 40) -> list[str]:
    """Prompts from held-out documents: the first ``lines`` lines of a function or class definition, spread over
    the documents (deterministic)."""
    prompts: list[str] = []
    per_doc = max(1, -(-count // max(1, len(docs))))
    for doc in docs:
        starts = [i for i, line in enumerate(doc.splitlines()) if line.lstrip().startswith(("def ", "class "))]
        body = doc.splitlines()
        step = max(1, len(starts) // per_doc)
        for s in starts[::step][:per_doc]:
            text = "\n".join(body[s:s + lines]) + "\n"
            if len(text) >= min_chars:
                prompts.append(text)
        if len(prompts) >= count:
            break
    return prompts[:count]
