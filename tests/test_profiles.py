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
