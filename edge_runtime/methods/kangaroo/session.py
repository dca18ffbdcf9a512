"""A Kangaroo LM bundle's decoding session (graphs, tokenizer, defaults) and :func:`generate`, the one entry point
the modes, the command line and the daemon share.

The tokenizer (``tokenizers``, an optional dependency: ``pip install edge-runtime[generate]``) ships in the bundle
and is hash-checked on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_runtime.bundle import resolve_inside
from edge_runtime.errors import BundleError, ConfigError, InputError
from edge_runtime.files import sha256_file
from edge_runtime.manifest import Manifest
from edge_runtime.methods.kangaroo.decoding import STACKS, GenerationResult, LMGraphs, OnToken
from edge_runtime.policies import create_policy

METHOD = "kangaroo"
#: how many tokens a generation makes when the caller does not say
DEFAULT_MAX_NEW_TOKENS = 64


@dataclass
class LMSession:
    """A runtime's decoding state: the graphs, the tokenizer and the bundle's decoding defaults."""

    graphs: LMGraphs
    tokenizer: Any
    eta: float
    gamma: int

    def encode(self, prompt: str) -> list[int]:
        ids = list(self.tokenizer.encode(prompt).ids)
        if not ids:
            raise InputError("the prompt is empty (it encodes to no tokens)")
        return ids

    def decode(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))


def record(manifest: Manifest) -> dict[str, Any] | None:
    """The method's record (``extra.kangaroo``), or None when the bundle is not a Kangaroo LM."""
    rec = (manifest.extra or {}).get(METHOD)
    return rec if isinstance(rec, dict) else None


def _load_tokenizer(runtime: Any, rec: dict[str, Any]) -> Any:
    field = f"extra.{METHOD}.tokenizer"
    spec = rec.get("tokenizer") or {}
    root, manifest_path = runtime.bundle.root, runtime.bundle.manifest_path
    if not isinstance(spec.get("path"), str) or not isinstance(spec.get("sha256"), str):
        raise BundleError("expected {path, sha256} of the tokenizer file", path=manifest_path, field=field)
    path = resolve_inside(root, spec["path"], field=f"{field}.path", manifest_path=manifest_path)
    if not path.is_file():
        raise BundleError("the tokenizer file is missing", path=path, field=field)
    if sha256_file(path) != spec["sha256"]:
        raise BundleError("sha256 mismatch with the manifest", path=path, field=f"{field}.sha256")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError("generating text needs the 'tokenizers' package: pip install 'edge-runtime[generate]'") \
            from None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own exception type
        raise BundleError(f"not a readable tokenizer ({exc})", path=path, field=field) from None


def lm_session(runtime: Any) -> LMSession:
    """The runtime's :class:`LMSession`, created (tokenizer checked and loaded) on first use."""

    def build() -> LMSession:
        m: Manifest = runtime.manifest
        rec = record(m)
        if rec is None:
            raise ConfigError(f"{runtime.bundle.root}: bundle {m.name!r} is not a Kangaroo language model")
        shapes = {}
        for j, spec in enumerate(m.inputs):
            if spec.name.startswith("past_"):
                dims = spec.shape
                if len(dims) != 5 or not all(isinstance(d, int) for d in (dims[1], dims[2], dims[4])):
                    raise BundleError(f"a cache must be (batch, 2 * layers, heads, positions, head_dim), got {dims}",
                                      path=runtime.bundle.manifest_path, field=f"inputs.{j}.shape")
                shapes[spec.name.removeprefix("past_")] = (int(dims[1] or 0), int(dims[2] or 0), int(dims[4] or 0))
        eos = rec.get("eos_token_id")
        graphs = LMGraphs(runtime.segments[0], runtime.segments[1], runtime.full_model_runner, shapes,
                          None if eos is None else int(eos))
        thresholds = m.policy.thresholds
        eta = float(thresholds[0]) if thresholds else float(rec.get("eta", 0.6))
        return LMSession(graphs, _load_tokenizer(runtime, rec), eta, int(rec.get("gamma", 6)))

    return runtime.mode_state(METHOD, build)


def unsupported_reason(manifest: Manifest) -> str | None:
    if record(manifest) is None:
        return "it is not a Kangaroo language model (no extra.kangaroo record)"
    names = {s.name for s in manifest.inputs}
    missing = sorted({"input_ids", *(f"past_{s}" for s in STACKS)} - names)
    if missing or len(manifest.segments) != 2:
        return f"its inputs lack {missing} or it has {len(manifest.segments)} segments (expected draft, verify)"
    return None


def generate(runtime: Any, prompt: str | list[int], *, mode: str = METHOD,
             max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, eta: float | None = None, gamma: int | None = None,
             on_token: OnToken | None = None) -> GenerationResult:
    """Greedy generation from ``prompt`` (text, or token ids) in one of the two modes.

    Args:
        mode: ``kangaroo`` (self-speculative) or ``autoregressive`` (one full-model pass per token).
        max_new_tokens: stop after this many generated tokens (or at the end-of-text token).
        eta: drafting stops once the newest draft's top-1 probability is below this (default: the bundle's).
        gamma: at most this many drafts per round (default: the bundle's).
        on_token: ``on_token(token_ids, seconds)`` as tokens become final (streaming).

    Raises:
        InputError: an empty prompt, max_new_tokens < 1, eta outside [0, 1], gamma < 0.
    """
    if int(max_new_tokens) < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    s = lm_session(runtime)
    eta = s.eta if eta is None else float(eta)
    gamma = s.gamma if gamma is None else int(gamma)
    if not 0.0 <= eta <= 1.0:
        raise InputError(f"eta must be in [0, 1], got {eta}")
    if gamma < 0:
        raise InputError(f"gamma must be >= 0, got {gamma}")
    ids = s.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
    if not ids:
        raise InputError("the prompt has no tokens")
    meter = getattr(runtime, "meter", None)
    window = meter.start_window() if meter is not None else None
    if mode == METHOD:
        policy = create_policy("confidence", 2, [eta])      # keep drafting while max p >= eta: the exit-0 rule
        state = policy.start(1)
        tokens, facts = s.graphs.kangaroo(ids, int(max_new_tokens), gamma=gamma, on_token=on_token,
                                          keep_drafting=lambda q: bool(policy.decide(0, q, state)[0]))
    elif mode == "autoregressive":
        tokens, facts = s.graphs.autoregressive(ids, int(max_new_tokens), on_token=on_token)
    else:
        raise ConfigError(f"mode {mode!r} does not generate text; use kangaroo or autoregressive")
    result = GenerationResult(text=s.decode(tokens), tokens=tokens, prompt_tokens=len(ids), mode=mode,
                              stop="eos" if tokens and tokens[-1] == s.graphs.eos else "length",
                              eta=eta if mode == METHOD else None, gamma=gamma if mode == METHOD else None, **facts)
    if meter is not None:
        result.energy_j, _ = meter.window_energy(window)
        result.energy_source = meter.source
    return result
