"""Command line: rerun one chapter with a profile and overrides through papermill, then render its page.

Layer: the top (above book support): it reads profiles and runs chapters and training.

    widedeep chapter 01_training --profile cpu -p widths '[1, 2, 8]'
    widedeep train --profile cpu                      # every unfinished model, one per core (Ray)
    widedeep train --profile paper --address auto     # on a running Ray cluster sharing the run store

Values are parsed as YAML (`'[1, 2, 8]'` is a list, `4` an int). Unknown chapters, profiles or
parameters are refused before anything runs. `train` trains (or finds) every model the book needs
under a profile, so the chapters only load (`widedeep.grid`: a local loopback-only Ray instance by
default, or the cluster at --address; a progress bar over the grid and one line per finished model).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

from widedeep import experiments, profiles, records, store


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


def train_profile(profile: str, overrides: dict, address: str | None = None, threads: int = 1,
                  in_process: bool = False, progress: bool = True, hours: float | None = None,
                  analysis_share: float = 0.15, chapters: list[str] | None = None) -> None:
    """Train every model the book needs under `profile` that the run store lacks, through the grid engine.

    With `chapters`, only the runs those chapters read (a few chapters complete before the rest). With `hours`, only the analysis groups that this machine's measured throughput says will finish in
    that time start, and every run stops cleanly at its first checkpoint past the deadline.
    """
    import time

    from widedeep import grid, pipeline
    from widedeep.train import check_precision, resolve_precision

    started = time.time()
    try:
        params = profiles.load_profile(profile, overrides)
        check_precision(resolve_precision(params.recipe.precision))  # the profile's own precision must run here
        required, skipped = experiments.runs_trainable_here(params)
        required = [c for c in required if not records.has_training_record(params, c)]  # recorded: nothing to do
        if chapters:
            wanted = set(pipeline.runs_of_chapters(params, chapters))
            required = [c for c in required if c in wanted]
        todo = grid.unfinished(required, params.runs_dir)
        engine = grid.choose_engine("in-process" if in_process else "auto", len(todo), address)
        grid.task_resources({"CPU": threads}, threads, params.recipe.gpus_per_model)  # refuse bad values up front
        deadline = None
        if hours is not None:
            workers = 1 if engine == "in-process" else pipeline.available_workers(threads)
            print(f"measuring this machine's training throughput ({store.hardware()}) ...", flush=True)
            chosen = pipeline.plan(params, todo, hours, workers, analysis_share, threads)
            deadline = started + hours * 3600 * (1 - analysis_share)
            print(f"--hours {hours:g}: {len(chosen.chosen)} of {len(chosen.chosen) + len(chosen.left)} groups fit "
                  f"({len(chosen.configs)} runs, about {chosen.estimate_s() / 3600:.2f} h on {workers} workers); "
                  f"{chosen.core_hours_left():.2f} core-hours of training left in all at this machine's rates",
                  flush=True)
            for group in chosen.left:
                print(f"  left for a later sitting: {group.name} ({len(group.configs)} runs)", flush=True)
            todo = chosen.configs
    except (ValueError, RuntimeError) as error:
        raise SystemExit(f"error: {error}") from None
    where = f"the Ray cluster at {address}" if address else (
        f"a local Ray instance ({grid.available_cores()} cores, loopback only)" if engine == "ray" else "this process")
    print(f"profile {profile}: {len(required)} models without records, {len(required) - len(grid.unfinished(required, params.runs_dir))} "
          f"trained in {params.runs_dir}, {len(todo)} to train now" + (f" on {where}" if todo else ""), flush=True)
    if skipped:
        print(f"skipped {len(skipped)} bfloat16 runs of Chapter 1's precision side study: this machine has no native "
              f"bfloat16 (they train where it does; `widedeep status` lists them)", flush=True)
    if in_process and threads:
        import torch

        torch.set_num_threads(threads)
    for config in todo:
        records.stamp_training(params, config, pipeline.training_stamp(params))
    try:
        grid.run_grid(todo, params.runs_dir, address=address, engine=engine, threads=threads,
                      gpus_per_model=params.recipe.gpus_per_model, progress=progress, lines=True, deadline=deadline)
    except grid.GridError as error:
        raise SystemExit(f"error: {error}") from None


def analyse_profile(profile: str, overrides: dict, threads: int = 1, chapters: bool = True,
                    progress: bool = True) -> None:
    """Write the records of every trained run that lacks them, then run every chapter whose runs are all there."""
    from widedeep import pipeline

    try:
        params = profiles.load_profile(profile, overrides)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    done = pipeline.analyse_runs(params, threads, progress)
    print(f"profile {profile}: per-run records of {len(done)} trained runs in {records.records_dir(params)}",
          flush=True)
    if not chapters:
        return
    for chapter, lacking in pipeline.chapters_ready(params).items():
        if lacking:
            print(f"{chapter}: waits for {len(lacking)} runs (first: {lacking[0].name()})", flush=True)
            continue
        print(f"{chapter}: writing its records and results ...", flush=True)
        run_chapter(chapter, profile, overrides, build=False)


def status_profile(profile: str, overrides: dict, measure: bool = False) -> None:
    """Print every run's training and records state and what is left."""
    from widedeep import pipeline

    try:
        params = profiles.load_profile(profile, overrides)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    print(pipeline.status_report(params, pipeline.record_versions(), measure=measure))
    size = pipeline.records_size(params)
    print(f"records: {size / 2 ** 20:.1f} MiB in {records.records_dir(params)}")


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
    trainer.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                         help="join this running Ray cluster (its machines must share the run store path) instead "
                              "of starting a local one")
    trainer.add_argument("--threads", type=int, default=1, help="torch threads per model (default 1: one model a core)")
    trainer.add_argument("--in-process", action="store_true",
                         help="train one model after another in this process, without Ray")
    trainer.add_argument("--no-progress", action="store_true", help="no progress bar (the per-model lines stay)")
    trainer.add_argument("--hours", type=float, default=None,
                         help="start only the analysis groups this machine finishes in HOURS (measured throughput); "
                              "runs stop at their first checkpoint past the deadline and resume next time")
    trainer.add_argument("--analysis-share", type=float, default=0.15,
                         help="with --hours: the share of the time kept for `widedeep analyse` and the commit")
    trainer.add_argument("--chapters", nargs="+", default=None, metavar="CHAPTER",
                         help="train only the runs these chapters read (file stems, e.g. 02_cka 10_vit), so that "
                              "they complete first")
    analyser = sub.add_parser("analyse", help="write the records of every trained run and chapter that lacks them")
    analyser.add_argument("--profile", default="cpu", help=f"one of {profiles.available_profiles()}")
    analyser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                          help="override one profile parameter (value parsed as YAML)")
    analyser.add_argument("--threads", type=int, default=1, help="torch threads per analysis task")
    analyser.add_argument("--runs-only", action="store_true", help="per-run records only; run no chapter")
    analyser.add_argument("--no-progress", action="store_true", help="no progress bar")
    reporter = sub.add_parser("status", help="what the profile's run has trained and recorded, and what is left")
    reporter.add_argument("--profile", default="cpu", help=f"one of {profiles.available_profiles()}")
    reporter.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                          help="override one profile parameter (value parsed as YAML)")
    reporter.add_argument("--measure", action="store_true",
                          help="measure this machine's throughput (a few seconds per architecture) for the hours left")
    args = parser.parse_args(argv)
    if args.command == "train":
        train_profile(args.profile, parse_overrides(args.parameter), args.address, args.threads, args.in_process,
                      not args.no_progress, args.hours, args.analysis_share, args.chapters)
    elif args.command == "analyse":
        analyse_profile(args.profile, parse_overrides(args.parameter), args.threads, not args.runs_only,
                        not args.no_progress)
    elif args.command == "status":
        status_profile(args.profile, parse_overrides(args.parameter), args.measure)
    elif args.command == "chapter":
        run_chapter(args.name, args.profile, parse_overrides(args.parameter), build=not args.no_build)


if __name__ == "__main__":
    main()
