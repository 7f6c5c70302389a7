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


def test_shards_partition_the_runs_with_balanced_cost():
    required = profiles.required_runs(profiles.load_profile("cpu"))
    shards = [profiles.shard(required, i, 3) for i in range(3)]
    assert sorted(c.name() for s in shards for c in s) == sorted(c.name() for c in required)
    costs = [sum(map(profiles.training_cost, s)) for s in shards]
    # Greedy costliest-first keeps every shard within one model's cost of the others.
    assert max(costs) - min(costs) <= max(map(profiles.training_cost, required))
    assert profiles.shard(required, 1, 3) == shards[1]  # deterministic
    with pytest.raises(ValueError, match="shard index"):
        profiles.shard(required, 3, 3)


def test_cli_train_refuses_a_malformed_shard():
    with pytest.raises(SystemExit, match="INDEX/COUNT"):
        cli.main(["train", "--profile", "smoke", "--shard", "2/2"])


def test_every_profile_sets_the_same_keys():
    keys = {name: set(profiles.load_profile(name)) for name in profiles.available_profiles()}
    reference = keys["cpu"]
    for name, names in keys.items():
        assert names == reference, f"{name}: missing {sorted(reference - names)}, extra {sorted(names - reference)}"
