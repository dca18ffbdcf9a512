"""LGViT: heads, hand-computed loss terms, stage 1/2 objectives, frozen backbone, user weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from converters import HEADS, MODELS, attach_lgvit_heads, create_head, create_model
from converters.methods.lgvit.losses import gram, heterogeneous_loss, homogeneous_loss, kd_loss
from converters.methods.lgvit.model import lgvit_head_schedule
from converters.models.vit import VisionTransformer
from converters.training import random_shift
from converters.training.losses import LOSSES, create_loss
from edge_runtime.errors import ConfigError

EPS = 1e-5  # LayerNorm eps used by the feature losses


def _tiny(name: str = "lgvit_vit", **kw):
    torch.manual_seed(0)
    return create_model(name, **kw)


def test_registered_names():
    assert {"lgvit_local", "lgvit_global"} <= set(HEADS.names())
    assert {"lgvit_vit", "vit_linear"} <= set(MODELS.names())
    assert {"lgvit_stage1", "lgvit_stage2"} <= set(LOSSES.names())


def test_kd_loss_hand_computed():
    t = 2.0
    teacher = torch.tensor([[2 * math.log(3.0), 0.0]])   # softmax(teacher / 2) = [0.75, 0.25]
    student = torch.zeros(1, 2)                           # softmax = [0.5, 0.5]
    expected = t * t * (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert float(kd_loss(student, teacher, t)) == pytest.approx(expected, rel=1e-6)
    # batchmean: a second identical row leaves the value unchanged; identical logits give 0
    assert float(kd_loss(student.repeat(2, 1), teacher.repeat(2, 1), t)) == pytest.approx(expected, rel=1e-6)
    assert float(kd_loss(teacher, teacher, t)) == pytest.approx(0.0, abs=1e-7)


def test_gram_hand_computed():
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])          # (B=1, N=2, dim=2)
    assert torch.allclose(gram(x), torch.tensor([[[0.5, 0.0], [0.0, 2.0]]]))


def test_feature_losses_hand_computed():
    # 2-wide tokens LayerNorm (no affine) to +-1/sqrt(1+eps): [1, 3] -> [-1, 1], [5, 1] -> [1, -1]
    head = create_head("lgvit_local", dim=2, num_classes=3, num_tokens=2)    # 1 CLS + 1 patch
    head_tokens = torch.tensor([[[1.0, 3.0]]])
    final_hidden = torch.tensor([[[9.0, 9.0], [5.0, 1.0]]])                  # CLS dropped by select()
    assert float(heterogeneous_loss(head, head_tokens, final_hidden)) == pytest.approx(4.0 / (1 + EPS), rel=1e-5)
    # local homogeneous: token MSE; same tokens -> 0
    local = homogeneous_loss("local", head_tokens, torch.tensor([[[5.0, 1.0]]]))
    assert float(local) == pytest.approx(4.0 / (1 + EPS), rel=1e-5)
    # global homogeneous compares Gram matrices: a token and its negation have the same Gram (loss 0) ...
    a = torch.tensor([[[1.0, 3.0], [4.0, 2.0]]])
    assert float(homogeneous_loss("global", a, torch.tensor([[[3.0, 1.0]]]))) == pytest.approx(0.0, abs=1e-6)
    # ... and token maps of different lengths compare: unit tokens [-1,1],[-1,1],[1,-1] -> Gram [[1,-1],[-1,1]]
    b = torch.tensor([[[1.0, 3.0], [1.0, 3.0], [3.0, 1.0]]])
    gb = torch.tensor([[[1.0, -1.0], [-1.0, 1.0]]]) / (1 + EPS)
    assert torch.allclose(gram(F.layer_norm(b, (2,))), gb, atol=1e-6)
    assert float(homogeneous_loss("global", b, a)) == pytest.approx(0.0, abs=1e-6)


def test_local_head_residual_pool_and_cls():
    torch.manual_seed(0)
    head = create_head("lgvit_local", dim=8, num_classes=4, num_tokens=17).eval()
    torch.nn.init.zeros_(head.conv[-1].weight)           # last BN scale 0, bias 0: conv branch adds nothing
    h = torch.randn(3, 17, 8)
    t = F.layer_norm(h, (8,), head.norm.weight, head.norm.bias)
    expected = torch.cat([t[:, 1:].mean(1), t[:, 0]], dim=-1)
    assert torch.allclose(head.features(h), expected, atol=1e-6)
    assert torch.allclose(head(h), head.fc(expected), atol=1e-6)
    parts = head.parts(h)
    assert parts.tokens.shape == (3, 16, 8) and parts.features.shape == (3, 16)


def test_local_head_without_depthwise_and_global_stride():
    local = create_head("lgvit_local", dim=8, num_classes=4, num_tokens=17, depthwise=False)
    assert not any(m.groups > 1 for m in local.modules() if isinstance(m, torch.nn.Conv2d))
    assert any(m.groups == 8 for m in create_head("lgvit_local", dim=8, num_classes=4, num_tokens=17).modules()
               if isinstance(m, torch.nn.Conv2d))
    for stride, kept in ((2, 8), (3, 6)):
        g = create_head("lgvit_global", dim=8, num_classes=4, stride=stride, attn_heads=2)
        assert g.parts(torch.randn(2, 17, 8)).tokens.shape == (2, kept, 8)
        assert g.attn.qkv.bias is None


def test_head_config_errors():
    with pytest.raises(ConfigError, match="square"):
        create_head("lgvit_local", dim=8, num_classes=4, num_tokens=16)
    with pytest.raises(ConfigError, match="attn_heads"):
        create_head("lgvit_global", dim=12, num_classes=4, attn_heads=8)
    with pytest.raises(ConfigError, match="exit_heads"):
        create_model("lgvit_vit", exits_after=[0, 1], exit_heads=["lgvit_local"])


def test_schedule_and_builders_share_backbone_shape():
    assert [(s["name"], s["kwargs"]) for s in lgvit_head_schedule(4)] == [
        ("lgvit_local", {"depthwise": True}), ("lgvit_local", {"depthwise": False}),
        ("lgvit_global", {"stride": 2}), ("lgvit_global", {"stride": 3})]
    lg, lin = _tiny("lgvit_vit"), _tiny("vit_linear")
    assert lin.head_types == ["cls_linear"] * 4
    assert [k for k in lg.state_dict() if k.startswith("segments.")] == \
           [k for k in lin.state_dict() if k.startswith("segments.")]


def test_stage1_alternates_final_and_weighted_exit_losses():
    model = _tiny()
    loss = create_loss("lgvit_stage1", model)
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    torch.set_grad_enabled(False)
    try:
        _check_stage1(loss, model, x, y)
    finally:
        torch.set_grad_enabled(True)


def _check_stage1(loss, model, x, y):
    l0, logits = loss(model, x, y, 0)
    ce = [F.cross_entropy(z, y) for z in logits]
    assert float(l0) == pytest.approx(float(ce[-1]), rel=1e-6)
    l1, logits = loss(model, x, y, 1)
    ce = [F.cross_entropy(z, y) for z in logits]
    expected = (1 * ce[0] + 2 * ce[1] + 3 * ce[2]) / 6 + ce[3]
    assert float(l1) == pytest.approx(float(expected), rel=1e-6)


def test_stage2_task_term_without_feature_loss():
    model = _tiny()
    loss = create_loss("lgvit_stage2", model, alpha=0.3, beta=0.0, temperature=2.0)
    loss.train_mode(model)
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(1)
    value, logits = loss(model, x, y, 0)
    final = logits[-1]
    expected = sum(0.7 * F.cross_entropy(z, y) + 0.3 * kd_loss(z, final, 2.0) for z in logits[:-1]) / 3
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    with_features, _ = create_loss("lgvit_stage2", model, beta=0.5)(model, x, y, 0)
    assert float(with_features.detach()) > float(value.detach())


@pytest.mark.parametrize("name", ["lgvit_vit", "vit_linear", "tiny_cnn"])
def test_stage2_leaves_backbone_bit_identical(name):
    model = _tiny(name)
    loss = create_loss("lgvit_stage2", model)
    frozen = [*model.segments, model.heads[-1]]
    before = {k: v.clone() for m in frozen for k, v in m.state_dict().items() for k in [f"{id(m)}.{k}"]}
    heads_before = [p.clone() for h in model.heads[:-1] for p in h.state_dict().values()]
    params = loss.trainable_parameters(model)
    trainable = {id(p) for p in params}
    assert not any(id(p) in trainable for m in frozen for p in m.parameters())
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    shape = model.input_shape
    for step in range(3):
        loss.train_mode(model)
        assert not any(m.training for f in frozen for m in f.modules())
        x, y = torch.randn(6, *shape), torch.randint(0, 10, (6,))
        value, _ = loss(model, x, y, step)
        opt.zero_grad()
        value.backward()
        opt.step()
    after = {k: v for m in frozen for k, v in m.state_dict().items() for k in [f"{id(m)}.{k}"]}
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "stage 2 moved a frozen tensor"
    heads_after = [p for h in model.heads[:-1] for p in h.state_dict().values()]
    assert any(not torch.equal(a, b) for a, b in zip(heads_before, heads_after))


def test_pretrained_weights_load_and_errors(tmp_path):
    torch.manual_seed(3)
    vit = VisionTransformer(1, 16, 4, 10, dim=32, depth=4, heads=4)
    path = tmp_path / "vit.pt"
    torch.save(vit.state_dict(), path)
    model = create_model("lgvit_vit", pretrained=str(path))
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x)[-1], vit.eval()(x), atol=1e-6)
    # backbone only (no head.*): loads, final head stays newly initialised
    torch.save({k: v for k, v in vit.state_dict().items() if not k.startswith("head.")}, tmp_path / "bb.pt")
    create_model("vit_linear", pretrained=str(tmp_path / "bb.pt"))
    bad = dict(vit.state_dict())
    bad.pop("blocks.0.norm1.weight")
    bad["extra.w"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match=r"missing keys: \['blocks.0.norm1.weight'\].*unexpected keys: \['extra.w'\]"):
        create_model("lgvit_vit", pretrained=str(tmp_path / "bad.pt"))
    with pytest.raises(ConfigError, match="shapes"):
        create_model("lgvit_vit", dim=16, heads=4, pretrained=str(path))
    with pytest.raises(ConfigError, match="not found"):
        create_model("lgvit_vit", pretrained=str(tmp_path / "nope.pt"))


def test_attach_to_a_foreign_vit_style_backbone():
    class MyViT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            ref = VisionTransformer(3, 8, 2, 5, dim=16, depth=3, heads=2)
            self.patch_embed, self.blocks = ref.patch_embed, ref.blocks

    model = attach_lgvit_heads(MyViT(), [0, 1], 5, ["lgvit_local", {"name": "lgvit_global", "kwargs": {"stride": 3}}],
                               head_kwargs={"lgvit_global": {"attn_heads": 2}}, input_shape=(3, 8, 8))
    assert model.head_types == ["lgvit_local", "lgvit_global", "cls_linear"]
    assert [tuple(o.shape) for o in model(torch.randn(2, 3, 8, 8))] == [(2, 5)] * 3


def test_random_shift_translates_each_image_by_its_own_offset():
    x = torch.arange(2 * 36, dtype=torch.float32).reshape(2, 1, 6, 6)
    assert random_shift(x, 0) is x
    torch.manual_seed(0)
    out = random_shift(x, 2)
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    for i in range(2):
        windows = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(out[i], padded[i, :, dy:dy + 6, dx:dx + 6])]
        assert windows, f"image {i} is not a translated copy"
    with pytest.raises(ConfigError, match="shift"):
        create_loss("lgvit_stage1", _tiny(), shift=-1)


@pytest.mark.parametrize("recipe", ["lgvit_vit", "vit_linear"])
def test_shipped_recipes_validate_and_build(recipe):
    from pathlib import Path

    from converters.pipeline.convert import build_model
    from converters.recipe import load_recipe

    r = load_recipe(Path(__file__).resolve().parents[1] / "converters" / "recipes" / f"{recipe}.yaml")
    assert [s["loss"]["name"] for s in r["train"]["stages"]] == ["lgvit_stage1", "lgvit_stage2"]
    model = build_model(r)
    expected = ["lgvit_local", "lgvit_local", "lgvit_global", "lgvit_global"] if recipe == "lgvit_vit" \
        else ["cls_linear"] * 4
    assert model.head_types == expected + ["cls_linear"]
    assert model.input_shape == (1, 32, 32)
