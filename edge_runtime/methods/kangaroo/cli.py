"""``edge-runtime generate BUNDLE --prompt TEXT``: greedy generation from a Kangaroo LM bundle, streamed to the
terminal, in ``kangaroo`` (default) or ``autoregressive`` mode; ``--compare`` runs both and checks they agree."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from edge_runtime.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text from a language-model bundle (Kangaroo or autoregressive)",
                       description="Greedy text generation from a Kangaroo LM bundle, streamed token by token. "
                                   "Kangaroo drafts with the shallow layers + adapter and verifies with the rest "
                                   "in one pass; the output equals autoregressive decoding's.")
    p.add_argument("bundle", help="bundle directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", help="the prompt text")
    src.add_argument("--prompt-file", help="a UTF-8 file holding the prompt ('-': standard input)")
    p.add_argument("--mode", default="kangaroo", choices=("kangaroo", "autoregressive"),
                   help="decoding mode (default: kangaroo)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="stop after this many tokens (default 64)")
    p.add_argument("--eta", type=float, help="drafting stops once a draft's top-1 probability is below this "
                                             "(default: the bundle's, 0.6 in the paper)")
    p.add_argument("--gamma", type=int, help="at most this many drafts per round (default: the bundle's)")
    p.add_argument("--compare", action="store_true",
                   help="also run the other mode, print both speeds and check the tokens are identical")
    p.add_argument("--threads", type=int, help="backend threads")
    p.add_argument("--backend", help="inference backend (default: onnxruntime)")
    p.add_argument("--meter", help="energy meter spec (auto, estimate, powercap, ...)")
    p.add_argument("--json", action="store_true", help="print the result(s) as JSON instead of streaming")
    p.set_defaults(func=run)


def _prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None:
        return str(args.prompt)
    if args.prompt_file:
        if args.prompt_file == "-":
            return sys.stdin.read()
        try:
            with open(args.prompt_file, encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            raise InputError(f"{args.prompt_file}: cannot read the prompt ({exc.strerror or exc})") from None
    raise InputError("give --prompt TEXT or --prompt-file FILE")


class _Stream:
    """Prints the text of the tokens generated so far as it grows (whole characters only)."""

    def __init__(self, decode: Any, out: TextIO) -> None:
        self.decode, self.out = decode, out
        self.tokens: list[int] = []
        self.printed = 0

    def __call__(self, tokens: list[int], seconds: float) -> None:
        self.tokens += tokens
        text = self.decode(self.tokens)
        if text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
            return
        self.out.write(text[self.printed:])
        self.out.flush()
        self.printed = len(text)


def _summary(res: Any) -> str:
    line = (f"[{res.mode}] {len(res.tokens)} tokens in {res.latency_s * 1e3:.1f} ms ({res.tokens_per_s:.1f} tokens/s, "
            f"first token {res.prefill_s * 1e3:.1f} ms, stop: {res.stop})")
    if res.mode == "kangaroo":
        line += (f"; eta {res.eta} gamma {res.gamma}: mean accepted length {res.mean_accepted_length or 0:.2f}, "
                 f"compression rate {res.compression_rate:.2f}")
    if res.energy_j is not None:
        line += f"; {res.energy_j:.3f} J ({res.energy_source})"
    return line


def run(args: argparse.Namespace) -> int:
    from edge_runtime import load_bundle
    from edge_runtime.methods.kangaroo.session import lm_session

    prompt = _prompt(args)
    rt = load_bundle(args.bundle, backend=args.backend, threads=args.threads, meter=args.meter)
    try:
        modes = [args.mode] + ([m for m in ("kangaroo", "autoregressive") if m != args.mode] if args.compare else [])
        options = {"max_new_tokens": args.max_new_tokens, "eta": args.eta, "gamma": args.gamma}
        results = []
        if args.compare:  # warm both modes' graphs up, so neither ratio side pays the first call's set-up
            for mode in modes:
                rt.generate(prompt, mode=mode, max_new_tokens=min(4, args.max_new_tokens))
        for k, mode in enumerate(modes):
            stream = None
            if not args.json and k == 0:
                stream = _Stream(lm_session(rt).decode, sys.stdout)
                sys.stdout.write(prompt)
            opts = options if mode == "kangaroo" else {"max_new_tokens": args.max_new_tokens}
            results.append(rt.generate(prompt, mode=mode, on_token=stream, **opts))
            if stream is not None:
                sys.stdout.write("\n")
        if args.json:
            print(json.dumps([r.to_dict() for r in results] if args.compare else results[0].to_dict(), indent=2))
        else:
            for r in results:
                print(_summary(r), file=sys.stderr)
        if args.compare:
            same = results[0].tokens == results[1].tokens
            ratio = results[modes.index("kangaroo")].tokens_per_s / max(
                results[modes.index("autoregressive")].tokens_per_s, 1e-12)
            print(f"identical tokens: {'yes' if same else 'NO'}; kangaroo / autoregressive tokens/s = {ratio:.2f}x",
                  file=sys.stderr)
            return 0 if same else 1
    finally:
        rt.close()
    return 0
