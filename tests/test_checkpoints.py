"""Checkpoint sources, layouts and loading (hiera_video.models.checkpoints).

Official-format files are made with the official implementation (``hiera-transformer``)
using the zoo spec's constructor arguments, and stored the way the official repo stores
them; every layout is loaded through ``create_model`` and compared with the official model.
Everything runs offline: downloads are served from a loopback HTTP server.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pickle
import random
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
import torch.nn as nn

import hiera
from hiera_video import HieraVideoError, create_model
from hiera_video.models import create_model_and_report
from hiera_video.models import checkpoints as ck
from hiera_video.models.posembed import resample_grid
from hiera_video.models.zoo import MODELS, Weights

from helpers import save_official

NANO = "hiera_nano_8x64"
MAE_NANO = "mae_hiera_nano_8x64"
TINY = "hiera_tiny_224"
SMALL_IMAGE = (64, 64)


# ---------------------------------------------------------------------- helpers
def official_kwargs(name: str, **overrides) -> dict:
    kw = dict(MODELS[name].kwargs)
    kw.pop("mask_ratio", None)  # ours only: the official MAE class does not take it
    kw.update(overrides)
    return kw


def official_model(name: str, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    cls = hiera.MaskedAutoencoderHiera if MODELS[name].mae else hiera.Hiera
    model = cls(**official_kwargs(name, **overrides)).eval()
    # Random (not zero) biases and norms so every tensor matters in the comparison.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n:
                p.add_(torch.randn_like(p) * 0.02)
    return model


def assert_same_probs(ours: nn.Module, official: nn.Module, x: torch.Tensor) -> None:
    ours.eval()
    with torch.no_grad():
        got = ours(x).softmax(dim=-1)
        want = official(x)  # the official head returns probabilities in eval mode
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


def video(frames: int = 8, size: int = 64, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(1))


def image(size: int = 64, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def nano() -> nn.Module:
    return official_model(NANO)


@pytest.fixture(scope="module")
def nano_pth(nano, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("official") / "hiera_nano_8x64.pth"
    save_official(path, nano)  # how the official repo stores weights
    return str(path)


@pytest.fixture(scope="module")
def mae_nano() -> nn.Module:
    return official_model(MAE_NANO, seed=3)


@pytest.fixture(scope="module")
def mae_pth(mae_nano, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("official") / "mae_hiera_nano_8x64.pth"
    save_official(path, mae_nano)
    return str(path)


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    return official_model(TINY, input_size=SMALL_IMAGE, num_classes=10)


# ---------------------------------------------------------------------- layouts
def test_official_pth_matches_official_model(nano, nano_pth):
    model, report = create_model_and_report(NANO, weights=nano_pth)
    assert report.layout == "official"
    assert report.messages() == []
    assert model.num_classes == 400
    assert_same_probs(model, nano, video())


def test_wrapper_prefix_and_bare_state_dict(nano, tmp_path):
    path = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in nano.state_dict().items()}, path)
    model, report = create_model_and_report(NANO, weights=str(path))
    assert report.layout == "official"
    assert_same_probs(model, nano, video())


def test_official_hub_directory(nano, tmp_path):
    hub = tmp_path / "facebook--hiera_nano"
    nano.save_pretrained(hub)  # config.json + model.safetensors, as on the official hub
    assert {"config.json", "model.safetensors"} <= set(os.listdir(hub))
    model, report = create_model_and_report(NANO, weights=str(hub))
    assert report.layout == "official-hub"
    ckpt = ck.read_checkpoint(hub)
    assert ckpt.config["embed_dim"] == 32 and ckpt.config["input_size"] == [8, 64, 64]
    assert_same_probs(model, nano, video())
    # The weights file itself (config.json beside it is used too) and a lone copy.
    assert ck.read_checkpoint(hub / "model.safetensors").layout == "official-hub"
    lone = tmp_path / "weights.safetensors"
    lone.write_bytes((hub / "model.safetensors").read_bytes())
    model, report = create_model_and_report(NANO, weights=str(lone))
    assert report.layout == "official"
    assert_same_probs(model, nano, video())


def test_hub_config_that_contradicts_weights(nano, tmp_path):
    hub = tmp_path / "hub"
    nano.save_pretrained(hub)
    cfg = json.loads((hub / "config.json").read_text())
    cfg["embed_dim"] = 48
    (hub / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HieraVideoError) as e:
        create_model(NANO, weights=str(hub))
    msg = one_line_error(e)
    assert "embed_dim" in msg and "48" in msg and "32" in msg


def test_hub_config_with_other_heads_is_refused(tmp_path):
    # Same tensor shapes, another computation: caught through config.json.
    other = official_model(NANO, num_heads=2)
    other.save_pretrained(tmp_path / "hub")
    with pytest.raises(HieraVideoError) as e:
        create_model(NANO, weights=str(tmp_path / "hub"))
    assert "num_heads=2" in one_line_error(e)


def test_timm_layout(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model(TINY, pretrained=False, img_size=SMALL_IMAGE, num_classes=10).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if n.endswith("bias") or "norm" in n:
                p.add_(torch.randn_like(p) * 0.02)
    sd = ref.state_dict()
    assert "head.fc.weight" in sd and "head.norm.weight" in sd  # timm's own names
    path = tmp_path / "timm_hiera_tiny.pth"
    torch.save(sd, path)
    model, report = create_model_and_report(TINY, weights=str(path), input_size=SMALL_IMAGE)
    model.eval()
    assert report.layout == "timm" and model.num_classes == 10
    x = image()
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-5)


def hf_state_dict(official_sd: dict, stages) -> dict:
    """Official keys -> HF transformers ``HieraForImageClassification`` keys."""
    where = {}
    g = 0
    for s, depth in enumerate(stages):
        for layer in range(depth):
            where[g] = (s, layer)
            g += 1
    names = {"norm1": "layernorm_before", "norm2": "layernorm_after"}
    out = {}
    for k, v in official_sd.items():
        parts = k.split(".")
        if parts[0] == "blocks":
            s, layer = where[int(parts[1])]
            sub = [names.get(parts[2], parts[2])] + parts[3:]
            out[f"hiera.encoder.stages.{s}.layers.{layer}." + ".".join(sub)] = v
        elif k.startswith("patch_embed.proj."):
            out["hiera.embeddings.patch_embeddings.projection." + parts[-1]] = v
        elif k == "pos_embed":
            out["hiera.embeddings.position_embeddings"] = v
        elif k.startswith("norm."):
            out["hiera.pooler.layernorm." + parts[-1]] = v
        elif k.startswith("head.projection."):
            out["classifier." + parts[-1]] = v
        else:
            raise AssertionError(k)
    return out


def test_hf_transformers_layout(tiny, tmp_path):
    from safetensors.torch import save_file

    sd = hf_state_dict(tiny.state_dict(), MODELS[TINY].kwargs["stages"])
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
    config = {
        "model_type": "hiera", "architectures": ["HieraForImageClassification"], "embed_dim": 96,
        "image_size": list(SMALL_IMAGE), "patch_size": [7, 7], "patch_stride": [4, 4], "patch_padding": [3, 3],
        "mlp_ratio": 4.0, "depths": [1, 2, 7, 2], "num_heads": [1, 2, 4, 8], "embed_dim_multiplier": 2.0,
        "num_query_pool": 3, "query_stride": [2, 2], "masked_unit_size": [8, 8],
        "masked_unit_attention": [True, True, False, False], "num_channels": 3,
        "id2label": {str(i): f"class {i}" for i in range(10)},
    }
    (folder / "config.json").write_text(json.dumps(config))
    model, report = create_model_and_report(TINY, weights=str(folder), input_size=SMALL_IMAGE)
    assert report.layout == "hf-transformers" and model.num_classes == 10
    ckpt = ck.read_checkpoint(folder)
    assert ckpt.meta["labels"][3] == "class 3"
    assert_same_probs(model, tiny, image())
    # HieraModel (backbone) in a .pth behind a "model." prefix: no "hiera." prefix, no
    # classifier, no config -> encoder loaded, the head stays initialised.
    base = {"model." + k[len("hiera."):]: v for k, v in sd.items() if k.startswith("hiera.")}
    torch.save(base, tmp_path / "hf_base.pth")
    backbone, report = create_model_and_report(TINY, weights=str(tmp_path / "hf_base.pth"), input_size=SMALL_IMAGE,
                                               num_classes=10)
    assert report.layout == "hf-transformers"
    assert "no classification head" in " ".join(report.messages())
    with torch.no_grad():
        x = image()
        torch.testing.assert_close(backbone.eval().forward_head(backbone.forward_features(x), pre_logits=True),
                                   model.eval().forward_head(model.forward_features(x), pre_logits=True))


# ---------------------------------------------------------------------- adapting
def test_mae_checkpoint_into_classifier(mae_nano, mae_pth):
    model, report = create_model_and_report(NANO, weights=mae_pth)  # strict by default: must not raise
    assert report.dropped and all(k.startswith(ck.MAE_ONLY_PREFIXES) for k in report.dropped)
    assert any(k.startswith("decoder_blocks.") for k in report.dropped)
    assert "norm.weight" in report.initialised and "head.projection.weight" in report.initialised
    text = " ".join(report.messages())
    assert "'norm'" in text and "'head'" in text and "NOT in the checkpoint" in text
    ours = model.state_dict()
    for k, v in mae_nano.state_dict().items():
        if k in ours and not k.startswith(ck.MAE_ONLY_PREFIXES):
            assert torch.equal(ours[k], v), k
    # The MAE model itself takes the same file strictly.
    mae, report = create_model_and_report(MAE_NANO, weights=mae_pth)
    assert report.messages() == []
    for k, v in mae_nano.state_dict().items():
        assert torch.equal(mae.state_dict()[k], v), k


def test_classifier_checkpoint_into_mae_is_an_error(nano_pth):
    with pytest.raises(HieraVideoError) as e:
        create_model(MAE_NANO, weights=nano_pth)
    msg = one_line_error(e)
    assert "decoder" in msg and "hiera_nano_8x64" in msg
    model = create_model(MAE_NANO)
    report = ck.apply_checkpoint(model, ck.read_checkpoint(nano_pth), strict=False)
    assert report.missing and any(k.startswith("decoder_") for k in report.missing)


def test_other_num_classes_reinitialises_head(nano, nano_pth):
    model, report = create_model_and_report(NANO, weights=nano_pth, num_classes=10)
    assert model.head.projection.weight.shape == (10, 256)
    assert report.head_reset == (10, 400)
    assert "head re-initialised for 10 classes (checkpoint has 400)" in " ".join(report.messages())
    assert torch.equal(model.state_dict()["blocks.3.attn.qkv.weight"], nano.state_dict()["blocks.3.attn.qkv.weight"])
    assert torch.equal(model.state_dict()["norm.weight"], nano.state_dict()["norm.weight"])
    with torch.no_grad():
        assert model.eval()(video()).shape == (2, 10)


@pytest.mark.parametrize("size", [(8, 96, 96), (16, 64, 64)])
def test_pos_embed_resampled_to_other_input_size(nano, nano_pth, size):
    model, report = create_model_and_report(NANO, weights=nano_pth, input_size=size)
    model.eval()
    resized = {k: (old, new) for k, old, new in report.resized}
    t, h, w = model.tokens_spatial_shape
    if t != 4:
        assert resized["pos_embed_temporal"] == ((1, 4, 32), (1, t, 32))
    if (h, w) == (16, 16):
        assert "pos_embed_spatial" not in resized
    else:
        assert resized["pos_embed_spatial"] == ((1, 256, 32), (1, h * w, 32))
    torch.testing.assert_close(model.pos_embed_spatial.detach(), resample_grid(nano.pos_embed_spatial.detach(), [16, 16], [h, w]))
    torch.testing.assert_close(model.pos_embed_temporal.detach(), resample_grid(nano.pos_embed_temporal.detach(), [4], [t]))
    with torch.no_grad():
        out = model(video(size[0], size[1]))
    assert out.shape == (2, 400) and torch.isfinite(out).all()
    # At the grid the weights were made for, nothing is resampled.
    same, report = create_model_and_report(NANO, weights=nano_pth)
    assert report.resized == []
    assert torch.equal(same.pos_embed_spatial, nano.pos_embed_spatial)
    assert torch.equal(same.pos_embed_temporal, nano.pos_embed_temporal)


def test_mae_decoder_pos_embed_resampled(mae_pth):
    model, report = create_model_and_report(MAE_NANO, weights=mae_pth, input_size=(8, 96, 96))
    keys = [k for k, _, _ in report.resized]
    assert keys == ["pos_embed_spatial", "decoder_pos_embed"]
    loss, *_ = model(video(8, 96), mask_ratio=0.5)
    assert torch.isfinite(loss)


def test_grid_from_checkpoint_config(tmp_path):
    # Non-square grid: only the config can tell its shape.
    other = official_model(NANO, input_size=(8, 64, 96))
    save_official(tmp_path / "wide.pth", other)
    with pytest.raises(HieraVideoError) as e:
        create_model(NANO, weights=str(tmp_path / "wide.pth"))
    assert "token grid" in one_line_error(e)
    other.save_pretrained(tmp_path / "wide")  # with config.json
    model = create_model(NANO, weights=str(tmp_path / "wide"))
    want = resample_grid(other.pos_embed_spatial.detach(), [16, 24], [16, 16])
    torch.testing.assert_close(model.pos_embed_spatial.detach(), want)


def test_other_architecture_strict_and_not(nano_pth):
    with pytest.raises(HieraVideoError) as e:
        create_model("hiera_micro_16x128", weights=nano_pth)
    msg = one_line_error(e)
    assert "missing" in msg and "another shape" in msg and "fits: hiera_nano_8x64" in msg
    model = create_model("hiera_micro_16x128")
    report = ck.apply_checkpoint(model, ck.read_checkpoint(nano_pth), strict=False)
    assert report.missing and report.unexpected and report.mismatched
    assert len(report.messages()) >= 3


# ---------------------------------------------------------------------- project checkpoints
def test_project_checkpoint_roundtrip(tmp_path):
    model = create_model(NANO, num_classes=5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(video()).sum().backward()
    opt.step()
    path = tmp_path / "runs" / "last.pth"
    meta = {"labels": [f"c{i}" for i in range(5)], "mean": (0.45, 0.45, 0.45), "frames": 8}
    ck.save_checkpoint(path, model, meta, optimizer=opt, epoch=3)
    assert os.listdir(path.parent) == ["last.pth"]  # no temp file left behind
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "hiera-video" and raw["epoch"] == 3
    loaded, report = create_model_and_report(NANO, weights=str(path))
    assert report.layout == "hiera-video" and loaded.num_classes == 5
    ckpt = ck.read_checkpoint(path)
    assert ckpt.meta["model"] == NANO and ckpt.meta["labels"][4] == "c4" and ckpt.meta["config"]["embed_dim"] == 32
    x = video()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x), atol=0, rtol=0)
    state = ck.load_training_state(path)
    assert state["epoch"] == 3 and state["optimizer"]["state"]
    opt.load_state_dict(state["optimizer"])


def test_save_checkpoint_is_atomic_and_plain(tmp_path, monkeypatch):
    model = create_model(NANO)
    path = tmp_path / "ckpt.pth"
    ck.save_checkpoint(path, model, {"note": "first"})
    before = path.read_bytes()
    with pytest.raises(HieraVideoError) as e:
        ck.save_checkpoint(path, model, {"bad": object()})
    assert "meta['bad']" in one_line_error(e)

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(HieraVideoError) as e:
        ck.save_checkpoint(path, model, {"note": "second"})
    assert "No space left" in one_line_error(e)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.pth"]


def test_load_training_state_rejects_foreign_files(nano_pth):
    with pytest.raises(HieraVideoError) as e:
        ck.load_training_state(nano_pth)
    assert "not a hiera-video training checkpoint" in one_line_error(e)


# ---------------------------------------------------------------------- malformed input
class Custom:
    pass


def _write_malformed(kind: str, folder, nano_pth: str) -> str:
    p = folder / f"{kind}.pth"
    if kind == "random":  # seeded: unseeded bytes start with "{" (read as JSON) or 0x80 (a pickle) one run in 100
        p.write_bytes(b"\x07" + random.Random(0).randbytes(4095))
    elif kind == "random_brace":
        p.write_bytes(b"{\xff" + random.Random(1).randbytes(4094))
    elif kind == "truncated":
        data = open(nano_pth, "rb").read()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "json":
        p = folder / "config.json"
        p.write_text(json.dumps({"embed_dim": 96}))
    elif kind == "other_network":
        net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 2))
        torch.save(net.state_dict(), p)
    elif kind == "not_a_dict":
        torch.save(torch.zeros(3), p)
    elif kind == "custom_class":
        torch.save({"model_state": {"w": torch.zeros(1)}, "args": Custom()}, p)
    elif kind == "plain_pickle":
        with open(p, "wb") as f:
            pickle.dump({"model_state": Custom()}, f)
    elif kind == "bad_safetensors":
        p = folder / "model.safetensors"
        p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1" + b"\x00" * 4)
    elif kind == "empty_dir":
        p = folder / "empty_dir"
        p.mkdir()
        (p / "README.md").write_text("nothing")
    return str(p)


@pytest.mark.parametrize(
    "kind, words",
    [
        ("random", "not a PyTorch or safetensors checkpoint"),
        ("random_brace", "not a PyTorch or safetensors checkpoint"),
        ("truncated", "corrupt or truncated"),
        ("empty", "empty"),
        ("json", "JSON file"),
        ("other_network", "not a Hiera checkpoint"),
        ("not_a_dict", "not a dict of tensors"),
        ("custom_class", "not a plain-tensor checkpoint"),
        ("plain_pickle", "not a plain-tensor checkpoint"),
        ("bad_safetensors", "safetensors"),
        ("empty_dir", "without model weights"),
    ],
)
def test_malformed_checkpoints(kind, words, tmp_path, nano_pth):
    path = _write_malformed(kind, tmp_path, nano_pth)
    with pytest.raises(HieraVideoError) as e:
        create_model(NANO, weights=path)
    msg = one_line_error(e)
    assert words in msg and path in msg


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"model_state": {"w": torch.zeros(1)}, "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(HieraVideoError):
        ck.read_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()


# ---------------------------------------------------------------------- sources
def test_resolve_source_errors(tmp_path, nano_pth):
    spec = MODELS["hiera_base_16x224"]
    with pytest.raises(HieraVideoError) as e:
        ck.resolve_source(spec, "mae_in1k_ft_in1k")
    msg = one_line_error(e)
    assert "mae_k400_ft_k400" in msg and "mae_k400" in msg
    with pytest.raises(HieraVideoError) as e:
        ck.resolve_source(MODELS[NANO], "some_tag")
    assert "no official weights" in one_line_error(e)
    missing = tmp_path / "nope" / "w.pth"
    with pytest.raises(HieraVideoError) as e:
        ck.resolve_source(spec, str(missing))
    assert "not found" in one_line_error(e) and str(missing) in str(e.value)
    assert ck.resolve_source(spec, "file://" + nano_pth) == nano_pth
    assert ck.resolve_source(spec, nano_pth) == nano_pth


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self.server.hits.append(self.path)
        if self.path == "/short.pth":  # promises more than it sends
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"PK\x03\x04" + b"\x00" * 100)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path, nano_pth):
    root = tmp_path / "www"
    root.mkdir()
    (root / "hiera_nano_8x64.pth").write_bytes(open(nano_pth, "rb").read())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    httpd.hits = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # so get_dir() follows TORCH_HOME
    assert torch.hub.get_dir() == str(home / "hub")
    return home / "hub" / "checkpoints"


def test_download_via_url_into_empty_cache(server, hub_cache, nano):
    httpd, base = server
    url = f"{base}/hiera_nano_8x64.pth"
    model = create_model(NANO, weights=url)
    assert (hub_cache / "hiera_nano_8x64.pth").is_file()
    assert os.listdir(hub_cache) == ["hiera_nano_8x64.pth"]
    assert_same_probs(model, nano, video())
    create_model(NANO, weights=url)  # cached: no second request
    assert httpd.hits == ["/hiera_nano_8x64.pth"]


def test_download_via_zoo_tag(server, hub_cache, nano, monkeypatch):
    httpd, base = server
    spec = MODELS["hiera_base_16x224"]
    w = spec.weights["mae_k400_ft_k400"]
    monkeypatch.setitem(spec.weights, "mae_k400_ft_k400", dataclasses.replace(w, url=f"{base}/hiera_nano_8x64.pth"))
    path = ck.resolve_source(spec, "mae_k400_ft_k400")
    assert path == str(hub_cache / "hiera_nano_8x64.pth")
    # And end to end for a model whose spec gets that tag.
    nano_spec = MODELS[NANO]
    monkeypatch.setitem(nano_spec.weights, "mae_k400_ft_k400", dataclasses.replace(w, url=f"{base}/hiera_nano_8x64.pth"))
    model = create_model(NANO, weights="mae_k400_ft_k400")
    assert_same_probs(model, nano, video())
    assert httpd.hits == ["/hiera_nano_8x64.pth"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_unreachable_url(hub_cache):
    url = f"http://127.0.0.1:{_closed_port()}/x.pth"
    with pytest.raises(HieraVideoError) as e:
        create_model(NANO, weights=url)
    msg = one_line_error(e)
    assert url in msg and str(hub_cache / "x.pth") in msg and "--weights /path/to/x.pth" in msg
    assert not hub_cache.exists() or os.listdir(hub_cache) == []


@pytest.mark.parametrize("name, words", [("short.pth", "connection closed"), ("missing.pth", "HTTP 404")])
def test_failed_download_leaves_nothing(server, hub_cache, name, words):
    _, base = server
    with pytest.raises(HieraVideoError) as e:
        ck.resolve_source(MODELS[NANO], f"{base}/{name}")
    msg = one_line_error(e)
    assert words in msg or "IncompleteRead" in msg
    assert os.listdir(hub_cache) == []


def test_weights_dataclass_is_what_the_zoo_uses():
    # Guard for the monkeypatching above: tags map to Weights records with a url.
    w = MODELS["hiera_base_16x224"].weights["mae_k400_ft_k400"]
    assert isinstance(w, Weights) and w.url.endswith("/hiera_base_16x224.pth")


def test_real_hf_transformers_checkpoints(tmp_path):
    """Folders written by HF transformers' own save_pretrained load unchanged and give HF's
    outputs: HieraForImageClassification logits, HieraModel pooled features, and the
    HieraForPreTraining (MAE) loss for the same mask."""
    from transformers import HieraConfig, HieraForImageClassification, HieraForPreTraining, HieraModel

    torch.manual_seed(0)
    common = dict(embed_dim=96, depths=[1, 2, 7, 2], num_heads=[1, 2, 4, 8], image_size=[224, 224])
    x = torch.randn(2, 3, 224, 224)

    hf = HieraForImageClassification(HieraConfig(**common, num_labels=10, id2label={i: f"c{i}" for i in range(10)},
                                                 label2id={f"c{i}": i for i in range(10)})).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for n, p in hf.named_parameters():
            if n.endswith("bias") or "norm" in n:
                p.add_(torch.randn_like(p) * 0.02)
    hf.save_pretrained(tmp_path / "cls")
    ours, report = create_model_and_report("hiera_tiny_224", weights=str(tmp_path / "cls"))
    ours.eval()
    assert report.layout == "hf-transformers" and ours.num_classes == 10
    assert ck.read_checkpoint(tmp_path / "cls").meta["labels"][3] == "c3"
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(pixel_values=x).logits, atol=1e-5, rtol=1e-5)

    backbone = HieraModel(HieraConfig(**common)).eval()
    backbone.save_pretrained(tmp_path / "base")
    ours = create_model("hiera_tiny_224", weights=str(tmp_path / "base")).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_head(ours.forward_features(x), pre_logits=True),
                                   backbone(pixel_values=x).pooler_output, atol=1e-5, rtol=1e-5)

    mae = HieraForPreTraining(HieraConfig(**common, num_query_pool=2, decoder_hidden_size=512, decoder_depth=8,
                                          decoder_num_heads=16, mask_ratio=0.6)).eval()
    mae.save_pretrained(tmp_path / "mae")
    ours, report = create_model_and_report("mae_hiera_tiny_224", weights=str(tmp_path / "mae"))
    ours.eval()
    assert not report.messages()  # strict: nothing missing, nothing left over
    noise = torch.rand(2, 49)  # HF keeps the units with the smallest noise (7x7 units, 40% kept)
    keep = torch.zeros(2, 49, dtype=torch.bool).scatter_(1, noise.argsort(dim=1)[:, :19], True)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, mask=keep)[0], mae(pixel_values=x, noise=noise).loss, atol=1e-6, rtol=1e-5)

    # Pooling has no parameters, so only the config shows another q_pool: refused, not loaded wrong.
    HieraModel(HieraConfig(**common, num_query_pool=2)).save_pretrained(tmp_path / "q2")
    with pytest.raises(HieraVideoError, match="q_pool=2"):
        create_model("hiera_tiny_224", weights=str(tmp_path / "q2"))
    # ... while MAE weights (q_pool 2) go into the classifier (q_pool 3) as the official recipe does.
    assert create_model_and_report("hiera_tiny_224", weights=str(tmp_path / "mae"))[1].layout == "hf-transformers"


# ---------------------------------------------------------------------- model inferred from shapes
def test_model_inferred_from_official_files(nano, nano_pth, mae_pth, tmp_path):
    """An official file says nothing about its variant, but its tensor shapes do: with no
    model name the one registered variant they fit is used (it used to stop with "does not
    say which model it belongs to")."""
    
    model = create_model(weights=nano_pth)
    assert model.spec.name == NANO
    assert_same_probs(model, nano, video())
    assert create_model(weights=mae_pth).spec.name == MAE_NANO
    tiny_image = official_model(TINY, input_size=SMALL_IMAGE, num_classes=10)  # other size and classes: still tiny
    save_official(tmp_path / "tiny.pth", tiny_image)
    assert create_model(weights=str(tmp_path / "tiny.pth"), input_size=SMALL_IMAGE).spec.name == TINY
    hub = tmp_path / "hub"
    nano.save_pretrained(hub)
    assert create_model(weights=str(hub)).spec.name == NANO


def test_model_inference_lists_candidates_or_none(nano_pth, tmp_path, monkeypatch):
    
    twin = dataclasses.replace(MODELS[NANO], name="hiera_nano_twin_8x64")
    monkeypatch.setitem(MODELS, twin.name, twin)
    with pytest.raises(HieraVideoError) as e:
        create_model(weights=nano_pth)
    msg = one_line_error(e)
    assert "fit several" in msg and NANO in msg and twin.name in msg and "--model" in msg
    monkeypatch.delitem(MODELS, twin.name)
    odd = official_model(NANO, embed_dim=40)
    save_official(tmp_path / "odd.pth", odd)
    with pytest.raises(HieraVideoError) as e:
        create_model(weights=str(tmp_path / "odd.pth"))
    msg = one_line_error(e)
    assert "fit no registered model" in msg and "embed_dim 40" in msg and "--model" in msg


def test_predict_official_file_without_model(nano_pth, tmp_path, capsys):
    from helpers import run_cli
    from videogen import write_video

    clip = write_video(tmp_path / "clip.mp4", num_frames=16, height=64, width=64)
    code, out, err = run_cli(["predict", str(clip), "--weights", nano_pth, "--json", "--dtype", "fp32"], capsys)
    assert code == 0, err
    assert json.loads(out)[0]["ok"] is True
