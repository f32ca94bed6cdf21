"""``--weights hf-hub:ORG/NAME[@REVISION]``: Hugging Face Hub repos read through
``huggingface_hub``, never over the network: a loopback HTTP server stands in for the Hub
(``HF_ENDPOINT``), then ``HF_HUB_OFFLINE=1`` reads the cache it filled."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import hiera
import pytest
import torch

from hiera_video import HieraVideoError, create_model
from hiera_video.models import create_model_and_report
from hiera_video.models import checkpoints as ck
from hiera_video.models.load import load
from hiera_video.models.zoo import MODELS

from helpers import run_cli, save_official

NANO = "hiera_nano_8x64"
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the one revision the fake Hub serves


class _FakeHub(BaseHTTPRequestHandler):
    """The part of the Hub API ``hf_hub_download`` uses: ``HEAD``/``GET
    /ORG/NAME/resolve/REVISION/FILE`` with the ``X-Repo-Commit`` and ``ETag`` headers, and
    404s with the Hub's ``X-Error-Code`` for an unknown repo, revision or file."""

    def log_message(self, *args):  # keep test output clean
        pass

    def _answer(self, body: bool) -> None:
        self.server.hits.append((self.command, self.path))
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(404, "RepoNotFound")
        repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        files = self.server.repos.get(repo)
        if files is None:
            return self._error(404, "RepoNotFound")
        if revision not in ("main", COMMIT):
            return self._error(404, "RevisionNotFound")
        if name not in files:
            return self._error(404, "EntryNotFound")
        data = files[name]
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: int, code: str) -> None:
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)


def official_nano() -> torch.nn.Module:
    torch.manual_seed(0)
    kw = dict(MODELS[NANO].kwargs)
    kw.pop("mask_ratio", None)
    model = hiera.Hiera(**kw).eval()
    with torch.no_grad():  # random (not zero) biases and norms: every tensor matters
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n:
                p.add_(torch.randn_like(p) * 0.02)
    return model


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def nano() -> torch.nn.Module:
    return official_nano()


@pytest.fixture
def hub(tmp_path, monkeypatch, nano):
    """A fake Hub holding ``facebook/hiera_nano`` (official layout: config.json +
    model.safetensors); yields the server (``.repos``, ``.hits``) with ``HF_ENDPOINT`` and
    an empty ``HF_HUB_CACHE`` set."""
    folder = tmp_path / "official"
    nano.save_pretrained(folder)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    httpd.repos = {"facebook/hiera_nano": files_of(folder)}
    httpd.hits = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def probs(model, x=None) -> torch.Tensor:
    x = torch.randn(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(1)) if x is None else x
    with torch.no_grad():
        return model.eval()(x).softmax(-1)


def test_official_repo_equals_pth_then_offline_from_cache(hub, nano, tmp_path, monkeypatch):
    pth = save_official(tmp_path / "nano.pth", nano)
    want = probs(create_model(NANO, weights=pth))
    # Online (the fake Hub): the model is inferred from the tensors, the layout is the official hub's.
    model, report = create_model_and_report(weights="hf-hub:facebook/hiera_nano")
    assert report.layout == "official-hub"
    torch.testing.assert_close(probs(model), want, atol=1e-6, rtol=0)
    snapshot = tmp_path / "hf_cache" / "models--facebook--hiera_nano" / "snapshots" / COMMIT
    assert {"config.json", "model.safetensors"} <= {p.name for p in snapshot.iterdir()}
    assert ("GET", "/facebook/hiera_nano/resolve/main/model.safetensors") in hub.hits
    # Offline, the Hub gone: read from the cache, no request; a pinned revision too.
    hub.shutdown()
    hub.hits.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for w in ("hf-hub:facebook/hiera_nano", f"hf-hub:facebook/hiera_nano@{COMMIT}"):
        model = create_model(NANO, weights=w)  # with --model too
        torch.testing.assert_close(probs(model), want, atol=1e-6, rtol=0)
    assert hub.hits == []


def test_offline_not_cached_is_a_one_line_error(hub, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HieraVideoError) as e:
        create_model(weights="hf-hub:facebook/hiera_nano")
    msg = str(e.value)
    assert "\n" not in msg and "facebook/hiera_nano" in msg and "HF_HUB_OFFLINE" in msg
    assert str(tmp_path / "hf_cache" / "models--facebook--hiera_nano") in msg
    assert hub.hits == []
    # The CLI: exit 2, the same line.
    from videogen import write_video

    clip = write_video(tmp_path / "clip.mp4", num_frames=16, height=64, width=64)
    code, out, err = run_cli(["predict", str(clip), "--weights", "hf-hub:facebook/hiera_nano", "--dtype", "fp32"], capsys)
    assert code == 2 and "HF_HUB_OFFLINE" in err and "Traceback" not in err


def test_unknown_repo_revision_and_empty_repo(hub):
    hub.repos["someone/no_weights"] = {"README.md": b"hello"}
    cases = {
        "hf-hub:nobody/missing": "not found",
        "hf-hub:facebook/hiera_nano@v9": "no revision 'v9'",
        "hf-hub:someone/no_weights": "has no model weights",
        "hf-hub:facebook/hiera_nano@": "bad Hub weights",
    }
    for w, words in cases.items():
        with pytest.raises(HieraVideoError) as e:
            create_model(weights=w)
        assert words in str(e.value) and "\n" not in str(e.value), (w, str(e.value))


def test_transformers_repo_brings_its_class_names(hub, tmp_path):
    """transformers' Hiera layout (``HieraForImageClassification`` keys + an HF config with
    ``id2label``) from the Hub: the same outputs as the same weights in a .pth, and the class
    names come along."""
    from safetensors.torch import save_file
    from test_checkpoints import SMALL_IMAGE, TINY, hf_state_dict, image, official_model

    tiny = official_model(TINY, input_size=SMALL_IMAGE, num_classes=10)
    folder = tmp_path / "hf"
    folder.mkdir()
    sd = hf_state_dict(tiny.state_dict(), MODELS[TINY].kwargs["stages"])
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
    names = [f"thing {i}" for i in range(10)]
    (folder / "config.json").write_text(json.dumps({
        "model_type": "hiera", "architectures": ["HieraForImageClassification"], "embed_dim": 96,
        "image_size": list(SMALL_IMAGE), "patch_size": [7, 7], "patch_stride": [4, 4], "patch_padding": [3, 3],
        "mlp_ratio": 4.0, "depths": [1, 2, 7, 2], "num_heads": [1, 2, 4, 8], "embed_dim_multiplier": 2.0,
        "num_query_pool": 3, "query_stride": [2, 2], "masked_unit_size": [8, 8],
        "masked_unit_attention": [True, True, False, False], "num_channels": 3,
        "id2label": {str(i): n for i, n in enumerate(names)},
    }))
    hub.repos["someone/hiera_tiny_hf"] = files_of(folder)
    ckpt = ck.read_checkpoint("hf-hub:someone/hiera_tiny_hf@main")
    assert ckpt.layout == "hf-transformers" and ckpt.meta["labels"] == names
    pth = save_official(tmp_path / "tiny.pth", tiny)
    x = image()
    got = probs(create_model(TINY, weights="hf-hub:someone/hiera_tiny_hf", input_size=SMALL_IMAGE), x)
    want = probs(create_model(TINY, weights=pth, input_size=SMALL_IMAGE), x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_predict_from_the_hub_equals_pth(hub, nano, tmp_path, capsys):
    """End to end through the CLI: the same predictions as the .pth; the class names of a
    hiera-video checkpoint pushed as a folder come with it."""
    from videogen import write_video

    clip = write_video(tmp_path / "clip.mp4", num_frames=16, height=64, width=64)
    pth = save_official(tmp_path / "nano.pth", nano)
    runs = {}
    for w in (pth, "hf-hub:facebook/hiera_nano"):
        code, out, err = run_cli(["predict", str(clip), "--weights", w, "--json", "--dtype", "fp32"], capsys)
        assert code == 0, err
        runs[w] = json.loads(out)[0]
    a, b = runs.values()
    assert a["ok"] and b["ok"]
    assert [p["label"] for p in a["top"]] == [p["label"] for p in b["top"]]
    for x, y in zip(a["top"], b["top"]):
        assert abs(x["score"] - y["score"]) < 1e-5


def test_export_hub_folder_round_trip(nano, tmp_path, capsys):
    """``export --format hub``: a folder that ``--weights DIR`` reads back with the labels and
    the same logits, that the official package's ``Hiera.from_pretrained(DIR)`` builds with
    equal outputs, and with a model card."""
    from helpers import nano_classifier

    labels = ["red", "green", "blue"]
    ours, pth = nano_classifier(tmp_path / "run.pt", labels, head_std=0.5)
    (tmp_path / "metrics.json").write_text(json.dumps({"top1": 87.5, "num_val_videos": 12}))  # the run's results
    out = tmp_path / "hub_export"
    code, stdout, err = run_cli(["export", "--weights", pth, "--format", "hub", "--output", str(out), "--json"], capsys)
    assert code == 0, err
    assert {"config.json", "model.safetensors", "README.md"} == {p.name for p in out.iterdir()}
    card = (out / "README.md").read_text()
    assert "red" in card and "huggingface-cli upload" in card and "CC-BY-NC" in card
    assert '"top1": 87.5' in card and NANO in card and "crop_size" in card
    x = torch.randn(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(5))
    want = probs(ours, x)
    net, prov = load("classify", weights=str(out))
    assert prov.labels == labels and prov.spec.name == NANO
    torch.testing.assert_close(probs(net, x), want, atol=1e-6, rtol=0)
    official = hiera.Hiera.from_pretrained(str(out)).eval()
    with torch.no_grad():
        torch.testing.assert_close(official(x), want, atol=1e-6, rtol=0)  # official head: probabilities in eval
    # Over an earlier export: fine; into a folder with other files: refused.
    assert run_cli(["export", "--weights", pth, "--format", "hub", "--output", str(out)], capsys)[0] == 0
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(["export", "--weights", pth, "--format", "hub", "--output", str(out)], capsys)
    assert code == 2 and "notes.txt" in err


def test_export_hub_then_read_from_the_hub(hub, tmp_path):
    """The exported folder, served by the (fake) Hub: the labels travel in model.safetensors."""
    from helpers import nano_classifier

    labels = ["left", "right"]
    ours, pth = nano_classifier(tmp_path / "run.pt", labels, head_std=0.5)
    out = tmp_path / "exp"
    assert run_cli(["export", "--weights", pth, "--format", "hub", "--output", str(out)])[0] == 0
    hub.repos["me/my_finetune"] = files_of(out)
    net, prov = load("classify", weights="hf-hub:me/my_finetune")
    assert prov.labels == labels
    x = torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(probs(net, x), probs(ours, x), atol=1e-6, rtol=0)


def test_finetune_and_features_paths_take_hub_weights(hub, nano):
    """What finetune/pretrain call (``create_model(name, weights, num_classes)``, a new head)
    and what extract calls (``load("features", ...)``) take ``hf-hub:`` weights too."""
    model = create_model(NANO, weights="hf-hub:facebook/hiera_nano", num_classes=5)
    assert model.num_classes == 5
    torch.testing.assert_close(model.state_dict()["patch_embed.proj.weight"], nano.state_dict()["patch_embed.proj.weight"])
    net, prov = load("features", weights="hf-hub:facebook/hiera_nano")
    assert prov.source == "hf-hub:facebook/hiera_nano" and prov.spec.name == NANO
    x = torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x).softmax(-1), nano(x), atol=1e-6, rtol=0)


def test_unreachable_endpoint_not_cached(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.utils._http as hf_http

    monkeypatch.setattr(hf_http.time, "sleep", lambda s: None)  # huggingface_hub's retry back-off (~25 s)
    with pytest.raises(HieraVideoError) as e:
        create_model(weights="hf-hub:facebook/hiera_nano")
    msg = str(e.value)
    assert "\n" not in msg and "could not reach the Hub" in msg and f"127.0.0.1:{port}" in msg
    assert "models--facebook--hiera_nano" in msg
