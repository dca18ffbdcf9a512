"""The ``sample`` mode: a diffusion bundle sampled with DeeDiff's layer exits — its inspect lines, its daemon
requests (KServe v2 JSON: ``n``, ``seed``, optional ``class``, ``steps``, ``threshold``, ``sampling``) and its
``edge-runtime sample`` command."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from edge_runtime.errors import InputError
from edge_runtime.executor import OnExit, Tensors
from edge_runtime.manifest import Manifest
from edge_runtime.methods.deediff.sampler import (
    CLASS_INPUT,
    IMAGE_INPUT,
    MODE,
    SAMPLE_MODES,
    SampleResult,
    sampler_of,
    settings_of,
    unsupported,
)
from edge_runtime.modes import InferenceResult, Mode, register_mode
from edge_runtime.policies import ExitPolicy

#: the most samples one daemon request may ask for
MAX_REQUEST_SAMPLES = 256


@register_mode
class SampleMode(Mode):
    """DDIM sampling of a diffusion bundle, each sample leaving the network per step at its first confident block.

    ``Runtime.sample(n, steps=, seed=, threshold=, mode=)`` is the entry point; ``Runtime.infer(feeds, mode="sample")``
    denoises given starting noise (``x_t`` = x_T, ``y`` = classes; ``t`` is ignored) with the bundle's default
    steps and the given policy, answering the images as ``outputs``.
    """

    name = MODE
    description = "diffusion sampling (DDIM) with per-step, per-sample layer exits (DeeDiff)"
    uses_policy = True
    handles_requests = True

    def unsupported(self, manifest: Manifest) -> str | None:
        return unsupported(manifest)

    def sample(self, runtime: Any, n: int, **kwargs: Any) -> SampleResult:
        """``n`` samples (see :meth:`edge_runtime.methods.deediff.sampler.DiffusionSampler.sample`)."""
        return sampler_of(runtime).sample(n, **kwargs)

    def run(self, runtime: Any, feeds: Tensors, policy: ExitPolicy | None, *,
            on_exit: OnExit | None = None) -> InferenceResult:
        sampler = sampler_of(runtime)
        # the policy object itself: a policy reading outputs the blocks lack gets the executor's ConfigError
        res = sampler.run(feeds[IMAGE_INPUT], feeds.get(CLASS_INPUT), threshold=policy)
        n = len(res)
        deepest = res.layers.max(axis=0) - 1
        if on_exit is not None:
            on_exit(np.arange(n), runtime.num_exits - 1, res.images, res.latency_s)
        classes = res.classes if res.classes is not None else np.zeros(n, dtype=np.int64)
        return InferenceResult(
            predictions=classes, exit_index=deepest, outputs=res.images,
            segment_latency_s=np.zeros(runtime.num_exits), segment_batch_size=np.zeros(runtime.num_exits, np.int64),
            sample_latency_s=np.full(n, res.latency_s), latency_s=res.latency_s, mode=self.name, labels=runtime.labels,
            info={"mean_layers": res.mean_layers, "layers": res.layers.tolist(), "steps": len(res.timesteps)})

    def describe(self, manifest: Manifest) -> list[str]:
        info = settings_of(manifest)
        sched, sampler = info.get("schedule", {}), info.get("sampler", {})
        lines = [f"deediff (mode 'sample'): DDIM {sampler.get('steps')} steps over a {sched.get('kind')} schedule "
                 f"of T={sched.get('train_steps')}; exit when u < threshold "
                 f"({', '.join(f'{t:g}' for t in sorted(set(manifest.policy.thresholds))) or 'none'})"]
        chosen = (info.get("sweep") or {}).get("chosen")
        if chosen:
            lines.append(f"  chosen on {info['sweep'].get('split')}: {100 * chosen['layer_fraction']:.1f}% of the "
                         f"layers, FID {chosen['fid']:.2f} vs full {info['sweep']['full']['fid']:.2f}")
        clf = info.get("classifier") or {}
        if clf:
            lines.append(f"  quality classifier: {clf.get('test_accuracy', 0) * 100:.2f}% test accuracy, "
                         f"{clf.get('features')} features (FID space)")
        return lines

    def serve_request(self, runtime: Any, doc: dict[str, Any]) -> dict[str, Any]:
        sampler = sampler_of(runtime)
        args = _request_args(doc, train_steps=sampler.spec.schedule.train_steps)
        res = sampler.sample(**args)
        n, steps = len(res), len(res.timesteps)
        outputs = [{"name": "images", "shape": list(res.images.shape), "datatype": "FP32",
                    "data": res.images.reshape(-1).tolist()},
                   {"name": "layers", "shape": [steps, n], "datatype": "INT64",
                    "data": res.layers.reshape(-1).tolist()}]
        if res.classes is not None:
            outputs.append({"name": "class", "shape": [n], "datatype": "INT64", "data": res.classes.tolist()})
        params = {k: v for k, v in res.to_dict(images=False).items() if k not in ("layers", "step_latency_s")}
        return {"outputs": outputs, "parameters": params}

    def register_commands(self, sub: Any) -> None:
        p = sub.add_parser("sample", help="sample a diffusion bundle and write an image grid",
                           description="DDIM sampling of a diffusion bundle (converted with a 'deediff' section): "
                                       "each sample leaves the network at the first block whose uncertainty u is "
                                       "below the threshold, at every step.")
        p.add_argument("bundle", help="bundle directory")
        p.add_argument("--n", type=int, default=16, help="samples to draw (one batch; default 16)")
        p.add_argument("--out", help="PNG file for the grid of samples")
        p.add_argument("--steps", type=int, help="DDIM steps (default: the bundle's)")
        p.add_argument("--seed", type=int, default=0, help="seed of the starting noise (default 0)")
        p.add_argument("--threshold", type=float, help="uncertainty threshold (default: the bundle's chosen one)")
        p.add_argument("--sampling", choices=SAMPLE_MODES, default="early_exit",
                       help="early_exit (default) or full (the one-graph model at every step)")
        p.add_argument("--class", dest="cls", type=int, help="condition every sample on this class (default: in turn)")
        p.add_argument("--columns", type=int, help="grid columns (default: square)")
        p.add_argument("--backend", help="inference backend (default: the profile's, else onnxruntime)")
        p.add_argument("--threads", type=int, help="backend threads")
        p.add_argument("--meter", help="energy meter spec (auto, estimate, powercap, ...)")
        p.add_argument("--json", help="also write the result (images, layers per step, latency) as JSON here")
        p.set_defaults(func=_sample_command)


def _request_args(doc: dict[str, Any], train_steps: int | None = None) -> dict[str, Any]:
    """The sampler's arguments from a KServe v2 body: ``inputs`` named n, seed, class, steps, threshold (scalars),
    and ``parameters.sampling``.

    Raises:
        InputError: a bad value; ``field`` names its input (``steps`` outside 1..``train_steps``, ``seed`` < 0).
    """
    inputs = doc.get("inputs") or []
    if not isinstance(inputs, list):
        raise InputError("inputs: expected a list of named inputs")
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    for k, item in enumerate(inputs):
        if not isinstance(item, dict) or "name" not in item or "data" not in item:
            raise InputError(f"inputs[{k}]: expected an object with 'name' and 'data'")
        data = np.asarray(item["data"]).reshape(-1)
        if data.size != 1 or not np.issubdtype(data.dtype, np.number):
            raise InputError(f"inputs[{k}] ({item['name']!r}): expected one number")
        values[str(item["name"])] = data[0].item()
        where[str(item["name"])] = f"inputs[{k}].data"
    unknown = sorted(set(values) - {"n", "seed", "class", "steps", "threshold"})
    if unknown:
        raise InputError(f"inputs: unknown name(s) {', '.join(unknown)}; expected n, seed, class, steps, threshold")
    n = _int(values.get("n", 1), "n")
    if not 1 <= n <= MAX_REQUEST_SAMPLES:
        raise InputError(f"n: expected 1..{MAX_REQUEST_SAMPLES}, got {n}")
    args: dict[str, Any] = {"n": n, "seed": _int(values.get("seed", 0), "seed")}
    if args["seed"] < 0:
        raise InputError(f"seed: expected a non-negative integer, got {args['seed']}", field=where["seed"])
    if "class" in values:
        args["cls"] = _int(values["class"], "class")
    if "steps" in values:
        args["steps"] = _int(values["steps"], "steps")
        if args["steps"] < 1 or (train_steps is not None and args["steps"] > train_steps):
            top = train_steps if train_steps is not None else "T"
            raise InputError(f"steps: expected 1..{top} (the schedule's train steps), got {args['steps']}",
                             field=where["steps"])
    if "threshold" in values:
        args["threshold"] = float(values["threshold"])
    sampling = (doc.get("parameters") or {}).get("sampling", "early_exit")
    if sampling not in SAMPLE_MODES:
        raise InputError(f"parameters.sampling: expected one of {', '.join(SAMPLE_MODES)}, got {sampling!r}")
    args["mode"] = sampling
    return args


def _int(v: Any, name: str) -> int:
    if isinstance(v, float) and not v.is_integer():
        raise InputError(f"{name}: expected an integer, got {v}")
    return int(v)


def _sample_command(args: argparse.Namespace) -> int:
    from edge_runtime import load_bundle
    from edge_runtime.methods.deediff.grid import write_grid

    rt = load_bundle(args.bundle, backend=args.backend, threads=args.threads, meter=args.meter)
    try:
        bar = _bar(args.steps if args.steps is not None else sampler_of(rt).spec.steps)
        res = rt.sample(args.n, steps=args.steps, seed=args.seed, threshold=args.threshold, mode=args.sampling,
                        cls=args.cls, on_step=(lambda k, total: bar.update(1)) if bar is not None else None)
        if bar is not None:
            bar.close()
    finally:
        rt.close()
    if args.out:
        write_grid(args.out, res.images, columns=args.columns)
    if args.json:
        from edge_runtime.files import write_json_atomic

        write_json_atomic(args.json, res.to_dict())
    energy = f", {res.energy_j:.3f} J ({res.energy_source})" if res.energy_j is not None else ""
    print(f"{len(res)} samples, {len(res.timesteps)} DDIM steps, {res.mode}: {res.mean_layers:.2f} of "
          f"{res.num_layers} blocks per step on average ({100 * res.layer_fraction:.1f}%), "
          f"{res.latency_s:.3f} s{energy}" + (f"; grid: {args.out}" if args.out else ""))
    return 0


def _bar(total: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="step", leave=False, dynamic_ncols=True)
