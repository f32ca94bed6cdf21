"""Every ``hiera-video`` command line in the fenced shell blocks of README.md and docs/*.md
is parsed by the real CLI (options, arguments, types, required options; the job never runs),
so the documentation cannot drift from the options. Links between the pages must resolve,
and the README's first lines stay the two commands CI runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from hiera_video.cli import app as app_module

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
SEPARATORS = {"&&", "||", "|", ";", "&"}


def command_lines(text: str):
    """(line number, command line) of every line of a fenced shell block, continuation
    lines (trailing backslash) joined and comment-only lines dropped."""
    block, pending, start = None, "", 0  # block: the open fence's language, None outside
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"\s*```(\S*)", line)
        if fence:
            block = fence.group(1) if block is None else None
            continue
        if block not in SHELL_BLOCKS:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full, pending = (pending + line).strip(), ""
        if full and not full.startswith("#"):
            yield start, full


def hiera_invocations(line: str):
    """The argument lists of every ``hiera-video`` call on a shell line: ``a && b``, pipes,
    redirections, ``VAR=1 hiera-video ...`` and ``torchrun ... $(which hiera-video) ...``."""
    line = line.replace("$(which hiera-video)", "hiera-video")
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    segment: list[str] = []
    for token in [*lexer, ";"]:
        if token not in SEPARATORS:
            segment.append(token)
            continue
        if "hiera-video" in segment:
            args = segment[segment.index("hiera-video") + 1:]
            redirect = next((i for i, a in enumerate(args) if a in {">", ">>", "<", "2>"}), len(args))
            yield args[:redirect]
        segment = []


def documented_commands():
    found = []
    for page in PAGES:
        for number, line in command_lines(page.read_text(encoding="utf-8")):
            for args in hiera_invocations(line):
                found.append(pytest.param(args, id=f"{page.relative_to(ROOT)}:{number}"))
    return found


COMMANDS = documented_commands()


def cli():
    command = typer.main.get_command(app_module.app)
    app_module.harden(command)  # as main() does: the same checks as a real call
    return command


def parse(group, args: list[str]) -> str:
    """Parse ``hiera-video ARGS`` down to the subcommand's context; returns its name."""
    ctx = group.make_context("hiera-video", list(args))
    leading = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args  # the command name
    name, command, rest = group.resolve_command(ctx, [*leading, *ctx.args])
    command.make_context(name, rest, parent=ctx)
    return name


@pytest.mark.parametrize("args", COMMANDS)
def test_documented_command_parses(args, request):
    where = request.node.callspec.id
    try:
        parse(cli(), args)
    except Exception as e:  # click's usage errors: unknown option, bad value, missing argument
        message = e.format_message() if hasattr(e, "format_message") else repr(e)
        pytest.fail(f"{where}: `hiera-video {shlex.join(args)}` does not parse: {message}")


def test_every_command_is_documented_with_an_example():
    group = cli()
    shown = {next(a for a in p.values[0] if not a.startswith("-")) for p in COMMANDS}  # after --debug
    assert set(group.commands) <= shown, f"commands without a docs example: {sorted(set(group.commands) - shown)}"
    readme = [p.values[0][0] for p in COMMANDS if p.id.startswith("README.md:")]
    assert {"demo", "predict", "eval", "finetune"} <= set(readme), readme


def test_the_checker_fails_on_a_made_up_option():
    text = "```bash\nFOO=1 hiera-video predict clip.mp4 --views 5x3 \\\n    --no-such-option 3 | head\n```\n"
    [(number, line)] = list(command_lines(text))
    [args] = list(hiera_invocations(line))
    assert number == 2 and args == ["predict", "clip.mp4", "--views", "5x3", "--no-such-option", "3"]
    with pytest.raises(Exception, match="no-such-option"):
        parse(cli(), args)
    with pytest.raises(Exception):  # a required option left out
        parse(cli(), ["score-ava", "--json"])


def test_readme_first_lines_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    setup, tests = readme[3], readme[4]
    assert readme[2] == "```bash" and setup.endswith("pip install . && hiera-video demo"), readme[:6]
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines(), tests
    assert len(readme) <= 200, len(readme)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_between_pages_resolve():
    broken = []
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            path = (page.parent / target) if target else page
            if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
                broken.append(f"{page.relative_to(ROOT)}: {target}#{anchor}")
    assert not broken, broken
