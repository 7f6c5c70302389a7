"""The pipeline in pieces: chapter runs, analysis groups, the plan for a sitting, deadlines, status."""

import importlib.util
import subprocess
import sys
import time

import pytest
import torch

from widedeep import experiments, grid, pipeline, profiles, records, store
from widedeep.train import TrainConfig, is_complete, train_or_load

TINY = dict(depth=8, width=1, n_train=200, n_val=100, n_test=100, image_size=16, epochs=4, batch_size=50,
            lr=0.05, eval_every=1)


def test_the_chapters_read_every_required_run_and_no_other():
    for name in ("smoke", "cpu"):
        profile = profiles.load_profile(name)
        read = {c for configs in pipeline.chapter_runs(profile).values() for c in configs}
        assert read == set(experiments.required_runs(profile)), name


def test_a_few_chapters_read_the_union_of_their_runs():
    profile = profiles.load_profile("smoke")
    runs = pipeline.chapter_runs(profile)
    both = pipeline.runs_of_chapters(profile, ["02_cka", "10_vit"])
    assert set(both) == set(runs["02_cka"]) | set(runs["10_vit"]) and len(both) == len(set(both))
    assert set(both) < set(experiments.required_runs(profile))
    with pytest.raises(ValueError, match="no chapter 'cka'"):
        pipeline.runs_of_chapters(profile, ["cka"])


def test_groups_cover_each_run_once_and_keep_a_seed_study_together():
    profile = profiles.load_profile("smoke")
    found = pipeline.groups(profile)
    members = [c for g in found for c in g.configs]
    assert len(members) == len(set(members)) and set(members) == set(experiments.required_runs(profile))
    study = next(g for g in found if g.name == "seed study")
    assert set(study.configs) == set(experiments.seed_study_grid(profile))
    only_some = pipeline.groups(profile, experiments.seed_study_grid(profile)[:1])
    assert [len(g.configs) for g in only_some] == [1]


def test_makespan_is_the_longest_first_schedule():
    assert pipeline.makespan([3, 3, 2, 2, 2], 2) == 7  # 3+2+2 | 3+2
    assert pipeline.makespan([5, 1, 1], 2) == 5
    assert pipeline.makespan([1, 1, 1, 1], 1) == 4


def test_the_plan_takes_whole_groups_that_fit_and_leaves_the_rest(monkeypatch):
    profile = profiles.load_profile("smoke")
    configs = experiments.required_runs(profile)
    study = set(experiments.seed_study_grid(profile))
    # The seed study's runs cost an hour each, every other run a minute.
    monkeypatch.setattr(pipeline, "seconds_left",
                        lambda c, runs_dir, threads=1, measure=True, realized=None: 3600.0 if c in study else 60.0)
    plan = pipeline.plan(profile, configs, hours=0.5, workers=2, analysis_share=0.0)
    assert not study & set(plan.configs)                      # the study does not fit in half an hour ...
    assert any(g.name == "seed study" for g in plan.left)     # ... and is left whole, not split
    assert plan.estimate_s() <= 0.5 * 3600
    assert set(plan.configs) | {c for g in plan.left for c in g.configs} == set(configs)
    roomy = pipeline.plan(profile, configs, hours=4, workers=2, analysis_share=0.25)
    assert study <= set(roomy.configs) and not roomy.left
    with pytest.raises(ValueError, match="--hours must be positive"):
        pipeline.plan(profile, configs, hours=0, workers=2)


def test_estimates_use_the_rate_finished_runs_really_reached_here(tmp_path, monkeypatch):
    """A finished run's images over its wall time (evaluation included) overrides the few timed steps, for its
    architecture on this machine only."""
    monkeypatch.setenv("WIDEDEEP_RUNS", str(tmp_path / "store"))
    torch.set_num_threads(1)
    config = TrainConfig(**TINY, seed=0)
    other = TrainConfig(**{**TINY, "width": 2}, seed=0)
    runs_dir = tmp_path / "store"
    train_or_load(config, runs_dir)
    metrics = store.read_json(runs_dir / config.name() / "metrics.json")
    rate = metrics["steps"] * config.batch_size / metrics["wall_time_s"]
    realized = pipeline.realized_rates(runs_dir)
    assert list(realized.values()) == [pytest.approx(rate)]
    assert pipeline.throughput(config, 1, measure=False, realized=realized) == pytest.approx(rate)
    assert pipeline.throughput(other, 1, measure=False, realized=realized) is None   # another architecture
    assert pipeline.throughput(config, 2, measure=False, realized=realized) is None  # other threads
    half = TrainConfig(**{**TINY, "epochs": 8}, seed=1)
    assert pipeline.seconds_left(half, runs_dir, 1, measure=False, realized=realized) == pytest.approx(
        grid.images_to_train(half) / rate)
    (runs_dir / "broken").mkdir()
    (runs_dir / "broken" / "metrics.json").write_text("{not json")
    assert pipeline.realized_rates(runs_dir) == realized                             # a damaged run gives no rate


def _clock_past_deadline_once_trained(run_dir):
    """A clock before the deadline (0) until the run has a first epoch on disk, past it (200) after."""
    return lambda: 200.0 if (run_dir / "metrics.json").exists() else 0.0


def test_a_deadline_stops_a_run_within_one_epoch_and_it_resumes_exactly(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    config = TrainConfig(**TINY)
    straight = train_or_load(config, tmp_path / "straight", device="cpu", progress=False)
    monkeypatch.setattr(grid, "now", _clock_past_deadline_once_trained(tmp_path / "pieces" / config.name()))
    stopped = grid.run_grid([config], tmp_path / "pieces", engine="in-process", progress=False, deadline=100.0)
    assert stopped[0].stopped_at == (1, config.total_epochs)
    assert not is_complete(config, tmp_path / "pieces")
    assert grid.images_done(config, tmp_path / "pieces") == config.steps_per_epoch * config.batch_size
    monkeypatch.undo()
    grid.run_grid([config], tmp_path / "pieces", engine="in-process", progress=False)
    resumed = train_or_load(config, tmp_path / "pieces", device="cpu", progress=False, allow_train=False)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_a_run_that_waited_past_its_deadline_does_not_start(tmp_path):
    config = TrainConfig(**TINY)
    done = grid._train_until(config, tmp_path, "cpu", time.time() - 1, "here")
    assert done.stopped_at == (0, config.total_epochs) and not (tmp_path / config.name()).exists()


def test_train_hours_starts_nothing_that_cannot_finish(tmp_path):
    env = {"WIDEDEEP_RUNS": str(tmp_path / "store"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "widedeep.cli", "train", "--profile", "smoke", "--hours", "0.00001",
                          "--in-process", "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "0 of" in out.stdout and "left for a later sitting" in out.stdout
    assert "0 to train now" in out.stdout
    assert not any((tmp_path / "store").glob("fmnist*/checkpoint.pt"))
    assert (tmp_path / "throughput.json").exists()   # the rates it measured are kept for next time


def test_status_names_each_state(tmp_path, monkeypatch):
    monkeypatch.setenv("WIDEDEEP_RUNS", str(tmp_path / "store"))
    profile = profiles.load_profile("smoke", {"epochs": 2})
    trained, partly, *rest = experiments.training_grid(profile)
    grid.run_grid([trained], profile.runs_dir, engine="in-process", progress=False)
    monkeypatch.setattr(grid, "now", _clock_past_deadline_once_trained(profile.runs_dir / partly.name()))
    grid.run_grid([partly], profile.runs_dir, engine="in-process", progress=False, deadline=100.0)
    rows = {r.config.name(): r for r in pipeline.status(profile, pipeline.record_versions())}
    assert (rows[trained.name()].training, rows[trained.name()].records) == ("trained", "missing")
    assert (rows[partly.name()].training, rows[partly.name()].epochs_done) == ("partly trained", 1)
    assert all(rows[c.name()].training == "missing" for c in rest)
    records.load_runs(profile, [trained])           # writes its training record
    (profile.runs_dir / trained.name() / "checkpoint.pt").unlink()
    rows = {r.config.name(): r for r in pipeline.status(profile, pipeline.record_versions())}
    assert (rows[trained.name()].training, rows[trained.name()].records) == ("recorded", "complete")
    report = pipeline.status_report(profile, pipeline.record_versions())
    line = next(line for line in report.splitlines() if partly.name() in line)
    assert "partly trained" in line and "(epoch 1 of 2)" in line and "1 recorded" in report
    # the compute behind the records: the recorded run's own training wall time, on the machine it finished on
    wall = records.load_runs(profile, [trained])[0].metrics["wall_time_s"]
    (spent,) = pipeline.compute_spent(profile)
    assert spent["runs"] == 1 and spent["hours"] == pytest.approx(wall / 3600) and spent["hardware"].startswith(
        ("CPU", "CUDA"))
    summary = pipeline.run_summary(profile)
    assert f"records: 1 of {len(rows)}" in summary and f"{wall / 3600:.1f} core-hours" in summary
    assert "compute spent: " in report and "1 runs" in report


def test_only_the_pipeline_trains_what_a_chapter_lacks(tmp_path, monkeypatch):
    """load_runs refuses an untrained run (training nothing); pipeline.ensure trains a chapter's runs once, stamped."""
    monkeypatch.setenv("WIDEDEEP_RUNS", str(tmp_path / "store"))
    monkeypatch.setenv("WIDEDEEP_RAY", "0")
    profile = profiles.load_profile("smoke", {"epochs": 1, "cross_seeds": [0]})
    needed = pipeline.chapter_runs(profile)["02_cka"]
    with pytest.raises(FileNotFoundError, match="widedeep train --profile smoke"):
        records.load_runs(profile, needed)
    assert not any(is_complete(c, profile.runs_dir) for c in needed)         # the refusal trained nothing
    assert set(pipeline.ensure(profile, "02_cka", progress=False)) == set(needed)
    assert all(records.has_training_record(profile, c) for c in needed)
    assert all((profile.runs_dir / c.name() / "protocol.json").exists() for c in needed)   # as `train` stamps
    assert pipeline.ensure(profile, "02_cka", progress=False) == []           # nothing left to train
    assert [run.name for run in records.load_runs(profile, needed)] == [c.name() for c in needed]


def _run_summary_tool():
    spec = importlib.util.spec_from_file_location("run_summary", profiles.repo_root() / "tools" / "run_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_states_the_published_runs_compute_as_its_records_say():
    """README.md's paragraph on the cpu run is what `pipeline.run_summary` computes from the committed records:
    a records commit without `make records` fails here."""
    text, expected = _run_summary_tool().readme_now("cpu")
    assert text == expected, "README.md's cpu run summary is stale: run `make records`"


def test_the_summary_replaces_only_the_text_between_its_markers():
    tool = _run_summary_tool()
    start, end = tool.markers("cpu")
    text = f"intro\n{start}\nold words\n{end}\nafter {start[:4]}\n"
    assert tool.with_summary(text, "cpu", "new words") == f"intro\n{start}\nnew words\n{end}\nafter {start[:4]}\n"
    with pytest.raises(ValueError, match="exactly one"):
        tool.with_summary("no markers here", "cpu", "new words")
    with pytest.raises(ValueError, match="exactly one"):
        tool.with_summary(f"{end}\n{start}\n", "cpu", "new words")
