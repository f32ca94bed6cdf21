"""Start-up of the CLI against ``python -c "import typer"``, measured side by side.

Runs every command once (to warm the file cache and write .pyc files), then ``--rounds`` rounds
of all commands in turn, and prints the median wall and CPU time (user + sys of the child) of
each, and the CPU ratio to ``import typer`` (goal: at most 1.5x, issue 24).

    python benchmarks/bench_startup.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

PY = sys.executable


def commands() -> dict[str, list[str]]:
    cli = shutil.which("hiera-video") or sys.exit("hiera-video is not on PATH: pip install . first")
    return {
        "python -c pass": [PY, "-c", "pass"],
        "python -c 'import typer'": [PY, "-c", "import typer"],
        "hiera-video --help": [cli, "--help"],
        "hiera-video eval --help": [cli, "eval", "--help"],
        "hiera-video --version": [cli, "--version"],
        "hiera-video eval --bogus": [cli, "eval", "--bogus"],
    }


def run(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cmds = commands()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cmds}
    for cmd in cmds.values():
        run(cmd, env)
    for _ in range(args.rounds):
        for name, cmd in cmds.items():
            times[name].append(run(cmd, env))
    typer_cpu = statistics.median(c for _, c in times["python -c 'import typer'"])
    print(f"{'command':28s} {'wall ms':>8s} {'CPU ms':>8s} {'CPU / import typer':>19s}")
    for name, ts in times.items():
        wall, cpu = statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts)
        print(f"{name:28s} {wall * 1e3:8.0f} {cpu * 1e3:8.0f} {cpu / typer_cpu:18.2f}x")


if __name__ == "__main__":
    main()
