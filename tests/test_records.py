"""Per-run records: read without a checkpoint, recomputed when missing or stale, refused when damaged or newer,
the run trained again (to the same numbers) when its checkpoint is gone, `status`, and the smoke book end to end."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from widedeep import cli, experiments, pipeline, profiles, records, store
from widedeep.analyses import origins, runs
from widedeep.measures.subspace import LayerPair
from widedeep.train import TrainConfig, train_or_load

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import compare_results  # noqa: E402

TINY = dict(depth=8, width=1, n_train=200, n_val=100, n_test=100, image_size=16, epochs=3, batch_size=50,
            lr=0.05, bn_momentum=0.1, eval_every=1, snapshot_epochs=(1,))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[TrainConfig, Path]:
    """A tiny run with a snapshot at epoch 1, trained once for the module (its store must not be altered)."""
    config, runs_dir = TrainConfig(**TINY), tmp_path_factory.mktemp("store")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    train_or_load(config, runs_dir, device="cpu", progress=False)
    torch.set_num_threads(previous)
    return config, runs_dir


@pytest.fixture
def copied(trained, tmp_path) -> tuple[TrainConfig, Path]:
    """A copy of the trained store this test may change."""
    config, runs_dir = trained
    shutil.copytree(runs_dir, tmp_path / "store")
    return config, tmp_path / "store"


def fresh(config: TrainConfig, runs_dir: Path, records_dir: Path) -> records.Run:
    """A Run as a new process sees it: nothing loaded."""
    return records.Run(config, runs_dir, records_dir, torch.device("cpu"))


def test_a_present_record_is_read_without_the_model_and_a_missing_one_is_computed(trained, tmp_path, one_thread):
    config, runs_dir = trained
    test = config.splits().test
    first = fresh(config, runs_dir, tmp_path / "rec")
    predictions = runs.run_predictions(first, test)
    assert first.model_loaded and predictions.shape == (len(test.labels),)
    [path] = (tmp_path / "rec").glob("preds-*.npz")
    again = fresh(config, runs_dir, tmp_path / "rec")
    assert np.array_equal(runs.run_predictions(again, test), predictions) and not again.model_loaded
    path.unlink()                                                   # missing: computed again, the same numbers
    third = fresh(config, runs_dir, tmp_path / "rec")
    assert np.array_equal(runs.run_predictions(third, test), predictions) and third.model_loaded and path.exists()


def test_the_architecture_gives_the_layers_without_a_checkpoint(tmp_path):
    run = fresh(TrainConfig(**TINY), tmp_path / "no-store", tmp_path / "rec")
    names = [layer.name for layer in run.layers()]
    assert names == [layer.name for layer in TrainConfig(**TINY).build_model().layers()] and not run.model_loaded
    assert not (tmp_path / "no-store").exists()


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_a_truncated_record_is_refused_naming_the_file_and_the_remedy(trained, tmp_path, suffix):
    config, runs_dir = trained
    run = fresh(config, runs_dir, tmp_path / "rec")
    value = {"a": np.arange(5.0)} if suffix == ".npz" else {"rows": [1, 2, 3]}
    run.record("planted", 1, {"k": 1}, lambda: value, suffix)
    path = run.record_path("planted", {"k": 1}, suffix)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(records.RecordError, match="damaged record") as error:
        fresh(config, runs_dir, tmp_path / "rec").record("planted", 1, {"k": 1}, lambda: value, suffix)
    assert str(path) in str(error.value) and "Delete it" in str(error.value) and "widedeep analyse" in str(error.value)


def test_a_stale_record_is_recomputed_and_a_newer_one_refused(trained, tmp_path, monkeypatch, one_thread):
    config, runs_dir = trained
    test = config.splits().test
    predictions = runs.run_predictions(fresh(config, runs_dir, tmp_path / "rec"), test)
    [path] = (tmp_path / "rec").glob("preds-*.npz")
    version = runs.VERSIONS["preds"]
    monkeypatch.setitem(runs.VERSIONS, "preds", version + 1)      # the code changed: the record is stale
    run = fresh(config, runs_dir, tmp_path / "rec")
    assert records.record_state(path, version + 1) == "stale"
    assert np.array_equal(runs.run_predictions(run, test), predictions) and run.model_loaded
    assert records.record_state(path, version + 1) == "current"
    monkeypatch.setitem(runs.VERSIONS, "preds", version)          # an older checkout reading a newer record
    with pytest.raises(records.RecordError, match="newer code") as error:
        runs.run_predictions(fresh(config, runs_dir, tmp_path / "rec"), test)
    assert str(path) in str(error.value)


def test_a_missing_record_of_a_run_whose_checkpoint_is_gone_retrains_it_to_the_same_numbers(
        trained, copied, tmp_path, capsys, one_thread):
    (config, runs_dir), (_, copy) = trained, copied
    test = config.splits().test
    predictions = runs.run_predictions(fresh(config, runs_dir, tmp_path / "rec"), test)
    shutil.rmtree(copy / config.name())
    for path in (tmp_path / "rec").glob("preds-*.npz"):
        path.unlink()
    run = fresh(config, copy, tmp_path / "rec")
    assert np.array_equal(runs.run_predictions(run, test), predictions)
    assert "training it again" in capsys.readouterr().err
    original = store.load_checkpoint(runs_dir / config.name() / "checkpoint.pt")["model"]
    retrained = store.load_checkpoint(copy / config.name() / "checkpoint.pt")["model"]
    assert all(torch.equal(original[k], retrained[k]) for k in original)


def test_a_snapshot_loads_its_weights_only_on_a_record_miss(trained, copied, tmp_path, one_thread):
    config, runs_dir = copied
    test = config.splits().test
    run = fresh(config, runs_dir, tmp_path / "rec")
    snap = run.snapshot(1)
    predictions = runs.run_predictions(snap, test)
    assert snap.model_loaded and not run.model_loaded
    assert list((tmp_path / "rec" / "snapshots" / "epoch-1").glob("preds-*.npz"))
    saved = store.load_checkpoint(runs_dir / config.name() / "snapshots" / "epoch-1.pt")["model"]
    assert all(torch.equal(saved[k], v) for k, v in snap.model.state_dict().items())
    final = run.model.state_dict()
    assert any(not torch.equal(saved[k], final[k]) for k in saved)        # other weights than the final ones
    again = fresh(config, runs_dir, tmp_path / "rec").snapshot(1)
    assert np.array_equal(runs.run_predictions(again, test), predictions) and not again.model_loaded
    with pytest.raises(ValueError, match="snapshots at epochs"):
        run.snapshot(2)
    (runs_dir / config.name() / "snapshots" / "epoch-1.pt").unlink()     # checkpoint kept, snapshot lost
    lost = fresh(config, runs_dir, tmp_path / "other").snapshot(1)
    with pytest.raises(FileNotFoundError, match="epoch-1.pt") as error:
        runs.run_predictions(lost, test)
    assert "rm -r" in str(error.value)


def test_a_pair_records_its_match_scores_not_its_grams(trained, tmp_path, one_thread):
    config, runs_dir = trained
    data = runs.cka_images(fresh(config, runs_dir, tmp_path / "rec"), 40)
    run = fresh(config, runs_dir, tmp_path / "rec")
    layers = [layer.name for layer in run.layers()][:4]
    eps = [0.2, 0.5]
    layout, scores, half = runs.run_match_scores(run, run.snapshot(1), data, 20, layers, eps)
    [path] = (tmp_path / "rec").glob("match-*.npz")
    with np.load(path) as stored:
        assert sorted(stored.files) == sorted(["names", "n_a", "scores", "half_eps", records.META_KEY])
    grams = runs.neuron_grams(run, run.snapshot(1), data, 20, layers)
    expected = [LayerPair.from_gram(g, n).scores(eps) for g, n in zip(grams["grams"], grams["n_a"])]
    assert np.array_equal(scores, np.array(expected)) and layout["names"] == layers
    meta = json.loads(str(np.load(path)[records.META_KEY]))
    assert meta["key"]["b"] == config.name() and meta["kind"] == "match"
    again = fresh(config, runs_dir, tmp_path / "rec")
    snap = again.snapshot(1)
    assert np.array_equal(runs.run_match_scores(again, snap, data, 20, layers, eps)[1], scores)
    assert not again.model_loaded and not snap.model_loaded


def test_chapter_8_reads_from_its_recorded_shares_what_it_read_from_the_grams():
    rng = np.random.default_rng(0)
    grams = [(x := rng.standard_normal((30, 5 + i))) @ x.T for i in range(4)] + [np.ones((30, 30))]
    shares = origins.stream_pc1_shares(grams)
    assert shares.shape == (5, 30) and np.isnan(shares[4]).all()        # a constant layer has no first PC
    inside = np.array([False, True, True, False, False])
    assert np.array_equal(origins.shares_contributions(shares, inside),
                          origins.pc1_contributions([g for g, i in zip(grams, inside) if i]))
    with pytest.raises(ValueError, match="no first PC"):
        origins.shares_contributions(shares, np.array([True, False, False, False, True]))


# ---------------------------------------------------------------------------------------------
# `widedeep status` on planted states
# ---------------------------------------------------------------------------------------------

def test_status_prints_each_state_of_a_planted_store(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.setenv("WIDEDEEP_RUNS", str(tmp_path / "store"))
    params = profiles.load_profile("smoke")
    trained_config, recorded_config, partial_config = experiments.seed_study_grid(params)[:1] + \
        experiments.cka_base_grid(params)[1:2] + experiments.block_models(params)[:1]
    assert len({trained_config, recorded_config, partial_config}) == 3
    for config in (trained_config, recorded_config):
        train_or_load(config, params.runs_dir, device="cpu", progress=False)
        records.write_training_record(params, config)
    shutil.rmtree(params.runs_dir / recorded_config.name())         # its record stays, its checkpoint is gone
    partial = params.runs_dir / partial_config.name()                # two epochs done of four, no checkpoint
    store.write_json(partial / "metrics.json", {"status": "running", "steps": 2 * partial_config.steps_per_epoch})
    stale = records.run_records_dir(params, trained_config) / "cka-0123.npz"
    store.write_npz(stale, cka=np.eye(2), **{records.META_KEY: np.array(json.dumps({"kind": "cka", "version": 0}))})
    listed = {f"{trained_config.name()}/cka-0123.npz": "cka", f"{recorded_config.name()}/cka-4567.npz": "cka"}
    store.write_json(params.results_dir / "03_block_structure.json", {"records": listed})
    cli.main(["status", "--profile", "smoke"])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  fmnist")}
    assert "trained" in lines[trained_config.name()] and "records stale; stale: cka-0123.npz" in \
        lines[trained_config.name()]
    assert "recorded" in lines[recorded_config.name()] and "records missing" in lines[recorded_config.name()]
    assert "partly trained" in lines[partial_config.name()]
    assert f"(epoch 2 of {partial_config.total_epochs})" in lines[partial_config.name()]
    skipped = set(experiments.runs_trainable_here(params)[1])    # bfloat16 side study where it is emulated
    missing = [c for c in experiments.required_runs(params)
               if c not in (trained_config, recorded_config, partial_config, *skipped)]
    assert missing and all(" missing " in lines[c.name()] for c in missing)
    assert all("skipped here" in lines[c.name()] for c in skipped)
    out = pipeline.status_report(params, pipeline.record_versions())
    assert f"checkpoint(s) are gone; retraining {recorded_config.name()}" in out


# ---------------------------------------------------------------------------------------------
# The smoke book end to end: built once with checkpoints, then from its records alone
# ---------------------------------------------------------------------------------------------

def results_files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (records included) by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# Chapters 7-9 again with a lenient detector, so that seeds have blocks and the records of their block analyses
# (block match, dominant datapoints, removal, snapshots, the block under every lens) are written and read too.
LENIENT = {"block_threshold": 0.5, "block_min_contrast": 0.0, "block_min_pc1": None}
BLOCK_CHAPTERS = ("07_subspace_match", "08_origins", "09_measures")


def build(params, out: Path) -> tuple[Path, Path]:
    """Every chapter at smoke, then Chapters 7-9 with blocks; copies of both results folders (JSON and npz)."""
    copies = []
    for chapters, overrides, tag in ((pipeline.CHAPTERS, {}, "default"), (BLOCK_CHAPTERS, LENIENT, "blocks")):
        for chapter in chapters:
            cli.run_chapter(chapter, "smoke", overrides, build=False, out_dir=out / "notebooks")
        copies.append(out / tag)
        shutil.copytree(params.results_dir, copies[-1], ignore=shutil.ignore_patterns("runs"))
    return copies[0], copies[1]


@pytest.mark.slow
def test_the_smoke_book_builds_from_its_records_alone_with_the_same_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("WIDEDEEP_RUNS", str(tmp_path / "store"))
    monkeypatch.setenv("WIDEDEEP_RAY", "0")
    params = profiles.load_profile("smoke")
    cli.train_profile("smoke", {}, in_process=True, progress=False)
    first = build(params, tmp_path / "first")                        # with checkpoints: records written
    written = results_files(records.records_dir(params))
    kinds = {kind for chapter in BLOCK_CHAPTERS for kind in
             store.read_json(first[1] / f"{chapter}.json")["records"].values()}
    assert {"match", "origins_pc1", "origins_removal", "lenses_self", "lenses_cross"} <= kinds
    assert any("/snapshots/epoch-" in path for path in written)
    checkpoints = [p for p in params.runs_dir.iterdir() if p.name != ".results"]
    assert len(checkpoints) >= len(experiments.required_runs(params)) - len(experiments.side_study_runs(params))
    for path in checkpoints:
        shutil.rmtree(path)
    second = build(params, tmp_path / "second")                      # from the records alone
    assert [p.name for p in params.runs_dir.iterdir()] == [".results"], "a model was loaded or trained"
    assert results_files(records.records_dir(params)) == written     # every record read, none written again
    for before, after in zip(first, second):
        assert compare_results.compare(before, after) == []
        for path in before.glob("*.json"):                           # and the same records read
            assert store.read_json(path).get("records") == store.read_json(after / path.name).get("records"), path
