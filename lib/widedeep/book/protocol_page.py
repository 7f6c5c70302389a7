"""The protocol page's computed parts: its hashes, what the grid costs and what each claim can detect.

Layer: book support (on `widedeep.protocol`, `widedeep.profiles`, `widedeep.models` and the analyses'
`verdicts` and `incidence`).
"""

from __future__ import annotations

from widedeep import experiments, labels, models, protocol
from widedeep.analyses import incidence, verdicts
from widedeep.book.tables import list_table
from widedeep.profiles import Profile

# The law the detection table assumes (per log unit, capacity up and data down), and a third of models blocked
LAW_EFFECT, LAW_RATE, LAW_DRAWS = 1.5, 1 / 3, 20


def hash_table(stamp: dict) -> str:
    """The protocol hash and each section's, as a table."""
    rows = [["the whole protocol", f"`{stamp['protocol']}`"]]
    rows += [[section, f"`{digest}`"] for section, digest in stamp["sections"].items()]
    return list_table(["section", "hash"], rows)


def cost_summary(profile: Profile) -> dict:
    """Core-hours of training and analysis on the Xeon and on Zen 1, by kind of model, and the largest run."""
    costs = {cpu: protocol.grid_cost(profile, cpu) for cpu in protocol.CPUS}
    vits = {cpu: protocol.vit_cost(profile, cpu) for cpu in protocol.CPUS}
    analysis = {cpu: protocol.analysis_core_seconds(profile, cpu) / 3600 + vits[cpu]["analysis_core_hours"]
                for cpu in protocol.CPUS}
    groups = {}
    for config in experiments.required_runs(profile):
        arch = (labels.architecture_of(config) if config.arch == "vit"
                else f"ResNet-{config.depth} ×{config.width:g}" + ("" if config.residual else " plain"))
        schedule = ", short schedule" if config.epochs != profile.recipe.epochs else ""
        extra = f" ({config.precision}{schedule}{', regularised' if config.pc_reg_strength else ''})"
        key = f"{arch}, n={config.n_train}{extra}"
        group = groups.setdefault(key, {"models": 0, "xeon": 0.0, "zen1": 0.0})
        group["models"] += 1
        for cpu in protocol.CPUS:
            group[cpu] += costs[cpu]["runs"].get(config.name(), 0.0) / 3600
    rows = [[key, g["models"], f"{g['xeon']:.2f}", f"{g['zen1']:.2f}" if g["zen1"] else "not run"]
            for key, g in groups.items()]
    rows.append(["training", sum(g["models"] for g in groups.values()),
                 f"{costs['xeon']['core_hours']:.2f}", f"{costs['zen1']['core_hours']:.2f}"])
    rows.append(["analyses (estimate)", "", f"{analysis['xeon']:.2f}", f"{analysis['zen1']:.2f}"])
    total = {cpu: costs[cpu]["core_hours"] + analysis[cpu] for cpu in protocol.CPUS}
    rows.append(["**the whole run**", "", f"**{total['xeon']:.1f}**", f"**{total['zen1']:.1f}**"])
    largest = costs["zen1"]["largest_run"]
    glue = {"total_xeon": f"{total['xeon']:.1f}", "total_zen1": f"{total['zen1']:.1f}",
            "train_xeon": f"{costs['xeon']['core_hours']:.1f}", "analysis_xeon": f"{analysis['xeon']:.1f}",
            "largest_run": largest, "largest_zen1": f"{costs['zen1']['largest_run_hours']:.2f}"}
    table = list_table(["models", "count", "core-hours, Xeon", "core-hours, Zen 1"], rows)
    return {"table": table, "glue": glue, "total": total, "largest_run_hours_zen1": costs["zen1"]["largest_run_hours"]}


def vit_cost_summary(profile: Profile) -> dict[str, str]:
    """Chapter 10's ViTs: training and analysis core-hours on the Xeon and Zen 1, measured ones, the largest run."""
    xeon, zen1 = protocol.vit_cost(profile, "xeon"), protocol.vit_cost(profile, "zen1")
    measured = protocol.vit_measured_core_hours(profile)
    return {"vit_models": str(len(xeon["runs"])), "vit_train_xeon": f"{xeon['train_core_hours']:.2f}",
            "vit_analysis_xeon": f"{xeon['analysis_core_hours']:.2f}",
            "vit_total_xeon": f"{xeon['train_core_hours'] + xeon['analysis_core_hours']:.2f}",
            "vit_total_zen1": f"{zen1['train_core_hours'] + zen1['analysis_core_hours']:.1f}",
            "vit_measured": (f"{measured['median']:.2f} core-hours at the median rates and {measured['best']:.2f} "
                             f"at the best" if measured else "not measured (the benchmark measures the cpu "
                             "profile's ViTs)"),
            "vit_largest_run": zen1["largest_run"], "vit_largest_zen1": f"{zen1['largest_run_hours']:.2f}"}


def law_rows(profile: Profile) -> list[dict]:
    """The grid as Chapter 3's law sees it: parameters, n_train and series per model."""
    counts: dict[tuple, int] = {}
    rows = []
    for config in experiments.training_grid(profile):
        key = (config.depth, config.width)
        if key not in counts:
            counts[key] = models.parameter_count(config.build_model())
        rows.append({"parameters": counts[key], "n_train": config.n_train,
                     "series": incidence.series_of(config.depth, config.width, profile.grid.width_series_depth,
                                                   profile.grid.depth_series_width)})
    return rows


def detection_summary(profile: Profile) -> dict:
    """What the claims can detect at this size: share thresholds, t-interval widths and the law's intervals."""
    rules = protocol.rules()
    level, null = rules["level"], rules["share_null"]
    n_seeds = len(profile.grid.seed_study_seeds)
    rows = []
    for n in sorted({3, 5, n_seeds}):
        needed = verdicts.smallest_share_shown(n, null, level, rules["min_models"])
        low, high = verdicts.clopper_pearson(n, n, level)
        rows.append([n, needed if needed is not None else "never", f"[{low:.2f}, {high:.2f}]",
                     f"{verdicts.t_half_width(n, level):.2f}"])
    table = list_table(["models *n*", f"share claim shown from *k* = (null {null})", "interval at *k* = *n*",
                        "paired effect: t half-width in SDs"], rows)
    grid = law_rows(profile)
    needed = verdicts.smallest_share_shown(n_seeds, null, level, rules["min_models"])
    glue = {"seed_study_n": n_seeds, "share_needed": needed if needed is not None else "more than all",
            "law_models": len(grid), "law_effect": f"±{LAW_EFFECT:g}"}
    try:
        law = {effect: incidence.expected_law(grid, effect, -effect, LAW_RATE, LAW_DRAWS, seed=0, level=level)
               for effect in (LAW_EFFECT, 2 * LAW_EFFECT)}
    except incidence.DesignError as error:  # one n_train or one architecture: no law to fit on this grid
        return {"table": table, "glue": glue | dict.fromkeys(("law_interval", "law_power", "law_power_strong"),
                                                              f"not estimable ({error})"), "law": None}
    low, high = law[LAW_EFFECT]["capacity"]["median_interval"]
    glue |= {"law_interval": f"[{low:+.2f}, {high:+.2f}]",
             "law_power": f"{law[LAW_EFFECT]['capacity']['shown']:.0%}",
             "law_power_strong": f"{law[2 * LAW_EFFECT]['capacity']['shown']:.0%}"}
    return {"table": table, "glue": glue, "law": law}
