"""``hiera-video ava-proposals IN.pkl OUT.csv --allow-pickle``: an mmaction2 proposals pickle -> the SlowFast CSV others read safely."""

from pathlib import Path

import typer


def ava_proposals(
    pickle_file: Path = typer.Argument(..., help="mmaction2 proposals pickle {'video_id,timestamp': [N, 5] boxes}."),
    out_csv: Path = typer.Argument(..., help="SlowFast CSV to write: video_id,timestamp,x1,y1,x2,y2,,score."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Required: unpickling can run arbitrary code, so only convert files you trust."),
) -> int:
    """Convert an AVA proposals pickle (mmaction2) to a SlowFast proposals CSV (needs --allow-pickle)."""
    from hiera_video.ava.files import convert_proposals_pickle
    from hiera_video.report import check_output, console, safe

    check_output(out_csv, "OUT_CSV", inputs=[("PICKLE_FILE", pickle_file)])
    n = convert_proposals_pickle(pickle_file, out_csv, allow_pickle=allow_pickle)
    console().print(f"wrote {n} proposals to {safe(out_csv)}", highlight=False)
    return 0
