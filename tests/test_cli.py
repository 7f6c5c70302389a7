"""The command line refuses bad requests before running or writing anything (issue 20's CLI cases)."""

from pathlib import Path

import pytest

from widedeep import cli, profiles

REPO = Path(__file__).resolve().parents[1]


def test_overrides_are_read_as_yaml():
    assert cli.parse_overrides([["widths", "[1, 2, 8]"], ["epochs", "3"]]) == {"widths": [1, 2, 8], "epochs": 3}


def test_a_malformed_yaml_value_is_a_clear_error():
    with pytest.raises(SystemExit, match=r"-p widths '\[1, 2' is not a YAML value .*quote it as YAML"):
        cli.parse_overrides([["widths", "[1, 2"]])


@pytest.fixture
def isolated_root(tmp_path, monkeypatch):
    """A repository root with the published profiles and chapter files, so nothing is written in the checkout."""
    (tmp_path / "book" / "profiles").mkdir(parents=True)
    for path in (REPO / "book" / "profiles").glob("*.yaml"):
        (tmp_path / "book" / "profiles" / path.name).write_text(path.read_text())
    (tmp_path / "book" / "01_training.md").write_text((REPO / "book" / "01_training.md").read_text())
    (tmp_path / "README.md").write_text("not a chapter\n")
    monkeypatch.setenv("WIDEDEEP_ROOT", str(tmp_path))
    monkeypatch.setenv("WIDEDEEP_RUNS", str(tmp_path / "store"))   # its own run store (and smoke results) too
    return tmp_path


@pytest.mark.parametrize("profile, overrides, message", [
    ("laptop", {}, "unknown profile"),
    ("../book/profiles/cpu", {}, "is not a profile"),
    ("smoke", {"depht": [8]}, "unknown parameter 'depht'"),
    ("smoke", {"epochs": "four"}, "'epochs' must be an integer; got 'four'"),
    ("smoke", {"widths": 2}, "'widths' must be a list of numbers"),
    ("smoke", {"depths": [9]}, "depth must be an integer of the form 6n"),
])
def test_the_chapter_pre_check_refuses_bad_profiles_and_values(isolated_root, profile, overrides, message):
    with pytest.raises(SystemExit, match=message):
        cli.run_chapter("01_training", profile, overrides)
    assert not (isolated_root / "runs").exists()  # nothing executed, nothing written


def test_the_cli_refuses_a_string_epoch_count_from_the_command_line(isolated_root):
    with pytest.raises(SystemExit, match="the override epochs='four'"):
        cli.main(["chapter", "01_training", "--profile", "smoke", "-p", "epochs", '"four"'])
    assert not (isolated_root / "runs").exists()


@pytest.mark.parametrize("name", ["99_missing", "../README", "../../README.md", "intro"])
def test_only_the_book_s_chapters_can_be_run(isolated_root, name):
    with pytest.raises(SystemExit, match="no chapter"):
        cli.run_chapter(name, "smoke", {})





def test_train_refuses_an_unknown_chapter_before_training_anything(isolated_root):
    with pytest.raises(SystemExit, match=r"no chapter '2_cka': name chapters by their file stem, one of \["):
        cli.main(["train", "--profile", "smoke", "--in-process", "--chapters", "02_cka", "2_cka"])
    assert not (isolated_root / "store").exists() or not any((isolated_root / "store").iterdir())
