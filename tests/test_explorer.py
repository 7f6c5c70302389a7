"""The heatmap explorer shows the right figure for every combination, in Python and through jslinks."""

import ipywidgets as widgets
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from widedeep.book import explorer  # noqa: E402

ITEMS = {(1, 20, 0): b"a", (2, 20, 0): b"b", (1, 56, 0): b"c", (1, 56, 1): b"d"}
NAMES = ["width", "depth", "seed"]


def test_every_combination_shows_its_figure_and_missing_ones_a_note():
    box = explorer.nested_explorer(ITEMS, NAMES, formats={"width": "×{:g}"})
    assert [d.description for d in box.controls] == NAMES
    assert [label for label, _ in box.controls[0].options] == ["×1", "×2"]
    for key, png in ITEMS.items():
        leaf = explorer.select(box, key)
        assert isinstance(leaf, widgets.Image) and leaf.value == png
    missing = explorer.select(box, (2, 56, 1))
    assert isinstance(missing, widgets.HTML) and "not computed" in missing.value


def test_starts_on_the_first_key_and_links_every_stack_of_a_level():
    box = explorer.nested_explorer(ITEMS, NAMES)
    assert explorer.selected_leaf(box).value == ITEMS[min(ITEMS)]
    # One stack at the first level, one per width at the second, one per (width, depth) at the third.
    assert [len(level) for level in box.stacks] == [1, 2, 4]
    for level, dropdown in enumerate(box.controls):
        for stack in box.stacks[level]:
            assert any(link.source == (dropdown, "index") and link.target == (stack, "selected_index")
                       for link in box.links)


def test_figure_png_is_a_png_and_closes_the_figure():
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    png = explorer.figure_png(fig)
    assert png.startswith(b"\x89PNG") and not plt.fignum_exists(fig.number)


@pytest.mark.parametrize("items, names, match", [
    ({}, NAMES, "at least one figure"),
    ({(1, 2): b"x"}, NAMES, "tuple of 3 values"),
    ({(1,): b"x"}, [], "at least one dimension"),
])
def test_bad_input_raises_clear_errors(items, names, match):
    with pytest.raises(ValueError, match=match):
        explorer.nested_explorer(items, names)


def test_select_rejects_an_unknown_value():
    box = explorer.nested_explorer(ITEMS, NAMES)
    with pytest.raises(ValueError, match="not an option of 'depth'"):
        explorer.select(box, (1, 110, 0))


def test_adding_the_seed_study_leaves_the_arms_lists_alone():
    main, short = ["m1", "m2"], ["s1"]
    arms = explorer.arms_with_seed_study({"main schedule": main, "short schedule": short}, "short schedule",
                                         ["seed0", "seed1"])
    assert arms == {"main schedule": ["m1", "m2"], "short schedule": ["s1", "seed0", "seed1"]}
    assert main == ["m1", "m2"] and short == ["s1"]            # the caller's (a study's) lists are untouched
    assert explorer.arms_with_seed_study({}, "main schedule", ["a"]) == {"main schedule": ["a"]}
