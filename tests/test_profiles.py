"""Typed profiles: every published profile is valid and keeps its run names; bad profiles are refused clearly."""

import json
from dataclasses import fields
from pathlib import Path

import pytest

from widedeep import cli, experiments, profiles
from widedeep.profiles import ProfileError
from widedeep.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
RUN_NAMES = Path(__file__).parent / "data" / "run_names.json"


def test_every_published_profile_keeps_its_run_names():
    """The run names (config hashes) of every model each profile needs, pinned in tests/data/run_names.json.

    First computed at 433138d from the untyped profiles (the typed ones reproduced them exactly), then
    re-pinned when issue 16 gave the profiles a second arm and the cpu profile its bfloat16 grid trained
    to interpolation; smoke, paper and paper-fmnist kept every earlier name. Re-pinned again when Chapter 8
    gave the seed study weight snapshots (a config field, so those seeds were renamed) and added the
    regulariser's runs: no store of any profile but smoke held those models. Re-pinned on 2026-12-06 when
    every shipped profile pinned float32 (published runs) and a bfloat16 side study (smoke kept every name;
    its `auto` reference precision had made its names depend on the machine), and for cpu when the
    protocol (book/protocol.md, issue 25) fixed the published run's grid: no model of that run had been
    trained. Change it only on purpose.
    """
    pinned = json.loads(RUN_NAMES.read_text())
    assert set(pinned) == set(profiles.available_profiles())
    for name, names in pinned.items():
        assert [c.name() for c in experiments.required_runs(profiles.load_profile(name))] == names, name


def test_every_profile_builds_a_valid_grid():
    for name in profiles.available_profiles():
        profile = profiles.load_profile(name)
        grid = experiments.training_grid(profile)  # constructing a TrainConfig validates depth, width, sizes
        expected = (len(experiments.architectures(profile)) * len(profile.grid.n_trains) * len(profile.grid.seeds)
                    + len(profile.grid.transition_cells) * len(profile.grid.transition_seeds))
        assert len(grid) == expected and len({c.name() for c in grid}) == expected


def test_the_recipe_covers_every_training_option():
    """Every TrainConfig field but the grid coordinates is a profile key, so none silently takes its default."""
    options = {f.name for f in fields(TrainConfig)} - set(experiments.GRID_COORDINATES) - set(experiments.EXPERIMENT_OPTIONS)
    assert options <= {f.name for f in fields(profiles.Recipe)}
    assert not set(experiments.EXPERIMENT_OPTIONS) & {f.name for f in fields(profiles.Recipe)}


def test_sections_map_keys_one_to_one_and_values_round_trip():
    profile = profiles.load_profile("cpu")
    assert profile.detector.threshold == profile.values()["block_threshold"]
    assert profile.cka.examples == profile.values()["cka_examples"]
    assert set(profile.values()) == set(profiles.KEYS)
    assert "results_dir" not in profile.public() and profile.public()["profile"] == "cpu"


def test_the_run_store_is_outside_the_work_tree_unless_widedeep_runs_says_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("WIDEDEEP_RUNS", raising=False)
    assert profiles.load_profile("cpu").runs_dir == Path.home() / ".cache" / "widedeep" / "runs"
    monkeypatch.setenv("WIDEDEEP_RUNS", str(tmp_path / "store"))
    assert profiles.load_profile("smoke").runs_dir == tmp_path / "store"


def test_every_shipped_profile_pins_both_precisions_and_publishes_float32():
    for name in profiles.available_profiles():
        profile = profiles.load_profile(name)
        assert profile.recipe.precision == "float32", name            # no run name depends on the machine
        assert profile.grid.reference_precision in ("float32", "bfloat16"), name


def test_the_bfloat16_side_study_is_skipped_where_bfloat16_is_emulated(monkeypatch):
    profile = profiles.load_profile("smoke")
    side = experiments.side_study_runs(profile)
    assert side and {c.precision for c in side} == {"bfloat16"}
    monkeypatch.setattr(experiments, "native_bfloat16", lambda device=None: False)
    trainable, skipped = experiments.runs_trainable_here(profile)
    assert skipped == side and not set(skipped) & set(trainable)
    assert set(trainable) | set(skipped) == set(experiments.required_runs(profile))
    monkeypatch.setattr(experiments, "native_bfloat16", lambda device=None: True)
    assert experiments.runs_trainable_here(profile) == (experiments.required_runs(profile), [])


def test_overrides_replace_values_and_reshape_the_grid():
    profile = profiles.load_profile("smoke", {"widths": [1, 2, 4], "seeds": [0, 1]})
    assert profile.grid.widths == [1, 2, 4]
    assert len(experiments.training_grid(profile)) == len(experiments.architectures(profile)) * len(profile.grid.n_trains) * 2


def test_paper_fmnist_extends_paper_and_states_only_what_differs():
    text = (REPO / "book" / "profiles" / "paper-fmnist.yaml").read_text()
    assert "extends: paper" in text and "epochs" not in text
    paper, fmnist = profiles.load_profile("paper").values(), profiles.load_profile("paper-fmnist").values()
    differ = {k for k in paper if paper[k] != fmnist[k]}
    assert differ == {"dataset", "image_size", "n_trains", "results_dir", "errors_n_train"}


def test_unknown_profile_and_parameter_are_refused():
    with pytest.raises(ProfileError, match="unknown profile 'laptop'.*smoke"):
        profiles.load_profile("laptop")
    with pytest.raises(ProfileError, match="unknown parameter 'widhts'.*did you mean 'widths'"):
        profiles.load_profile("smoke", {"widhts": [1]})
    with pytest.raises(ProfileError, match="'widths' must be a list of numbers; got 2"):
        profiles.load_profile("smoke", {"widths": 2})


def test_required_runs_cover_every_chapter_without_repeats():
    profile = profiles.load_profile("cpu")
    required = experiments.required_runs(profile)
    assert len(set(required)) == len(required)
    for group in (experiments.training_grid(profile), experiments.cka_base_grid(profile),
                  experiments.seed_study_grid(profile), list(experiments.wide_and_deep(profile))):
        assert set(group) <= set(required)
    assert any(not c.residual for c in required)  # Chapter 2's plain control
    errors = experiments.errors_grid(profile)  # Chapter 6's populations
    assert set(errors["wide"]) | set(errors["deep"]) <= set(required)


@pytest.mark.parametrize("name", ["smoke", "cpu", "paper", "paper-fmnist"])
def test_error_populations_have_twice_as_many_seeds_on_the_null_side(name):
    profile = profiles.load_profile(name)
    grid = experiments.errors_grid(profile)
    assert len(grid["deep"]) == 2 * len(grid["wide"]) >= 4
    assert len({c.n_train for side in grid.values() for c in side}) == 1
    wide, deep = grid["wide"][0], grid["deep"][0]
    assert wide.width > deep.width and wide.depth < deep.depth


def test_cli_train_refuses_bad_requests_before_training(capsys):
    with pytest.raises(SystemExit, match="unknown parameter"):
        cli.main(["train", "--profile", "smoke", "-p", "widhts", "[1]"])
    with pytest.raises(SystemExit, match="gpus_per_model"):
        cli.main(["train", "--profile", "smoke", "-p", "gpus_per_model", "2"])
    with pytest.raises(SystemExit, match="in-process"):
        cli.main(["train", "--profile", "smoke", "--in-process", "--address", "10.231.0.1:6379"])
    with pytest.raises(SystemExit):  # the home-made shards are gone: one command trains the whole grid
        cli.main(["train", "--profile", "smoke", "--shard", "0/2"])
    assert "--shard" in capsys.readouterr().err


def test_the_library_imports_without_ray():
    import subprocess
    import sys

    code = "import sys, widedeep.cli, widedeep.grid, widedeep.train; assert 'ray' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0  # ray is imported only to train


# ---------------------------------------------------------------------------------------------
# Bad profile files (issue 20): each a ProfileError naming the key and the file, before anything is written
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def book_root(tmp_path, monkeypatch):
    """A repository root with the published profiles copied into book/profiles/ (WIDEDEEP_ROOT points at it)."""
    folder = tmp_path / "book" / "profiles"
    folder.mkdir(parents=True)
    for path in (REPO / "book" / "profiles").glob("*.yaml"):
        (folder / path.name).write_text(path.read_text())
    monkeypatch.setenv("WIDEDEEP_ROOT", str(tmp_path))
    monkeypatch.setenv("WIDEDEEP_RUNS", str(tmp_path / "store"))   # its own run store (and smoke results) too
    return tmp_path


def write_profile(root: Path, name: str, edit) -> Path:
    """book/profiles/<name>.yaml made from cpu.yaml's lines passed through `edit`."""
    lines = (REPO / "book" / "profiles" / "cpu.yaml").read_text().splitlines()
    path = root / "book" / "profiles" / f"{name}.yaml"
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


def replace_key(key: str, line: str | None):
    """An edit that replaces (or, with None, drops) the line setting `key`."""
    return lambda lines: [line if l.startswith(f"{key}:") else l for l in lines if line or not l.startswith(f"{key}:")]


def nothing_written(root: Path) -> bool:
    return not (root / "runs").exists() and not (root / "results").exists()


def test_a_misspelt_key_is_refused_with_a_suggestion(book_root):
    write_profile(book_root, "typo", replace_key("epochs", "epoch: 4"))
    with pytest.raises(ProfileError, match=r"book/profiles/typo.yaml: unknown key 'epoch' \(did you mean 'epochs'\?\)"):
        profiles.load_profile("typo")
    assert nothing_written(book_root)


def test_an_unknown_key_is_refused(book_root):
    write_profile(book_root, "extra", lambda lines: lines + ["learning_rate_warmup: 5"])
    with pytest.raises(ProfileError, match="extra.yaml: unknown key 'learning_rate_warmup'"):
        profiles.load_profile("extra")


def test_a_missing_key_is_refused_instead_of_a_silent_default(book_root):
    write_profile(book_root, "short", replace_key("epochs", None))
    with pytest.raises(ProfileError, match=r"book/profiles/short.yaml lacks 'epochs': add it .*or `extends:`"):
        profiles.load_profile("short")
    assert nothing_written(book_root)


def test_a_missing_list_key_is_refused(book_root):
    write_profile(book_root, "nolist", replace_key("widths", None))
    with pytest.raises(ProfileError, match="nolist.yaml lacks 'widths'"):
        profiles.load_profile("nolist")


def test_a_scalar_where_a_list_belongs_is_refused(book_root):
    write_profile(book_root, "scalar", replace_key("depths", "depths: 20"))
    with pytest.raises(ProfileError, match="scalar.yaml: 'depths' must be a list of integers; got 20"):
        profiles.load_profile("scalar")


def test_a_wrongly_typed_value_is_refused(book_root):
    write_profile(book_root, "typed", replace_key("epochs", 'epochs: "four"'))
    with pytest.raises(ProfileError, match="typed.yaml: 'epochs' must be an integer; got 'four'"):
        profiles.load_profile("typed")
    write_profile(book_root, "flag", replace_key("augment", "augment: 1"))
    with pytest.raises(ProfileError, match="'augment' must be true or false; got 1"):
        profiles.load_profile("flag")


def test_a_value_outside_its_range_is_refused(book_root):
    write_profile(book_root, "eps", replace_key("subspace_eps", "subspace_eps: [0.5, 0.15]"))
    with pytest.raises(ProfileError, match="eps.yaml: subspace_eps: list non-negative values in increasing order"):
        profiles.load_profile("eps")
    write_profile(book_root, "depth", replace_key("depths", "depths: [20, 21]"))
    with pytest.raises(ProfileError, match="depth.yaml.*cannot be trained: depth must be an integer of the form 6n"):
        profiles.load_profile("depth")


def test_a_malformed_file_names_the_line(book_root):
    write_profile(book_root, "broken", replace_key("widths", "widths: [1, 2"))
    with pytest.raises(ProfileError, match="broken.yaml is not valid YAML at line"):
        profiles.load_profile("broken")


@pytest.mark.parametrize("name", ["../cpu", "../../etc/passwd", "profiles/cpu", "/tmp/x", "", ".hidden"])
def test_a_profile_name_cannot_leave_the_profiles_folder(book_root, name):
    (book_root / "book" / "cpu.yaml").write_text((REPO / "book" / "profiles" / "cpu.yaml").read_text())
    with pytest.raises(ProfileError, match="is not a profile: a name is a file stem"):
        profiles.load_profile(name)


def test_extends_merges_and_refuses_loops(book_root):
    folder = book_root / "book" / "profiles"
    (folder / "tiny.yaml").write_text("extends: smoke\nepochs: 2\n")
    tiny, smoke = profiles.load_profile("tiny").values(), profiles.load_profile("smoke").values()
    assert tiny["epochs"] == 2 and {k: v for k, v in tiny.items() if k != "epochs"} == \
        {k: v for k, v in smoke.items() if k != "epochs"}
    (folder / "wrong.yaml").write_text("extends: smoke\nepochs: two\n")
    with pytest.raises(ProfileError, match="wrong.yaml: 'epochs' must be an integer"):  # named where it is set
        profiles.load_profile("wrong")
    (folder / "a.yaml").write_text("extends: b\n")
    (folder / "b.yaml").write_text("extends: a\n")
    with pytest.raises(ProfileError, match="loops back"):
        profiles.load_profile("a")
    (folder / "orphan.yaml").write_text("extends: nowhere\n")
    with pytest.raises(ProfileError, match="unknown profile 'nowhere'"):
        profiles.load_profile("orphan")


def test_auto_precision_resolves_to_what_the_machine_trains_in():
    profile = profiles.with_values(profiles.load_profile("smoke"), precision="auto")
    assert profile.recipe.precision == "auto"
    assert experiments.train_config(profile, 8, 1, 500, 0).precision in ("float32", "bfloat16")
    with pytest.raises(ProfileError, match="'precision' must be one of 'auto', 'float32', 'bfloat16'"):
        profiles.with_values(profile, precision="half")


def test_transition_cells_get_extra_seeds_and_must_be_cells_of_the_grid():
    profile = profiles.load_profile("smoke", {"transition_cells": ["14x1@500"], "transition_seeds": [1, 2]})
    grid = experiments.training_grid(profile)
    assert sorted(c.seed for c in grid if (c.depth, c.width) == (14, 1)) == [0, 1, 2]
    assert all(c.seed == 0 for c in grid if (c.depth, c.width) != (14, 1))
    with pytest.raises(ProfileError, match="not a cell of the grid"):
        profiles.load_profile("smoke", {"transition_cells": ["110x1@500"], "transition_seeds": [1]})
    with pytest.raises(ProfileError, match="DEPTHxWIDTH@N_TRAIN"):
        profiles.load_profile("smoke", {"transition_cells": ["14-1-500"], "transition_seeds": [1]})
    with pytest.raises(ProfileError, match="must not repeat"):
        profiles.load_profile("smoke", {"transition_cells": ["14x1@500"], "transition_seeds": [0]})


def test_the_short_arm_trains_the_depth_series_with_its_own_schedule():
    profile = profiles.load_profile("smoke", {"short_transition_cells": ["8x1@500"], "short_transition_seeds": [3]})
    short = experiments.short_arm_grid(profile)
    assert {(c.depth, c.width) for c in short} == {(d, 1) for d in profile.short.depths}
    assert all(c.epochs == profile.short.epochs and c.min_steps == profile.short.min_steps for c in short)
    assert sorted(c.seed for c in short if c.depth == 8) == [0, 3]
    assert set(c.name() for c in short) <= set(c.name() for c in experiments.required_runs(profile))


def test_the_seed_study_follows_its_arm_and_has_a_reference_precision_twin():
    cpu = profiles.load_profile("cpu")
    study, reference = experiments.seed_study_grid(cpu), experiments.precision_reference_grid(cpu)
    assert cpu.grid.seed_study_arm == "short" and all(c.epochs == cpu.short.epochs for c in study)
    assert [c.precision for c in study] == ["float32"] * len(study)
    assert [c.precision for c in reference] == ["bfloat16"] * len(study)
    assert [c.seed for c in reference] == [c.seed for c in study]
    assert all(a.name() != b.name() for a, b in zip(study, reference))


def test_the_grid_is_the_width_series_then_the_depth_series():
    """`architectures` is the two series in order without repeats; each series fixes the other coordinate."""
    profile = profiles.load_profile("cpu")
    width, depth = experiments.width_series(profile.grid), experiments.depth_series(profile.grid)
    assert {d for d, _ in width} == {profile.grid.width_series_depth}
    assert {w for _, w in depth} == {profile.grid.depth_series_width}
    assert experiments.architectures(profile) == list(dict.fromkeys(width + depth))
