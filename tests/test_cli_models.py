"""`hiera-video models` and `hiera-video benchmark`, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "hiera_video.cli.app", *args], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def test_models_table_and_json():
    rows = json.loads(run_cli("models", "--json").stdout)
    by_name = {r["name"]: r for r in rows}
    base = by_name["hiera_base_16x224"]
    assert base["params_m"] == 51.1 and base["input"] == "16x224x224"
    assert base["weights"]["mae_k400_ft_k400"]["top1"] == 84.0
    assert base["weights"]["mae_k400_ft_k400"]["license"] == "CC-BY-NC-4.0"
    assert by_name["hiera_nano_8x64"]["weights"] == {} and by_name["hiera_nano_8x64"]["note"]
    table = run_cli("models", "--kind", "video", "--no-mae").stdout
    assert "hiera_large_16x224" in table and "mae_hiera" not in table and "213.1M" in table


def test_benchmark_json():
    r = json.loads(run_cli("benchmark", "--model", "hiera_nano_8x64", "--batch-size", "2", "--iters", "2", "--dtype", "fp32", "--json").stdout)
    assert r["throughput"] > 0 and r["batch_size"] == 2 and r["unit"] == "clips" and r["dtype"] == "float32"
    assert r["peak_memory_mb"] > 0 and r["input"] == [3, 8, 64, 64]
    r = json.loads(run_cli("benchmark", "--model", "mae_hiera_nano_8x64", "--train", "--iters", "1", "--json").stdout)
    assert r["mode"] == "train" and r["throughput"] > 0


def test_errors_are_one_line():
    proc = run_cli("benchmark", "--model", "hiera_bse_16x224", check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "unknown model 'hiera_bse_16x224'" in proc.stderr and "hiera_base_16x224" in proc.stderr
    proc = run_cli("benchmark", "--model", "hiera_nano_8x64", "--dtype", "fp16", "--device", "cpu", check=False)
    assert proc.returncode != 0 and "fp16" in proc.stderr and "Traceback" not in proc.stderr
