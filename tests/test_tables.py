"""Tables and trend summaries used in the chapters' prose."""

import pytest

from widedeep.book import tables


def _row(depth, n_train, acc, seed=0):
    return {"depth": depth, "width": 1, "seed": seed, "n_train": n_train, "test_acc": acc}


def test_rising_series_counts_only_strict_rises_and_skips_single_points():
    rows = [_row(20, 500, 0.7), _row(20, 1000, 0.8), _row(56, 1000, 0.75), _row(56, 500, 0.76), _row(110, 500, 0.5)]
    assert tables.rising_series(rows, "n_train", "test_acc") == (1, 2)
    assert tables.rising_series([_row(20, 500, 0.7)], "n_train", "test_acc") == (0, 0)
    assert tables.rising_series([_row(20, 500, 0.7), _row(20, 1000, 0.7)], "n_train", "test_acc") == (0, 1)


def test_markdown_table_formats_values():
    text = tables.markdown_table([{"a": 1234, "b": 0.12345}], {"a": "A", "b": "B"}, {"a": ",", "b": ".2f"})
    assert text.splitlines() == ["| A | B |", "|---:|---:|", "| 1,234 | 0.12 |"]


def test_list_table_formats_cells_and_refuses_ragged_rows():
    text = tables.list_table(["model", "acc"], [["R20", "0.91"], ["R56", 0.5]])
    assert text.splitlines() == ["| model | acc |", "|:---|---:|", "| R20 | 0.91 |", "| R56 | 0.5 |"]
    with pytest.raises(ValueError, match="2 cells"):
        tables.list_table(["model", "acc"], [["R20"]])


@pytest.mark.parametrize("cell, numeric", [("0.91", True), ("1,234", True), ("-0.043", True), ("−0.043", True),
                                           ("+0.5", True), ("12%", True), ("0.743 ± 0.012", True), ("—", True),
                                           ("R20", False), ("ResNet-110 ×1", False), ("2, 3", False), ("", False)])
def test_is_number_tells_numeric_cells_from_text(cell, numeric):
    assert tables.is_number(cell) is numeric
