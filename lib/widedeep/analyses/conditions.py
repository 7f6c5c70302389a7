"""When does the block appear? Chapter 3's study: both schedule arms, incidence over seeds, the fitted law.

Layer: analyses. The main arm is the profile's grid trained to interpolation (its recipe); the second
arm trains the depth series with a short schedule at every data size, so the chapter can say what
training length does to the block. Each model is analysed once (`structure.analyse`, cached in the
run store); the capacity-versus-data law is fitted on each arm (`incidence`), and the claims rows are
judged from the main arm: from the presence fit when it is estimable, else from the continuous one.
"""

from __future__ import annotations

import numpy as np

from widedeep import profiles
from widedeep.analyses import incidence, structure, verdicts
from widedeep.analyses.structure import BlockAnalysis
from widedeep.labels import entry_label
from widedeep.profiles import Profile

FITS = ("incidence_fit", "continuous_fit", "block_size_fit")  # the laws fitted on each arm


def cell_title(hit: int, total: int) -> str:
    """'block 2/3' style incidence over a cell's seeds."""
    return f"block {hit}/{total}"


class ConditionsStudy:
    """Both arms of the grid analysed, with incidence per cell, the fitted laws and the arms compared."""

    def __init__(self, profile: Profile):
        self.profile = profile
        self.main = structure.analyse_all(profiles.training_grid(profile), profile)
        self.short = structure.analyse_all(profiles.short_arm_grid(profile), profile)
        g = profile.grid
        self.all_rows = incidence.law_rows([m.summary() for m in self.main], g.width_series_depth,
                                           g.depth_series_width)
        # the interpolation rule (book/protocol.md): a grid model that misses it is left out of the law
        self.left_out = structure.misses_rule(self.all_rows, g.min_train_acc)
        self.main_rows = [r for r in self.all_rows if r not in self.left_out]
        self.short_rows = incidence.law_rows([m.summary() for m in self.short], g.width_series_depth,
                                             g.depth_series_width)
        self.fits = self._fits(self.main_rows)
        self.short_fits = self._fits(self.short_rows)

    @staticmethod
    def _fits(rows: list[dict]) -> dict | None:
        """The laws, or None when the rows cannot separate capacity from data (e.g. one n_train)."""
        try:
            return incidence.fit_laws(rows)
        except ValueError:
            return None

    # -- the paper's figure -------------------------------------------------------------------

    def series_layout(self, series: str) -> tuple[list, list[str], list[tuple[int, float]], list[list[str]]]:
        """Seed-0 heatmaps of one series (rows n_train, most data on top), its labels and incidence titles."""
        g = self.profile.grid
        archs = profiles.width_series(self.profile) if series == "width" else profiles.depth_series(self.profile)
        n_trains = sorted(g.n_trains, reverse=True)
        layout = structure.grid_layout(self.main, archs, n_trains, g.seeds[0])
        cells = incidence.cell_incidence(self.all_rows)
        titles = [[cell_title(*cells[(d, float(w), n)]) if (d, float(w), n) in cells else "" for d, w in archs]
                  for n in n_trains]
        return layout, [f"n_train = {n}" for n in n_trains], archs, titles

    # -- numbers for the prose ----------------------------------------------------------------

    def rule_held(self) -> tuple[int, int, float]:
        """(main-arm models meeting the profile's train-accuracy rule, models, lowest train accuracy); no rule: all."""
        accs = [r["train_acc"] for r in self.all_rows]
        return len(accs) - len(self.left_out), len(accs), min(accs)

    def left_out_sentence(self) -> str:
        """'none' or the grid models the interpolation rule leaves out of the law, with their train accuracy."""
        return "; ".join(f"{entry_label(r)} (train accuracy {r['train_acc']:.3f})" for r in self.left_out) or "none"

    def counts(self) -> dict[str, str]:
        """'k of n' models with a block in each arm."""
        return {arm: f"{sum(r['block'] is not None for r in rows)} of {len(rows)}"
                for arm, rows in (("main", self.main_rows), ("short", self.short_rows))}

    def arms_compared(self) -> list[dict]:
        """Per depth-series cell in both arms: steps, mean maximum first-PC share, block size and incidence."""
        out = []
        width = self.profile.grid.depth_series_width
        for depth in self.profile.short.depths:
            for n_train in sorted(self.profile.grid.n_trains):
                entry = {"depth": depth, "width": width, "n_train": n_train}
                for arm, rows in (("main", self.main_rows), ("short", self.short_rows)):
                    cell = [r for r in rows if (r["depth"], r["width"], r["n_train"]) == (depth, width, n_train)]
                    if not cell:
                        continue
                    entry[arm] = {"steps": cell[0]["steps"], "seeds": len(cell),
                                  "with_block": sum(r["block"] is not None for r in cell),
                                  "max_pc1_share": float(np.mean([r["max_pc1_share"] for r in cell])),
                                  "block_size": float(np.mean([r["block_size"] for r in cell])),
                                  "train_acc": float(np.mean([r["train_acc"] for r in cell])),
                                  "test_acc": float(np.mean([r["test_acc"] for r in cell]))}
                if "main" in entry and "short" in entry:
                    out.append(entry)
        return out

    def training_length_effect(self) -> dict[str, float]:
        """Mean over the compared cells of short minus main: maximum first-PC share, block size, test accuracy."""
        cells = self.arms_compared()
        if not cells:
            return {}
        return {key: float(np.mean([c["short"][key] - c["main"][key] for c in cells]))
                for key in ("max_pc1_share", "block_size", "test_acc")}

    def claim_fit(self) -> tuple[str, dict | None]:
        """Which main-arm fit carries the claims: presence where estimable, else the continuous outcome."""
        if self.fits is None:
            return "none", None
        presence = self.fits["incidence_fit"]
        key = "incidence_fit" if presence.estimable else "continuous_fit"
        return key, incidence.law_verdicts(self.fits[key])

    def coefficient_text(self, key: str, arm: str = "main") -> str:
        """'capacity 0.012 [-0.01, 0.03], data ...' of one fit, or why there is none."""
        fits = self.fits if arm == "main" else self.short_fits
        if fits is None:
            return "not fitted: the arm cannot separate capacity from data"
        fit = fits[key]
        if not fit.estimable:
            return f"not estimable ({fit.reason})"
        parts = [f"{name} {v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]" for name, v in fit.coefficients.items()]
        return ", ".join(parts) + f"; capacity + data = 0: p = {fit.relative_test_p:.3g}"

    def record(self) -> dict:
        """The chapter's results: both arms' models, the fits with their verdicts, the arms compared."""
        record = {"arms_compared": self.arms_compared(), "training_length_effect": self.training_length_effect()}
        for arm, fits, rows in (("", self.fits, self.main_rows), ("short_arm_", self.short_fits, self.short_rows)):
            laws = incidence.law_record(fits, rows) if fits is not None else {}
            for key in FITS:
                record[arm + key] = laws.get(key)  # None: the arm cannot separate capacity from data
        key, found = self.claim_fit()
        record["claims_fit"] = {"fit": key, "verdicts": found or {}, "left_out": [r["name"] for r in self.left_out]}
        record["claims"] = self.claims()
        return record

    def claims(self) -> dict[str, dict]:
        """Claims 1 and 2 as verdict objects (book/protocol.md, Chapter 3): the capacity and data coefficients of
        the fit that carries the claims with their intervals, and "relative to data" with its likelihood-ratio p;
        n is the models fitted, and the grid models the interpolation rule left out are counted."""
        key, found = self.claim_fit()
        fit = self.fits[key] if found else None
        common = {"n": len(self.main_rows), "fit": key, "left_out": len(self.left_out),
                  "left_out_why": "grid models below the interpolation rule"}
        rule = (f"book/protocol.md, Chapter 3: the {key.replace('_', ' ')}'s" if found else
                "book/protocol.md, Chapter 3 (no law fitted: the grid cannot separate capacity from data):")
        out = {}
        for name, sign in (("capacity", "> 0"), ("data", "< 0")):
            value = fit.coefficients.get(name) if fit is not None and fit.estimable else None
            out[name] = verdicts.claim({**common, "verdict": found[name] if found else verdicts.NOT_TESTABLE,
                                        "mean": None if value is None else value[0],
                                        "interval": None if value is None else [value[1], value[2]]},
                                       f"{rule} {name} coefficient {sign}, profile-likelihood interval")
        out["relative"] = verdicts.claim({**common, "verdict": found["relative"] if found else verdicts.NOT_TESTABLE,
                                          "interval": None, "lr_test_p": None if fit is None else fit.relative_test_p},
                                         f"{rule} capacity and data shown, capacity + data = 0 not rejected")
        return out
