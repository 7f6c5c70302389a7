"""The protocol page's hashes, rules and records check, and the grid sizing the page states."""

import json
from pathlib import Path

import pytest

from widedeep import experiments, profiles, protocol
from widedeep.protocol import ProtocolError

REPO = Path(__file__).resolve().parents[1]
PAGE = """# Title

Preamble text, not a section.

## General rules

Units are seeds.

```yaml
keys: [data_seed]
rules:
  level: 0.95
```

## Chapter 3: blocks

The detector.

```yaml
keys: [block_threshold, block_min_contrast]
rules:
  overlap: 0.5
```

## Amendments

None yet.
"""


@pytest.fixture(scope="module")
def cpu():
    return profiles.load_profile("cpu")


def test_sections_are_read_with_their_keys_and_rules():
    sections = protocol.read_sections(PAGE)
    assert list(sections) == ["general-rules", "chapter-3", "amendments"]
    assert sections["chapter-3"].keys == ("block_threshold", "block_min_contrast")
    assert protocol.rules(PAGE) == {"level": 0.95, "overlap": 0.5}
    assert sections["amendments"].keys == () and sections["amendments"].rules == {}


def test_a_section_hash_changes_with_its_text_and_no_other(cpu):
    before = protocol.section_hashes(cpu, PAGE)
    after = protocol.section_hashes(cpu, PAGE.replace("The detector.", "The detector, reworded."))
    assert [s for s in before if before[s] != after[s]] == ["chapter-3"]
    assert protocol.protocol_hash(cpu, PAGE) != protocol.protocol_hash(cpu, PAGE.replace("The detector.", "X."))


def test_a_section_hash_changes_with_the_keys_it_fixes_and_no_other(cpu):
    before = protocol.section_hashes(cpu, PAGE)
    moved = profiles.with_values(cpu, block_threshold=0.8)
    after = protocol.section_hashes(moved, PAGE)
    assert [s for s in before if before[s] != after[s]] == ["chapter-3"]
    # a key no section fixes (where a GPU task runs) changes no hash
    assert protocol.section_hashes(profiles.with_values(cpu, gpus_per_model=0.5), PAGE) == before


def test_whitespace_at_the_ends_of_lines_does_not_change_a_hash(cpu):
    assert protocol.section_hashes(cpu, PAGE.replace("The detector.", "The detector.   ")) == \
        protocol.section_hashes(cpu, PAGE)


@pytest.mark.parametrize("page, message", [
    (PAGE.replace("keys: [data_seed]", "keys: [no_such_key]"), "unknown profile keys"),
    (PAGE.replace("overlap: 0.5", "level: 0.9"), "more than one section"),
    (PAGE.replace("## Amendments", "## Chapter 3: again"), "share the id"),
    (PAGE.replace("keys: [data_seed]", "keys: [data_seed]\nother: 1"), "holds `keys:`"),
    ("no sections at all", "no `## ` section"),
])
def test_a_malformed_page_is_refused_naming_the_problem(page, message):
    with pytest.raises(ProtocolError, match=message):
        protocol.read_sections(page)


def _record(folder: Path, name: str, stamp: dict | None) -> Path:
    path = folder / name / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"run": name, **({"protocol": stamp} if stamp else {})}))
    return path


def test_a_record_trained_under_another_protocol_is_listed(cpu, tmp_path):
    current = protocol.training_stamp(cpu, PAGE)
    older = protocol.training_stamp(cpu, PAGE.replace("Units are seeds.", "Units were models."))
    _record(tmp_path, "good", current)
    planted = _record(tmp_path, "trained-under-another-hash", older)
    bare = _record(tmp_path, "no-stamp", None)
    (tmp_path / "good" / "cka-1234.json").write_text("{}")   # an analysis record carries no training stamp
    offenders = protocol.check_records(tmp_path, cpu, PAGE)
    assert {o["record"] for o in offenders} == {str(planted), str(bare)}
    planted_entry = next(o for o in offenders if o["record"] == str(planted))
    assert planted_entry["sections"] == ["general-rules"] and older["protocol"] in planted_entry["reason"]


def test_a_dated_amendment_of_a_rule_does_not_void_runs_trained_before_it(cpu, tmp_path):
    before = protocol.training_stamp(cpu, PAGE)
    amended = PAGE.replace("The detector.", "The detector (amended 2026-12-07).")
    assert protocol.training_stamp(cpu, amended)["protocol"] != before["protocol"]
    _record(tmp_path, "trained-before", before)
    assert protocol.training_sections(PAGE) == ["general-rules"]   # data_seed shapes training
    assert protocol.check_records(tmp_path, cpu, amended) == []


def test_a_stamp_merged_into_a_record_is_read_too(cpu, tmp_path):
    path = tmp_path / "r" / "metrics.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"steps": 3, **protocol.training_stamp(cpu, PAGE)}))
    assert protocol.check_records(tmp_path, cpu, PAGE) == []


def test_the_published_records_were_trained_under_this_protocol():
    """Every committed per-run record (results/<profile>/runs/) carries the book's current protocol hash."""
    for name in profiles.available_profiles():
        records = REPO / "results" / name / "runs"
        if records.exists():
            assert protocol.check_records(records, profiles.load_profile(name)) == [], name


def test_the_page_fixes_every_key_that_shapes_a_result(cpu):
    """Each profile key is declared by one section of the book's page, except where and how runs are stored."""
    declared = [k for s in protocol.read_sections().values() for k in s.keys]
    machine = {"gpus_per_model", "runs_dir", "results_dir"}
    assert sorted(set(profiles.KEYS) - set(declared) - machine) == []
    assert len(declared) == len(set(declared)), "a key is fixed by two sections"


def test_the_interpolation_keeps_the_measured_rates():
    for cpu_name in protocol.CPUS:
        rates = protocol.measured_rates(cpu_name)
        for gflop, rate in rates.items():
            assert protocol.images_per_second(gflop, rates) == pytest.approx(rate)
        low, high = sorted(rates)[:2]
        middle = (low * high) ** 0.5
        assert rates[high] * high <= protocol.images_per_second(middle, rates) * middle <= rates[low] * low or \
            rates[low] * low <= protocol.images_per_second(middle, rates) * middle <= rates[high] * high


def test_flops_are_counted_as_the_benchmark_counts_them():
    bench = json.loads((REPO / protocol.BENCHMARK).read_text())["models"]
    assert protocol.train_flops_per_image(110, 1.0) == pytest.approx(bench["resnet110x1"]["flops_per_image"])
    assert protocol.train_flops_per_image(20, 4.0) == pytest.approx(bench["resnet20x4"]["flops_per_image"])


def test_the_cpu_run_fits_the_budget_the_page_states(cpu):
    rules = protocol.rules()
    xeon, zen1 = protocol.grid_cost(cpu, "xeon"), protocol.grid_cost(cpu, "zen1")
    # Chapter 10's ViTs have their own budget on top of this one (tests/test_vit.py checks it)
    vits = protocol.vit_cost(cpu, "xeon")["train_core_hours"]
    whole = xeon["core_hours"] - vits + protocol.analysis_core_seconds(cpu, "xeon") / 3600
    assert whole <= rules["max_book_core_hours_xeon"] * 1.05, whole
    assert zen1["largest_run_hours"] <= rules["max_run_core_hours_slowest_cpu"], zen1["largest_run"]
    # bfloat16 runs (the precision side study) are not run on Zen 1, which has no native bfloat16
    assert set(zen1["skipped"]) == {c.name() for c in experiments.precision_reference_grid(cpu)}
    assert not xeon["skipped"]


def test_unknown_cpu_is_refused():
    with pytest.raises(ValueError, match="cpu must be one of"):
        protocol.measured_rates("m1")
