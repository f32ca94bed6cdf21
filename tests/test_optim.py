"""Parameter groups (weight-decay split, BEiT layer decay), optimizer building, lr scaling."""

import io

import pytest
import torch
from torch import nn

import hiera_video
from hiera_video.engine.optim import build_optimizer, param_groups, scaled_lr, unwrap_model
from hiera_video.errors import HieraVideoError


@pytest.fixture(scope="module")
def nano():
    return hiera_video.create_model("hiera_nano_8x64")


def _group_of(groups):
    return {n: g for g in groups for n in g["param_names"]}


def test_every_trainable_param_once(nano):
    groups = param_groups(nano, 0.05, 0.75)
    names = [n for g in groups for n in g["param_names"]]
    assert sorted(names) == sorted(n for n, _ in nano.named_parameters())
    assert sum(len(g["params"]) for g in groups) == len(names)
    for g in groups:
        for n, p in zip(g["param_names"], g["params"]):
            assert p is nano.get_parameter(n)


def test_no_weight_decay_membership(nano):
    by_name = _group_of(param_groups(nano, 0.05, None))
    no_decay = [
        "pos_embed_spatial", "pos_embed_temporal",  # model.no_weight_decay(), 3-D tensors
        "patch_embed.proj.bias", "blocks.0.attn.qkv.bias", "blocks.4.mlp.fc2.bias",  # biases
        "blocks.0.norm1.weight", "blocks.3.norm2.weight", "norm.weight", "norm.bias",  # norms
        "head.projection.bias",
    ]
    decay = ["patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.1.proj.weight", "head.projection.weight"]
    for n in no_decay:
        assert by_name[n]["weight_decay"] == 0.0, n
    for n in decay:
        assert by_name[n]["weight_decay"] == 0.05, n
    # Without layer decay: exactly one decay and one no-decay group, both at full lr.
    groups = param_groups(nano, 0.05, None)
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    assert all(g["lr_scale"] == 1.0 and g["layer_id"] is None for g in groups)


def test_layer_decay_scales_by_hand(nano):
    assert nano.depth == 5  # ids: embeddings 0, blocks 1..5, norm/head 6
    d = 0.75
    groups = param_groups(nano, 0.05, d, lr=1e-3)
    by_name = _group_of(groups)
    expected = {
        "pos_embed_spatial": d**6,
        "pos_embed_temporal": d**6,
        "patch_embed.proj.weight": d**6,
        "patch_embed.proj.bias": d**6,
        "blocks.0.attn.qkv.weight": d**5,
        "blocks.1.norm1.weight": d**4,
        "blocks.2.mlp.fc1.weight": d**3,
        "blocks.3.attn.proj.bias": d**2,
        "blocks.4.proj.weight": d**1,
        "norm.weight": 1.0,
        "head.projection.weight": 1.0,
        "head.projection.bias": 1.0,
    }
    for n, scale in expected.items():
        assert by_name[n]["lr_scale"] == pytest.approx(scale), n
        assert by_name[n]["lr"] == pytest.approx(1e-3 * scale), n
    assert by_name["blocks.2.mlp.fc1.weight"]["layer_id"] == 3
    # Groups keyed by (layer, decay): 7 layers x 2 kinds, all non-empty here, in fixed order.
    assert [(g["layer_id"], g["weight_decay"] > 0) for g in groups] == [
        (i, decay) for i in range(7) for decay in (True, False)
    ]
    assert len({g["name"] for g in groups}) == len(groups)


def test_frozen_params_left_out_and_extra_skip(nano):
    model = hiera_video.create_model("hiera_nano_8x64")
    model.patch_embed.requires_grad_(False)
    names = {n for g in param_groups(model, 0.05, 0.8) for n in g["param_names"]}
    assert "patch_embed.proj.weight" not in names and "blocks.0.attn.qkv.weight" in names
    by_name = _group_of(param_groups(model, 0.05, None, no_weight_decay={"head"}))
    assert by_name["head.projection.weight"]["weight_decay"] == 0.0


def test_mae_skips_mask_token_and_decoder_pos_embed():
    model = hiera_video.create_model("mae_hiera_nano_8x64")
    by_name = _group_of(param_groups(model, 0.05, 0.8))
    for n in ("mask_token", "decoder_pos_embed", "pos_embed_spatial"):
        assert by_name[n]["weight_decay"] == 0.0
    assert by_name["decoder_blocks.0.attn.qkv.weight"]["lr_scale"] == 1.0  # after the encoder: depth + 1


def test_build_optimizer_kinds(nano):
    adamw = build_optimizer(nano, "AdamW", lr=8e-4, weight_decay=0.05, betas=(0.9, 0.95), layer_decay=0.8)
    assert isinstance(adamw, torch.optim.AdamW)
    assert all(g["betas"] == (0.9, 0.95) for g in adamw.param_groups)
    assert max(g["lr"] for g in adamw.param_groups) == pytest.approx(8e-4)
    sgd = build_optimizer(nano, "sgd", lr=0.16, weight_decay=1e-4, momentum=0.9)
    assert isinstance(sgd, torch.optim.SGD)
    assert all(g["momentum"] == 0.9 for g in sgd.param_groups)
    assert {g["weight_decay"] for g in sgd.param_groups} == {0.0, 1e-4}
    with pytest.raises(HieraVideoError, match="unknown optimizer 'lamb'.*adamw, sgd"):
        build_optimizer(nano, "lamb")
    with pytest.raises(HieraVideoError):
        param_groups(nn.Linear(2, 2), 0.05, 0.8)  # no layer_id: layer decay is impossible


def test_optimizer_state_roundtrip_weights_only(nano):
    opt = build_optimizer(nano, "adamw", lr=1e-3, layer_decay=0.8)
    nano(torch.randn(1, 3, 8, 64, 64)).sum().backward()
    opt.step()
    opt.zero_grad()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2 = build_optimizer(nano, "adamw", lr=1e-3, layer_decay=0.8)
    opt2.load_state_dict(state)
    assert [g["lr_scale"] for g in opt2.param_groups] == [g["lr_scale"] for g in opt.param_groups]


def test_wrapped_models_give_same_groups(nano):
    plain = param_groups(nano, 0.05, 0.8)
    compiled = torch.compile(nano)  # lazy: nothing is compiled until it is called
    for wrapped in (nn.DataParallel(nano), compiled, nn.DataParallel(compiled)):
        assert unwrap_model(wrapped) is nano
        groups = param_groups(wrapped, 0.05, 0.8)
        assert [g["param_names"] for g in groups] == [g["param_names"] for g in plain]
        assert [g["lr_scale"] for g in groups] == [g["lr_scale"] for g in plain]
    assert isinstance(build_optimizer(compiled, "sgd", lr=0.1, layer_decay=0.8), torch.optim.SGD)


def test_scaled_lr():
    assert scaled_lr(8e-4, 256, 256) == pytest.approx(8e-4)
    assert scaled_lr(8e-4, 256, 64) == pytest.approx(2e-4)
    assert scaled_lr(0.16, 256, 1024) == pytest.approx(0.64)
    with pytest.raises(HieraVideoError):
        scaled_lr(1e-3, 0, 8)
