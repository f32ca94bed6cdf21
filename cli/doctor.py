"""``hiera-video doctor``: versions, GPUs, decoders, caches and limits of this machine, with fixes."""

import typer

_STYLE = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]fail[/]"}


def doctor(as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON to stdout.")) -> int:
    """Check this machine: versions, CUDA/bf16, video decoders, disk, /dev/shm, threads, cached weights."""
    from rich.table import Column, Table

    from hiera_video.jobs.doctor import healthy, report, run_checks
    from hiera_video.report import console, json_text, safe

    rows = run_checks()
    if as_json:
        print(json_text(report(rows), indent=2))
    else:
        t = Table(Column("check", no_wrap=True), Column("value", overflow="fold"), Column("status", no_wrap=True),
                  Column("fix", overflow="fold"), title="hiera-video doctor", title_justify="left")
        for r in rows:
            t.add_row(safe(r.name), safe(r.value), _STYLE.get(r.status, safe(r.status)), safe(r.fix))
        console().print(t)
    return 0 if healthy(rows) else 1
