"""Profiles and the chapter runner: every profile is valid; unknown names are refused with a list."""

import pytest

from widedeep import cli, profiles


def test_every_profile_builds_a_valid_grid():
    names = profiles.available_profiles()
    assert {"smoke", "cpu", "paper"} <= set(names)
    for name in names:
        params = profiles.load_profile(name)
        grid = profiles.training_grid(params)  # constructing a TrainConfig validates depth, width, sizes
        expected = len(profiles.architectures(params)) * len(params["n_trains"]) * len(params["seeds"])
        assert len(grid) == expected and len({c.name() for c in grid}) == expected


def test_overrides_replace_values_and_reshape_the_grid():
    params = profiles.load_profile("smoke", {"widths": [1, 2, 4], "seeds": [0, 1]})
    assert params["widths"] == [1, 2, 4]
    assert len(profiles.training_grid(params)) == len(profiles.architectures(params)) * len(params["n_trains"]) * 2


def test_unknown_profile_and_parameter_are_refused():
    with pytest.raises(ValueError, match="unknown profile 'laptop'.*smoke"):
        profiles.load_profile("laptop")
    with pytest.raises(ValueError, match="unknown parameter 'widhts'.*widths"):
        profiles.load_profile("smoke", {"widhts": [1]})
    with pytest.raises(ValueError, match="takes a list"):
        profiles.load_profile("smoke", {"widths": 2})


def test_cli_refuses_bad_requests_before_running():
    assert cli.parse_overrides([["widths", "[1, 2, 8]"], ["epochs", "3"]]) == {"widths": [1, 2, 8], "epochs": 3}
    with pytest.raises(SystemExit, match="unknown profile"):
        cli.run_chapter("01_training", "laptop", {})
    with pytest.raises(SystemExit, match="unknown parameter"):
        cli.run_chapter("01_training", "smoke", {"depht": [8]})
    with pytest.raises(SystemExit, match="no chapter"):
        cli.run_chapter("99_missing", "smoke", {})


def test_required_runs_cover_every_chapter_without_repeats():
    params = profiles.load_profile("cpu")
    required = profiles.required_runs(params)
    assert len(set(required)) == len(required)
    for group in (profiles.training_grid(params), profiles.cka_base_grid(params), profiles.seed_study_grid(params)):
        assert set(group) <= set(required)
    assert any(not c.residual for c in required)  # Chapter 2's plain control
    assert {c.seed for c in profiles.seed_study_grid(params)} == set(params["seed_study_seeds"])
    errors = profiles.errors_grid(params)  # Chapter 6's populations
    assert set(errors["wide"]) | set(errors["deep"]) <= set(required)


@pytest.mark.parametrize("name", ["smoke", "cpu", "paper", "paper-fmnist"])
def test_error_populations_have_twice_as_many_seeds_on_the_null_side(name):
    params = profiles.load_profile(name)
    grid = profiles.errors_grid(params)
    null_side = params["errors_null_side"]
    other = next(side for side in grid if side != null_side)
    assert len(grid[null_side]) == 2 * len(grid[other]) >= 4
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


def test_every_profile_sets_the_same_keys():
    keys = {name: set(profiles.load_profile(name)) for name in profiles.available_profiles()}
    reference = keys["cpu"]
    for name, names in keys.items():
        assert names == reference, f"{name}: missing {sorted(reference - names)}, extra {sorted(names - reference)}"
