"""Command line: rerun one chapter with a profile and overrides through papermill, then render its page.

Layer: the top (above book support): it reads profiles and runs chapters and training.

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


def chapters() -> dict[str, Path]:
    """The book's chapter notebooks by stem (01_training, ...)."""
    return {p.stem: p for p in sorted((profiles.repo_root() / "book").glob("[0-9][0-9]_*.md"))}


def chapter_path(name: str) -> Path:
    """The text notebook of chapter `name` (its stem, with or without the .md suffix); nothing outside book/."""
    known = chapters()
    stem = name[:-3] if name.endswith(".md") else name
    if stem not in known:
        raise SystemExit(f"error: no chapter {name!r}; chapters: {sorted(known)}")
    return known[stem]


def parse_overrides(pairs: list[list[str]]) -> dict:
    """[['widths', '[1, 2]']] -> {'widths': [1, 2]} (values read as YAML; a malformed one is a clear error)."""
    values = {}
    for key, value in pairs:
        try:
            values[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise SystemExit(f"error: -p {key} {value!r} is not a YAML value ({problem}); quote it as YAML, e.g. "
                             f"-p widths '[1, 2]' or -p epochs 4") from None
    return values


def page_config(out_dir: Path) -> Path:
    """A Jupyter Book config for one executed chapter: the book's own `_config.yml` (vendored MathJax, require.js
    and widget manager, the same extensions), with execution off and every path absolute."""
    root = profiles.repo_root()
    config = yaml.safe_load((root / "_config.yml").read_text())
    config["only_build_toc_files"] = False
    config["exclude_patterns"] = []
    config.setdefault("execute", {})["execute_notebooks"] = "off"   # papermill has executed it already
    sphinx = config.setdefault("sphinx", {})
    sphinx["config"]["html_static_path"] = [str(root / p) for p in sphinx["config"]["html_static_path"]]
    sphinx["local_extensions"] = {k: str(root / v) for k, v in sphinx.get("local_extensions", {}).items()}
    path = out_dir / "_page_config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def build_page(notebook: Path, out_dir: Path) -> Path:
    """Render an executed chapter as one HTML page with the book's config; return the page."""
    subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(notebook), "--config",
                    str(page_config(out_dir)), "--path-output", str(out_dir)], check=True)
    return out_dir / "_build" / "_page" / notebook.stem / "html" / f"{notebook.stem}.html"


def run_chapter(name: str, profile: str, overrides: dict, build: bool = True,
                out_dir: Path | None = None) -> Path:
    """Execute chapter `name` with papermill into runs/chapters/ (or `out_dir`) and optionally render its page."""
    import jupytext
    import papermill

    source = chapter_path(name)
    try:
        profiles.load_profile(profile, overrides)  # refuse bad profiles, keys and values before running anything
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    out_dir = out_dir or profiles.repo_root() / "runs" / "chapters"
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"-{store.config_hash(overrides)}" if overrides else ""
    stem = f"{source.stem}-{profile}{suffix}"
    notebook_in, notebook_out = out_dir / f"{stem}.input.ipynb", out_dir / f"{stem}.ipynb"
    jupytext.write(jupytext.read(source), notebook_in)
    papermill.execute_notebook(str(notebook_in), str(notebook_out), kernel_name="python3", cwd=str(source.parent),
                               parameters={"profile": profile, "overrides": overrides}, progress_bar=True)
    notebook_in.unlink()
    print(f"executed notebook: {notebook_out}")
    if build:
        print(f"page: {build_page(notebook_out, out_dir)}")
    return notebook_out


def training_cost(config) -> float:
    """A relative cost of training `config` (images seen x layers x width^2), for splitting work between processes."""
    return config.total_steps * config.batch_size * config.depth * config.width ** 2


def shard_runs(configs: list, index: int, count: int) -> list:
    """The `index`-th of `count` shards of similar total cost (greedy, costliest first; deterministic)."""
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in 0..{count - 1}; got {index}")
    loads, assigned = [0.0] * count, [[] for _ in range(count)]
    for config in sorted(configs, key=training_cost, reverse=True):
        target = loads.index(min(loads))
        loads[target] += training_cost(config)
        assigned[target].append(config)
    return assigned[index]


def train_profile(profile: str, overrides: dict, shard_spec: str = "0/1", threads: int | None = None) -> None:
    """Train every model the book needs under `profile` (one shard of them), skipping finished runs."""
    import torch

    from widedeep import train

    try:
        params = profiles.load_profile(profile, overrides)
        index, count = (int(part) for part in shard_spec.split("/"))
        # Shard only the unfinished runs, so that shards started together share the remaining work evenly.
        pending = [c for c in profiles.required_runs(params) if not train.is_complete(c, params.runs_dir)]
        todo = shard_runs(pending, index, count)
    except ValueError as error:
        raise SystemExit(f"error: {error} (shards are written INDEX/COUNT, e.g. 0/2)") from None
    if threads:
        torch.set_num_threads(threads)
    print(f"shard {shard_spec}: {len(pending)} unfinished models in all, {len(todo)} in this shard: "
          f"{[c.name() for c in todo]}")
    train.train_grid(todo, params.runs_dir)


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
        run_chapter(args.name, args.profile, parse_overrides(args.parameter), build=not args.no_build)


if __name__ == "__main__":
    main()
