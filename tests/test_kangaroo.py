"""Kangaroo end to end on a tiny random LM: the model's caches, the adapter loss, the recipe section, the exported
graphs (verified prefill and decode steps, structure), the bundle on the device (both modes, identical greedy
tokens equal to PyTorch's, the next-token classifier view, tokenizer checks, inspect, the daemon, the CLI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _helpers import HEAVY_MODULES

import edge_runtime
from converters.methods.kangaroo.corpus import EOS, encode_documents, load_corpus, train_tokenizer, windows
from converters.methods.kangaroo.export import export_lm_bundle
from converters.methods.kangaroo.losses import AdapterLoss, LanguageModelLoss, evaluate_lm, soft_cross_entropy
from converters.methods.kangaroo.model import STACKS, KangarooLM, LMConfig, empty_cache, graph_modules
from converters.recipe import parse_recipe
from converters.training.trainer import StageConfig, Trainer
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.manifest import write_manifest

TINY = dict(dim=32, layers=3, heads=2, ffn_dim=64, exit_layer=1, context=32)


@pytest.fixture(scope="module")
def corpus():
    c = load_corpus(max_bytes=150_000, holdout_every=5)
    tok = train_tokenizer(c.train, 400)
    return c, tok


@pytest.fixture(scope="module")
def lm(corpus):
    _, tok = corpus
    torch.manual_seed(0)
    return KangarooLM(LMConfig(vocab_size=tok.get_vocab_size(), **TINY)).eval()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, lm, corpus):
    _, tok = corpus
    root = tmp_path_factory.mktemp("kangaroo") / "lm"
    root.mkdir()
    write_manifest(root, export_lm_bundle(lm, tok, root, name="tiny_lm", eta=0.6, gamma=4,
                                          info={"prompts": ["def f(x):\n", "class A:\n    def"]}))
    return root


# -- the model -------------------------------------------------------------------------------------------


@torch.no_grad()
def test_cached_decoding_equals_the_uncached_forward(lm):
    cfg = lm.cfg
    ids = torch.randint(0, cfg.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
    ref = lm(ids)
    g = graph_modules(lm)
    full_logits, ps, pd = g["full"](ids[:, :6], empty_cache(cfg, "shallow", 2), empty_cache(cfg, "deep", 2))
    torch.testing.assert_close(full_logits, ref[:, 5], atol=1e-5, rtol=1e-5)
    for t in range(6, 11):                               # one token at a time on the caches
        full_logits, ps, pd = g["full"](ids[:, t:t + 1], ps, pd)
        torch.testing.assert_close(full_logits, ref[:, t], atol=1e-5, rtol=1e-5)
    assert ps.shape == (2, 2 * cfg.exit_layer, cfg.heads, 11, cfg.head_dim)
    # draft + verify on several tokens at once equals the full model at every position
    hidden, draft_logits, s, a = g["draft"](ids[:, :7], empty_cache(cfg, "shallow", 2), empty_cache(cfg, "adapter", 2))
    logits, d = g["verify"](hidden, empty_cache(cfg, "deep", 2))
    torch.testing.assert_close(logits, ref[:, :7], atol=1e-5, rtol=1e-5)
    hidden2, _, _, _ = g["draft"](ids[:, 7:11], s, a)
    logits2, _ = g["verify"](hidden2, d)
    torch.testing.assert_close(logits2, ref[:, 7:11], atol=1e-5, rtol=1e-5)
    _, shallow_h = lm.forward_with_exit(ids[:, :7])
    torch.testing.assert_close(draft_logits, lm.adapter_logits(shallow_h)[:, -1], atol=1e-5, rtol=1e-5)


def test_config_refuses_bad_shapes():
    with pytest.raises(ConfigError, match="exit_layer"):
        LMConfig(layers=4, exit_layer=4)
    with pytest.raises(ConfigError, match="heads"):
        LMConfig(dim=30, heads=4)


# -- the adapter loss ------------------------------------------------------------------------------------


def test_soft_cross_entropy_on_a_small_case():
    teacher = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    student = torch.log(torch.tensor([[0.25, 0.5, 0.25]]))
    expected = -(0.5 * np.log(0.25) + 0.25 * np.log(0.5) + 0.25 * np.log(0.25))
    assert float(soft_cross_entropy(student, teacher)) == pytest.approx(expected, rel=1e-6)
    # its minimum over the student is the teacher's entropy, reached at the teacher
    entropy = -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))
    assert float(soft_cross_entropy(teacher, teacher)) == pytest.approx(entropy, rel=1e-6)


def test_adapter_training_moves_only_the_adapter_and_lowers_its_kl_to_the_lm(corpus):
    c, tok = corpus
    torch.manual_seed(0)
    lm = KangarooLM(LMConfig(vocab_size=tok.get_vocab_size(), **TINY))
    with torch.no_grad():  # a sharper teacher (a random LM's next-token distribution is nearly uniform)
        lm.norm.weight.mul_(8.0)
        lm.adapter.norm.weight.mul_(8.0)
    w = windows(encode_documents(tok, c.train), 32)[:16]
    x, y = torch.from_numpy(w[:, :-1]), torch.from_numpy(w[:, 1:])
    frozen = {k: v.clone() for k, v in lm.state_dict().items() if not k.startswith("adapter.")}
    before = evaluate_lm(lm, x, y)
    stage = StageConfig(name="adapter", loss={"name": "kangaroo_adapter", "kwargs": {}},
                        optimizer={"name": "adam", "kwargs": {}}, lr=1e-2, epochs=5, batch_size=8,
                        schedule={"name": "constant", "kwargs": {}})
    Trainer(lm, [stage], w[:, :-1], w[:, 1:], seed=0, progress=False).fit()
    after = evaluate_lm(lm, x, y)
    for k, v in lm.state_dict().items():
        if not k.startswith("adapter."):
            assert torch.equal(v, frozen[k]), k
    kl_before = before["adapter_loss"] - before["lm_entropy"]
    kl_after = after["adapter_loss"] - after["lm_entropy"]
    assert after["lm_entropy"] == pytest.approx(before["lm_entropy"]) and kl_before > 0
    assert 0 <= kl_after < 0.75 * kl_before
    assert after["adapter_expected_acceptance"] > before["adapter_expected_acceptance"]


def test_losses_choose_their_parameters(lm):
    adapter = {id(p) for p in lm.adapter.parameters()}
    assert {id(p) for p in AdapterLoss(lm).trainable_parameters(lm)} == adapter
    lm_params = {id(p) for p in LanguageModelLoss(lm).trainable_parameters(lm)}
    assert lm_params and not lm_params & adapter
    with pytest.raises(ConfigError, match="not a Kangaroo LM"):
        AdapterLoss(torch.nn.Linear(2, 2))


# -- the recipe section ----------------------------------------------------------------------------------

_STAGES = [{"name": "lm", "loss": {"name": "kangaroo_lm"}, "epochs": 1}]


def test_section_defaults_and_errors_name_the_key():
    r = parse_recipe({"name": "lm", "kangaroo": {"train": {"stages": _STAGES}}})
    spec = r["kangaroo"]
    assert spec["eta"] == 0.6 and spec["gamma"] == 6 and spec["lm"]["exit_layer"] == 1
    for bad, key in (({"eta": 1.5}, "kangaroo.eta"), ({"lm": {"exit_layer": 9}}, "kangaroo.lm"),
                     ({"corpus": {"name": "wiki"}}, "kangaroo.corpus.name"), ({"gamma": -1}, "kangaroo.gamma"),
                     ({"tokenizer": {"vocab": 3}}, "kangaroo.tokenizer"),
                     ({"train": {"stages": [{"name": "x", "loss": {"name": "nope"}}]}}, "kangaroo.train.stages")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_recipe({"name": "lm", "kangaroo": {"train": {"stages": _STAGES}, **bad}})


# -- the exported graphs ---------------------------------------------------------------------------------


def test_export_is_verified_on_prefill_and_decode_steps(bundle):
    m = edge_runtime.load_bundle(bundle).manifest
    v = m.verification
    assert v.passed and v.other["compared"] == "logits and key-value caches"
    for graph in ("draft", "verify", "full"):
        assert set(v.other["cases"][graph]) == {"prefill_b1", "prefill_b2", "decode_1", "decode_4"}
        assert max(v.other["cases"][graph].values()) <= v.tolerance
    assert [e.output_kind for e in m.exits] == ["next_token_logits"] * 2
    assert m.policy.name == "confidence" and m.policy.thresholds == (0.6,)


def test_graph_structure_names_and_dynamic_axes(bundle):
    m = edge_runtime.load_bundle(bundle).manifest
    expected = {"segments/segment_0.onnx": (["input_ids", "past_shallow", "past_adapter"],
                                            ["hidden", "exit", "present_shallow", "present_adapter"]),
                "segments/segment_1.onnx": (["hidden", "past_deep"], ["exit", "present_deep"]),
                "full_model.onnx": (["input_ids", "past_shallow", "past_deep"],
                                    ["exit", "present_shallow", "present_deep"])}
    for path, (ins, outs) in expected.items():
        g = onnx.load(str(bundle / path)).graph
        assert [i.name for i in g.input] == ins and [o.name for o in g.output] == outs
        for t in g.input:
            dims = t.type.tensor_type.shape.dim
            assert dims[0].dim_param                                  # dynamic batch
            if t.name.startswith("past_"):
                assert dims[3].dim_param                              # dynamic positions
            if t.name in ("input_ids", "hidden"):
                assert dims[1].dim_param                              # dynamic tokens
    assert [s.output_names for s in m.segments] == [expected["segments/segment_0.onnx"][1],
                                                    expected["segments/segment_1.onnx"][1]]


# -- on the device ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rt(bundle):
    return edge_runtime.load_bundle(bundle, threads=1)


@torch.no_grad()
def _torch_greedy(lm, ids: list[int], n: int, eos: int) -> list[int]:
    seq, out = list(ids), []
    while len(out) < n:
        tok = int(lm(torch.tensor([seq]))[0, -1].argmax())
        out.append(tok)
        seq.append(tok)
        if tok == eos:
            break
    return out


def test_both_modes_generate_pytorchs_greedy_tokens(rt, lm, corpus):
    _, tok = corpus
    eos = tok.token_to_id(EOS)
    for prompt in ("def f(x):\n    return", "import os\n", "class A:\n"):
        ids = tok.encode(prompt).ids
        ref = _torch_greedy(lm, ids, 24, eos)
        ar = rt.generate(prompt, mode="autoregressive", max_new_tokens=24)
        assert ar.tokens == ref and ar.compression_rate == 1.0 and ar.prompt_tokens == len(ids)
        for eta, gamma in ((0.6, 4), (0.0, 6), (1.0, 1), (0.3, 0)):
            kg = rt.generate(prompt, mode="kangaroo", max_new_tokens=24, eta=eta, gamma=gamma)
            assert kg.tokens == ref, (prompt, eta, gamma)
            assert kg.text == tok.decode(ref, skip_special_tokens=True)
            assert len(kg.accepted) == kg.large_model_passes - 1 and kg.eta == eta and kg.gamma == gamma


def test_generate_streams_tokens_and_uses_the_bundles_defaults(rt):
    got: list[int] = []
    res = rt.generate("def f(x):\n", max_new_tokens=10, on_token=lambda toks, s: got.extend(toks))
    assert res.mode == "kangaroo" and got == res.tokens and res.eta == 0.6 and res.gamma == 4
    assert res.latency_s >= res.prefill_s > 0 and res.tokens_per_s > 0
    d = res.to_dict()
    assert {"compression_rate", "mean_accepted_length", "tokens_per_s", "accepted"} <= set(d)
    for bad in ({"max_new_tokens": 0}, {"eta": 2.0}, {"gamma": -1}):
        with pytest.raises(edge_runtime.InputError):
            rt.generate("x", **bad)


def test_modes_inspect_and_the_next_token_view(rt, bundle):
    assert rt.modes() == ["kangaroo", "autoregressive"]
    with pytest.raises(ConfigError, match="next_token_logits"):
        rt.mode("early_exit")
    from edge_runtime.cli.inspect import format_bundle

    text = format_bundle(rt.manifest)
    assert "modes: kangaroo, autoregressive" in text and "kangaroo LM: 3 layers x 32" in text
    cfg = rt.manifest.extra["kangaroo"]["lm"]
    feeds = {"input_ids": np.array([[5, 6, 7], [1, 2, 3]], dtype=np.int64)}
    for s in STACKS:
        n = {"shallow": cfg["exit_layer"], "adapter": 1, "deep": cfg["layers"] - cfg["exit_layer"]}[s]
        feeds[f"past_{s}"] = np.zeros((2, 2 * n, cfg["heads"], 0, cfg["dim"] // cfg["heads"]), np.float32)
    a = rt.infer(feeds, mode="autoregressive")
    k = rt.infer(feeds, mode="kangaroo")
    assert a.outputs.shape == (2, len(rt.labels))
    np.testing.assert_allclose(a.outputs, k.outputs, atol=1e-4)
    assert a.predictions.tolist() == k.predictions.tolist()


def test_a_tampered_tokenizer_is_refused(bundle, tmp_path):
    copy = tmp_path / "lm"
    shutil.copytree(bundle, copy)
    (copy / "tokenizer.json").write_text("{}")
    rt = edge_runtime.load_bundle(copy)
    with pytest.raises(BundleError, match="sha256"):
        rt.generate("x", max_new_tokens=2)


def test_serve_request_answers_kserve_v2_bytes(rt):
    mode = edge_runtime.MODES.get("kangaroo")
    out = mode.serve_request(rt, {"id": "r1", "inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [1],
                                                          "data": ["def f(x):\n"]}],
                                  "parameters": {"mode": "kangaroo", "max_new_tokens": 8, "gamma": 3}})
    text, tokens = out["outputs"]
    assert out["id"] == "r1" and text["datatype"] == "BYTES" and tokens["shape"] == [len(tokens["data"])]
    ref = rt.generate("def f(x):\n", mode="autoregressive", max_new_tokens=8)
    assert tokens["data"] == ref.tokens and text["data"] == [ref.text]
    assert out["parameters"]["gamma"] == 3
    for doc, field in (({"inputs": []}, "inputs"),
                       ({"inputs": [{"datatype": "FP32", "data": [1]}]}, "inputs[0].datatype"),
                       ({"inputs": [{"data": [""]}]}, "inputs[0].data"),
                       ({"inputs": [{"data": ["x"]}], "parameters": {"gamma": "3"}}, "parameters.gamma"),
                       ({"inputs": [{"data": ["x"]}], "parameters": {"max_new_tokens": 10**9}},   # would tie up
                        "parameters.max_new_tokens"),                                           # a worker thread
                       ({"inputs": [{"data": ["x"]}], "parameters": {"max_new_tokens": 0}},
                        "parameters.max_new_tokens")):
        with pytest.raises(edge_runtime.InputError) as exc:
            mode.serve_request(rt, doc)
        assert exc.value.field == field


def test_daemon_serves_generation(bundle):
    pytest.importorskip("fastapi")
    from _serve_helpers import Daemon

    d = Daemon([f"lm={bundle}"])
    try:
        body = {"inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [1], "data": ["def f(x):\n"]}],
                "parameters": {"max_new_tokens": 6}}
        r = d.client.post("/v2/models/lm/infer", json=body)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["model_name"] == "lm" and doc["parameters"]["mode"] == "kangaroo"
        assert len(doc["outputs"][1]["data"]) == 6
        r = d.client.post("/v2/models/lm/infer", json={**body, "parameters": {"mode": "autoregressive", "eta": 3}})
        assert r.status_code == 422 and "eta" in r.text
    finally:
        assert d.stop() == 0, d.output()


def test_cli_generate_streams_and_compares(bundle):
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "generate", str(bundle), "--prompt", "def f(x):\n",
                           "--max-new-tokens", "12", "--compare", "--threads", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("def f(x):\n")
    assert "identical tokens: yes" in proc.stderr and "[kangaroo]" in proc.stderr and "[autoregressive]" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "generate", str(bundle), "--prompt", "x",
                           "--max-new-tokens", "3", "--json", "--mode", "autoregressive"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mode"] == "autoregressive"


def test_speedup_benchmark_runs_and_reports_lossless_decoding(bundle, tmp_path):
    """benchmarks/kangaroo_speedup.py end to end on the tiny bundle (its figures are the docs' source)."""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(repo / "benchmarks" / "kangaroo_speedup.py"), str(bundle), "--prompts",
                           "2", "--max-new-tokens", "6", "--repeats", "1", "--sweep-eta", "0.5", "--sweep-gamma", "2",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["lossless"] is True and res["prompts"] == 2 and res["speedup"] > 0
    assert [(s["eta"], s["gamma"]) for s in res["sweep"]] == [(0.5, 2)]
    assert "| kangaroo |" in (tmp_path / "report.md").read_text()


def test_generation_never_imports_torch(bundle):
    code = textwrap.dedent(f"""
        import json, sys
        import edge_runtime
        rt = edge_runtime.load_bundle({str(bundle)!r}, threads=1)
        a = rt.generate("def f(x):", mode="kangaroo", max_new_tokens=5)
        b = rt.generate("def f(x):", mode="autoregressive", max_new_tokens=5)
        assert a.tokens == b.tokens
        print(json.dumps({{"mods": {HEAVY_MODULES}}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["mods"] == []


# -- convert -----------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def test_convert_builds_the_tiny_recipe_and_refuses_early_exit_sections(tmp_path):
    from converters import convert
    from converters.recipe import load_recipe

    out = convert(REPO / "converters" / "recipes" / "kangaroo_tiny.yaml", tmp_path / "lm", progress=False)
    rt = edge_runtime.load_bundle(out, threads=1)
    rec = rt.manifest.extra["kangaroo"]
    assert rt.modes() == ["kangaroo", "autoregressive"] and rt.manifest.recipe["name"] == "kangaroo_tiny"
    assert [h["name"] for h in rec["training"]["history"]] == ["lm", "adapter"]
    assert 0 <= rec["training"]["heldout"]["adapter_agreement"] <= 1 and rec["prompts"]
    assert rec["corpus"]["name"] == "python_stdlib" and rec["corpus"]["files"] > 0
    assert not (tmp_path / "lm.train").exists()                          # the checkpoint is gone once complete
    prompt = rec["prompts"][0]
    assert rt.generate(prompt, max_new_tokens=12).tokens == \
        rt.generate(prompt, mode="autoregressive", max_new_tokens=12).tokens
    data = load_recipe(REPO / "converters" / "recipes" / "kangaroo_tiny.yaml").resolved()
    with pytest.raises(ConfigError, match="recipe key 'model'.*kangaroo.lm"):
        convert(parse_recipe({**data, "model": {"name": "tiny_cnn"}}), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


@pytest.mark.long
def test_shipped_recipe_converts_and_decodes_losslessly_on_every_prompt(tmp_path):
    """The shipped recipe end to end (about 20 min on 2 idle cores): the bundle, then both modes on every held-out
    prompt with identical tokens; the speed and acceptance figures are printed (benchmarks/kangaroo_speedup.py
    measures them properly), not asserted."""
    import time

    from converters import convert

    t0 = time.perf_counter()
    out = convert(REPO / "converters" / "recipes" / "kangaroo_lm.yaml", tmp_path / "lm", progress=False)
    seconds = time.perf_counter() - t0
    rt = edge_runtime.load_bundle(out, threads=1)
    rec = rt.manifest.extra["kangaroo"]
    assert len(rec["prompts"]) >= 10 and rt.manifest.verification.passed
    figures = []
    for prompt in rec["prompts"]:
        ar = rt.generate(prompt, mode="autoregressive", max_new_tokens=64)
        kg = rt.generate(prompt, mode="kangaroo", max_new_tokens=64)
        assert kg.tokens == ar.tokens, prompt
        figures.append((kg.tokens_per_s / ar.tokens_per_s, kg.compression_rate))
    print(json.dumps({"convert_seconds": round(seconds, 1), "heldout": rec["training"]["heldout"],
                      "median_speedup": float(np.median([f[0] for f in figures])),
                      "mean_compression_rate": float(np.mean([f[1] for f in figures]))}))
