"""report.html: written by eval (and a run folder's trainer), rebuilt by ``hiera-video report``,
self-contained and escaped; checked in a real browser (Debian's chromium driven by playwright).

Without chromium or playwright the browser tests are skipped with how to install them, unless
``HIERA_VIDEO_BROWSER_TESTS=1`` (CI: ``.ci/run``), where they fail instead.
``HIERA_VIDEO_REPORT_SCREENSHOT=PATH`` also saves a screenshot of the eval report (README's).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

from helpers import COLOURS, colour_videos, nano_classifier, run_cli

CHROMIUM = os.environ.get("HIERA_VIDEO_CHROMIUM", "/usr/bin/chromium")  # another browser build: set this
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
HOSTILE = "<script>alert(1)</script>"
EVIL_IMG = "<img src=x onerror=\"window.__pwned=1\">"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A real ``eval --output``: 3 colour classes, one named like a script and one like an
    image with a handler, a video whose path holds quotes, and an unreadable video."""
    d = tmp_path_factory.mktemp("report")
    root = d / "media"
    root.mkdir()
    colour_videos(root, 2, num_train=0, num_frames=16)
    names = [HOSTILE, "green 'q\"", EVIL_IMG]
    (root / "labels.txt").write_text("\n".join(names) + "\n")
    shutil.move(root / "blue1.mp4", root / "bl\"ue' 1.mp4")
    (root / "broken.mp4").write_bytes(random.Random(2000).randbytes(2000))
    lines = [line for line in (root / "val.txt").read_text().splitlines() if line]
    lines = [line.replace("blue1.mp4", "bl\"ue' 1.mp4") for line in lines] + ["broken.mp4 1"]
    (root / "eval.txt").write_text("\n".join(f"{p.rsplit(' ', 1)[0]}\t{p.rsplit(' ', 1)[1]}" for p in lines) + "\n")
    _, ckpt = nano_classifier(d / "nano.pt", names, head_std=3.0)
    out = d / "out"
    t0 = time.perf_counter()
    code, _, _ = run_cli(["eval", "--dataset", "list", "--root", str(root), "--annotations", str(root / "eval.txt"),
                          "--labels", str(root / "labels.txt"), "--weights", ckpt, "--views", "1x1", "--workers", "0",
                          "--dtype", "fp32", "--output", str(out)])
    seconds = time.perf_counter() - t0
    assert code == 1, code  # one unreadable video
    return dict(dir=d, out=out, names=names, root=root, seconds=seconds)


def test_eval_writes_a_self_contained_escaped_report(evaluated):
    html = (evaluated["out"] / "report.html").read_text()
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert EVIL_IMG not in html
    # nothing is loaded from anywhere: no URL in src/href but data: URIs and the local eval link
    refs = re.findall(r"""<[a-zA-Z][^<>]*?\s(?:src|href)=["']?([^"' >]*)""", html)  # real tags only
    assert refs and all(r.startswith("data:image/") for r in refs), [r for r in refs if not r.startswith("data:")]
    assert "http://" not in html and "https://" not in html
    m = json.loads((evaluated["out"] / "metrics.json").read_text())
    assert len(m["weights_sha256"]) == 64 and m["command"] and m["versions"]["torch"] and m["created"].endswith("Z")
    assert "broken.mp4" in html
    assert "options.annotations" in html and m["options"]["annotations"] == str(evaluated["root"] / "eval.txt")


def test_report_command_rebuilds_the_page(evaluated, tmp_path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(evaluated["out"], folder)
    (folder / "report.html").unlink()
    t0 = time.perf_counter()
    code, out, _ = run_cli(["report", str(folder)], capsys)
    build = time.perf_counter() - t0
    assert code == 0 and (folder / "report.html").is_file(), out
    assert "wrote" in out
    print(f"eval {evaluated['seconds']:.2f} s, report {build:.2f} s")
    assert 'class="thumb"' in (folder / "report.html").read_text()
    code, _, _ = run_cli(["report", str(folder), "--no-frames"], capsys)
    page = (folder / "report.html").read_text()
    assert code == 0 and 'class="thumb"' not in page and "not decoded" in page
    code, _, err = run_cli(["report", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "not a folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["report", str(tmp_path / "empty")], capsys)
    assert code == 2 and "holds no results" in err


def test_a_failing_report_keeps_the_results(evaluated, tmp_path, monkeypatch, capsys, caplog):
    import hiera_video.html_report as hr

    def broken(*a, **k):
        raise RuntimeError("template exploded")

    monkeypatch.setattr(hr, "build_report", broken)
    out = tmp_path / "out"
    code, out_text, err = run_cli(["eval", "--dataset", "list", "--root", str(evaluated["root"]), "--annotations",
                          str(evaluated["root"] / "eval.txt"), "--labels", str(evaluated["root"] / "labels.txt"),
                          "--weights", str(evaluated["dir"] / "nano.pt"), "--views", "1x1", "--workers", "0",
                          "--dtype", "fp32", "--output", str(out)], capsys)
    assert code == 1  # as without the failure: results written, one video unreadable
    assert (out / "metrics.json").is_file() and (out / "predictions.pt").is_file() and (out / "failed.csv").is_file()
    assert not (out / "report.html").exists()
    said = " ".join((out_text + err + caplog.text).split())
    assert "template exploded" in said and "hiera-video report" in said


def _big_eval_folder(folder: Path, classes: int = 400, videos: int = 20000, video: str = "") -> None:
    """What eval writes for a 400-class, 20,000-video Kinetics-like eval, without running one."""
    from hiera_video.metrics.classification import classification_metrics, save_predictions, write_metrics

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(videos) % classes
    logits = torch.randn(videos, classes, generator=g) * 2
    logits[torch.arange(videos), labels] += 3.0
    probs = logits.softmax(1)
    names = [f"class {i} <b>" for i in range(classes)]
    metrics = classification_metrics(probs, labels, names)
    write_metrics(folder, metrics, names, extra=dict(protocol=dict(num_frames=8, crop_size=64)), plot=False)
    paths = [video or f"/data/k400/val/{i}.mp4" for i in range(videos)]
    save_predictions(folder / "predictions.pt", paths, labels, probs, names,
                     meta=dict(protocol=dict(num_frames=8, stride=4, crop_size=64, temporal_views=1, spatial_views=1)))


def test_a_400_class_page_stays_under_the_cap_and_builds_in_seconds(evaluated, tmp_path):
    from hiera_video.html_report import SIZE_CAP, build_report

    video = str(next(evaluated["root"].glob("red0.mp4")))
    _big_eval_folder(tmp_path, video=video)
    t0 = time.perf_counter()
    path = build_report(tmp_path)
    seconds = time.perf_counter() - t0
    size = path.stat().st_size
    print(f"400 classes, 20000 videos: {size / 1e6:.2f} MB in {seconds:.2f} s")
    assert size < SIZE_CAP
    assert seconds < 30
    assert path.read_text().count('class="thumb"') >= 12 * 2


def _run_folder(folder: Path, evaluated) -> None:
    """A finished finetune run folder as the trainer leaves it (+ the final eval)."""
    rows = [dict(kind="train", step=s, epoch=s // 5, loss=2.0 / (1 + s), lr=1e-3 * min(1, s / 3)) for s in range(1, 21)]
    rows += [dict(kind="val", step=5 * e, epoch=e, top1=20.0 * e) for e in range(1, 5)]
    rows += [dict(kind="epoch", step=5 * e, epoch=e, loss=1.0 / e) for e in range(1, 5)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "config.json").write_text(json.dumps(dict(data=dict(root=f"/data/{HOSTILE}"), optim=dict(lr=1e-3))))
    from hiera_video.report import write_csv

    write_csv(folder / "bad_videos.csv", ["path", "reason"], [("/data/x.mp4", EVIL_IMG)])
    (folder / "metrics.json").write_text(json.dumps(dict(top1=66.7, steps=20, epochs_done=4, bad_training_videos=1)))
    from PIL import Image

    Image.new("RGB", (320, 120), (120, 30, 200)).save(folder / "reconstruction.png")
    shutil.copytree(evaluated["out"], folder / "eval")


def test_a_run_folder_page_has_curves_config_bad_videos_and_reconstruction(evaluated, tmp_path):
    from hiera_video.html_report import build_report

    _run_folder(tmp_path, evaluated)
    html = build_report(tmp_path).read_text()
    assert html.count("<svg") == 3  # loss, lr, val top1
    assert "/data/&lt;script&gt;" in html and EVIL_IMG not in html
    assert 'alt="MAE reconstruction"' in html and "eval/report.html" in html


def test_the_trainer_writes_the_report_at_validation_and_at_the_end(tmp_path, monkeypatch):
    """The two trainer hooks (note_val, finish) write report.html in the run folder."""
    from hiera_video.engine import trainer as tr

    calls = []
    monkeypatch.setattr(tr, "write_report_safely", lambda folder, **k: calls.append(Path(folder)))
    from types import SimpleNamespace

    fake = SimpleNamespace(state=SimpleNamespace(step=5, epoch=1, best_val=float("-inf"), bad_videos=0),
                           world=tr.distributed.World(), logger=None, progress=None, out=tmp_path, info={}, bad=[],
                           train_seconds=1.0, save_published=lambda *a, **k: None, _gather_bad=lambda: [],
                           _write_logs=lambda bad: None)
    tr.Trainer.note_val(fake, dict(top1=50.0), "top1", tmp_path / "best.pt")
    tr.Trainer.finish(fake, dict(top1=50.0), "top1")
    assert calls == [tmp_path, tmp_path]


# --------------------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser():
    mandatory = os.environ.get("HIERA_VIDEO_BROWSER_TESTS") == "1"
    how = ("install them: apt-get install -y chromium (Debian's /usr/bin/chromium) and pip install playwright; "
           "HIERA_VIDEO_BROWSER_TESTS=1 makes these tests mandatory")
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "playwright is not installed"
    if problem is None and not os.access(CHROMIUM, os.X_OK):
        problem = f"{CHROMIUM} is missing"
    if problem is not None:
        (pytest.fail if mandatory else pytest.skip)(f"browser tests: {problem}; {how}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def _open(browser, path: Path):
    """The page at file://PATH, with every console error, page error, dialog and request recorded."""
    page = browser.new_page(viewport=dict(width=1280, height=900))
    seen = dict(errors=[], requests=[], dialogs=[])
    url = path.resolve().as_uri()
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.on("request", lambda r: None if r.url == url or r.url.startswith("data:") else seen["requests"].append(r.url))
    page.goto(url)
    page.wait_for_load_state("load")
    return page, seen


def _check_clean(page, seen):
    assert seen["errors"] == [] and seen["requests"] == [] and seen["dialogs"] == []
    assert page.evaluate("window.__pwned") is None


def test_eval_report_in_a_browser(browser, evaluated):
    page, seen = _open(browser, evaluated["out"] / "report.html")
    rows = page.locator("#classes tbody tr")
    assert rows.count() == len(evaluated["names"])
    # escaping: the hostile names show as text
    texts = rows.locator("td:nth-child(2)").all_text_contents()
    assert sorted(texts) == sorted(evaluated["names"])
    assert page.locator("#classes script").count() == 0 and page.locator("#classes img").count() == 0
    # sorting: click the accuracy header (descending first), then again (ascending)
    header = page.locator("#classes th", has_text="accuracy %")
    header.click()
    acc = [float(v) for v in rows.evaluate_all("rs => rs.map(r => r.cells[2].dataset.v)")]
    assert acc == sorted(acc, reverse=True)
    header.click()
    acc = [float(v) for v in rows.evaluate_all("rs => rs.map(r => r.cells[2].dataset.v)")]
    assert acc == sorted(acc)
    page.locator("#classes th", has_text="class").first.click()
    assert rows.locator("td:nth-child(2)").all_text_contents() == sorted(evaluated["names"])
    # filter
    page.fill("input.filter", "green")
    assert page.locator("#classes tbody tr:visible").count() == 1
    page.fill("input.filter", "")
    # thumbnails of the worst mistakes load
    thumbs = page.locator("img.thumb")
    assert thumbs.count() >= 1
    widths = thumbs.evaluate_all("ims => ims.map(i => i.complete ? i.naturalWidth : 0)")
    assert all(w > 0 for w in widths), widths
    # the confusion heatmap renders (coloured pixels) and the pairs list is there
    painted = page.evaluate("""() => { const c = document.getElementById('heat');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] < 250 || d[i + 1] < 250) n++; return [c.width, n]; }""")
    assert painted[0] == len(evaluated["names"]) and painted[1] > 0
    assert page.locator("#heat").bounding_box()["width"] > 0
    assert page.locator("#pairs tbody tr").count() >= 1
    page.locator("#heat").hover()
    assert "true:" in page.locator("#tip").text_content()
    assert "broken.mp4" in page.locator("#failed").text_content()
    _check_clean(page, seen)
    shot = os.environ.get("HIERA_VIDEO_REPORT_SCREENSHOT")
    if shot:
        height = min(1800, page.evaluate("document.body.scrollHeight"))
        page.screenshot(path=shot, full_page=True, clip=dict(x=0, y=0, width=1280, height=height))
    page.close()


def test_400_class_and_run_reports_in_a_browser(browser, evaluated, tmp_path):
    from hiera_video.html_report import build_report

    big = tmp_path / "big"
    big.mkdir()
    _big_eval_folder(big, videos=4000, video=str(evaluated["root"] / "red0.mp4"))
    page, seen = _open(browser, build_report(big))
    assert page.locator("#classes tbody tr").count() == 400
    page.locator("#classes th", has_text="support").click()
    assert page.locator("#pairs tbody tr").count() == 50
    assert all(w > 0 for w in page.locator("img.thumb").evaluate_all("ims => ims.map(i => i.naturalWidth)"))
    page.fill("#zoom", "12")
    assert page.locator("#heat").bounding_box()["width"] == 400 * 12
    _check_clean(page, seen)
    page.close()

    run = tmp_path / "run"
    run.mkdir()
    _run_folder(run, evaluated)
    page, seen = _open(browser, build_report(run))
    assert page.locator("svg.chart").count() == 3
    assert page.locator("svg.chart polyline").count() >= 3
    assert page.locator("#classes tbody tr").count() == 3
    assert EVIL_IMG in page.locator("#bad-videos").text_content()
    assert page.locator("#reconstruction img").evaluate("i => i.naturalWidth") == 320
    _check_clean(page, seen)
    page.close()


@pytest.fixture(scope="module")
def ava_eval(tmp_path_factory):
    """An AVA eval folder as ``eval --dataset ava`` writes it (detections: the ground truth with
    shifted boxes and noisy scores, so some classes score worse), with the dataset at hand."""
    import random

    from hiera_video.ava.files import read_ava_csv
    from hiera_video.ava.dataset import AvaDataset
    from hiera_video.data.clip_spec import ClipSpec
    from hiera_video.ava.synthetic import make_synthetic_ava
    from hiera_video.ava.evaluate import write_ava_outputs
    from hiera_video.ava.metrics import evaluate_ava

    d = tmp_path_factory.mktemp("ava_report")
    ava = make_synthetic_ava(d / "ava", seed=1, num_videos=2, val_videos=1, seconds=5)
    ds = AvaDataset(ava.videos, ava.val_csv, ava.label_map, "val", "val", ClipSpec(num_frames=8, stride=4, crop_size=64))
    gt = read_ava_csv(ava.val_csv)
    rnd = random.Random(0)
    shifts = [rnd.choice([0, 0.3]) for _ in gt]
    det = [r._replace(x1=min(r.x1 + s, 0.9), x2=min(r.x2 + s, 1.0), score=rnd.random()) for r, s in zip(gt, shifts)]
    metrics = evaluate_ava(gt, det, ds.label_map, ava.val_exclusions)
    metrics.update(num_keyframes=len(ds), skipped=[], seconds=0.1)
    write_ava_outputs(d / "out", det, metrics, dict(split="val"), dataset=ds)
    return dict(out=d / "out", metrics=metrics)


def test_ava_eval_report_has_the_ap_table_and_keyframes_with_boxes(browser, ava_eval):
    html = (ava_eval["out"] / "report.html").read_text()
    assert "mAP" in html
    page, seen = _open(browser, ava_eval["out"] / "report.html")
    assert page.locator("#classes tbody tr").count() == len(ava_eval["metrics"]["per_class"])
    page.locator("#classes th", has_text="AP %").click()
    aps = [float(v) for v in page.locator("#classes tbody tr").evaluate_all("rs => rs.map(r => r.cells[3].dataset.v)")]
    assert aps == sorted(aps, reverse=True)
    frames = page.locator("#keyframes img.thumb")
    assert frames.count() >= 1
    assert all(w > 0 for w in frames.evaluate_all("ims => ims.map(i => i.naturalWidth)"))
    _check_clean(page, seen)
    page.close()
