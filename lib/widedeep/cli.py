"""Command line: rerun one chapter with a profile and overrides through papermill, then render its page.

    widedeep chapter 01_training --profile cpu -p widths '[1, 2, 8]'
    widedeep train --profile cpu --shard 0/2 --threads 1   # and 1/2 in a second shell

Values are parsed as YAML (`'[1, 2, 8]'` is a list, `4` an int). Unknown chapters, profiles or
parameters are refused before anything runs. `train` trains (or finds) every model the book needs
under a profile, so the chapters only load; shards let several processes share the work.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

from widedeep import profiles, store


def chapter_path(name: str) -> Path:
    """The text notebook of chapter `name` (with or without its .md suffix)."""
    book = profiles.repo_root() / "book"
    path = book / (name if name.endswith(".md") else f"{name}.md")
    if not path.exists():
        known = sorted(p.stem for p in book.glob("[0-9][0-9]_*.md"))
        raise SystemExit(f"error: no chapter {name!r}; chapters: {known}")
    return path


def parse_overrides(pairs: list[list[str]]) -> dict:
    """[['widths', '[1, 2]']] -> {'widths': [1, 2]} (values read as YAML)."""
    return {key: yaml.safe_load(value) for key, value in pairs}


def run_chapter(name: str, profile: str, overrides: dict, build_page: bool = True) -> Path:
    """Execute chapter `name` with papermill into runs/chapters/ and optionally render it as one HTML page."""
    import jupytext
    import papermill

    source = chapter_path(name)
    try:
        profiles.load_profile(profile, overrides)  # refuse unknown profiles/parameters before running anything
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    out_dir = profiles.repo_root() / "runs" / "chapters"
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"-{store.config_hash(overrides)}" if overrides else ""
    stem = f"{source.stem}-{profile}{suffix}"
    notebook_in, notebook_out = out_dir / f"{stem}.input.ipynb", out_dir / f"{stem}.ipynb"
    jupytext.write(jupytext.read(source), notebook_in)
    papermill.execute_notebook(str(notebook_in), str(notebook_out), kernel_name="python3", cwd=str(source.parent),
                               parameters={"profile": profile, "overrides": overrides}, progress_bar=True)
    notebook_in.unlink()
    print(f"executed notebook: {notebook_out}")
    if build_page:
        subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(notebook_out),
                        "--path-output", str(out_dir)], check=True)
        html = out_dir / "_build" / "_page" / stem / "html" / f"{stem}.html"
        print(f"page: {html}")
    return notebook_out


def train_profile(profile: str, overrides: dict, shard_spec: str = "0/1", threads: int | None = None) -> None:
    """Train every model the book needs under `profile` (one shard of them), skipping finished runs."""
    import torch

    from widedeep import train

    try:
        params = profiles.load_profile(profile, overrides)
        index, count = (int(part) for part in shard_spec.split("/"))
        # Shard only the unfinished runs, so that shards started together share the remaining work evenly.
        pending = [c for c in profiles.required_runs(params) if not train.is_complete(c, params["runs_dir"])]
        todo = profiles.shard(pending, index, count)
    except ValueError as error:
        raise SystemExit(f"error: {error} (shards are written INDEX/COUNT, e.g. 0/2)") from None
    if threads:
        torch.set_num_threads(threads)
    print(f"shard {shard_spec}: {len(pending)} unfinished models in all, {len(todo)} in this shard: "
          f"{[c.name() for c in todo]}")
    train.train_grid(todo, params["runs_dir"])


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `widedeep` command."""
    parser = argparse.ArgumentParser(prog="widedeep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    chapter = sub.add_parser("chapter", help="rerun one chapter with a profile and parameter overrides")
    chapter.add_argument("name", help="chapter file stem, e.g. 01_training")
    chapter.add_argument("--profile", default="cpu", help=f"one of {profiles.available_profiles()}")
    chapter.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                         help="override one profile parameter (value parsed as YAML)")
    chapter.add_argument("--no-build", action="store_true", help="execute only; do not render the HTML page")
    trainer = sub.add_parser("train", help="train every model the book needs under a profile")
    trainer.add_argument("--profile", default="cpu", help=f"one of {profiles.available_profiles()}")
    trainer.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                         help="override one profile parameter (value parsed as YAML)")
    trainer.add_argument("--shard", default="0/1", help="INDEX/COUNT: train only this share of the models")
    trainer.add_argument("--threads", type=int, default=None, help="torch threads for this process")
    args = parser.parse_args(argv)
    if args.command == "train":
        train_profile(args.profile, parse_overrides(args.parameter), args.shard, args.threads)
    elif args.command == "chapter":
        run_chapter(args.name, args.profile, parse_overrides(args.parameter), build_page=not args.no_build)


if __name__ == "__main__":
    main()
