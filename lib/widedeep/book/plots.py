"""Figures for the book: each function draws one figure and returns it (PNG in the book, ignored by nbval).

Layer: book support (on `widedeep.labels` for display labels).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from widedeep.labels import architecture_label, architecture_of

plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False,
                     "axes.grid": True, "grid.alpha": 0.3, "font.size": 10})


def accuracy_vs_parameters(rows: list[dict], key: str = "test_acc", chance: float | None = None):
    """Accuracy against parameter count (log scale), one line per n_train, one marker per architecture."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    n_trains = sorted({r["n_train"] for r in rows})
    colours = plt.cm.viridis(np.linspace(0.15, 0.85, len(n_trains)))
    for colour, n_train in zip(colours, n_trains):
        sub = sorted((r for r in rows if r["n_train"] == n_train), key=lambda r: r["parameters"])
        params = np.array([r["parameters"] for r in sub])
        acc = np.array([r[key] for r in sub])
        ax.plot(params, acc, "-", color=colour, alpha=0.4)
        for r, p, a in zip(sub, params, acc):
            marker = "s" if r["width"] != 1 else "o"
            ax.plot(p, a, marker, color=colour, markersize=6)
            ax.annotate(architecture_label(r["depth"], r["width"]), (p, a), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
        ax.plot([], [], "o-", color=colour, label=f"n_train = {n_train}")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(key.replace("_", " "))
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def training_curves(runs: list, key: str = "train_acc_augmented"):
    """Per-epoch training accuracy (augmented batches) of each run, one panel per n_train."""
    n_trains = sorted({r.config.n_train for r in runs})
    fig, axes = plt.subplots(1, len(n_trains), figsize=(4.2 * len(n_trains), 3.3), squeeze=False, sharey=True)
    for ax, n_train in zip(axes[0], n_trains):
        for run in (r for r in runs if r.config.n_train == n_train):
            epochs = [h["epoch"] for h in run.metrics["epochs"]]
            ax.plot(epochs, [h[key] for h in run.metrics["epochs"]],
                    label=f"{architecture_of(run.config)} s{run.config.seed}")
        ax.set_title(f"n_train = {n_train}")
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel(key.replace("_", " "))
    axes[0][-1].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


def cka_heatmap(matrix, ax=None, title: str = "", xlabel: str = "layer", ylabel: str = "layer",
                colorbar: bool = True):
    """One CKA heatmap in the paper's style (layer 0 at the bottom left, colour scale 0-1)."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 3.6))
    image = ax.imshow(np.asarray(matrix), origin="lower", vmin=0, vmax=1, cmap="magma", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(False)
    if colorbar:
        (fig or ax.figure).colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="CKA")
    return fig or ax.figure


def heatmap_row(matrices: list, titles: list[str], xlabels: list[str] | None = None,
                ylabels: list[str] | None = None):
    """Several CKA heatmaps side by side with one shared colour bar."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.5 * len(matrices) + 0.8, 3.5), squeeze=False)
    for i, (ax, matrix, title) in enumerate(zip(axes[0], matrices, titles)):
        cka_heatmap(matrix, ax, title, (xlabels or ["layer"] * len(matrices))[i],
                    (ylabels or ["layer"] * len(matrices))[i], colorbar=False)
    image = axes[0][0].images[0]
    fig.colorbar(image, ax=list(axes[0]), fraction=0.02, pad=0.02, label="CKA")
    return fig


def outline_block(ax, block, colour: str = "cyan") -> None:
    """Draw a detected block (`blocks.Block`, full-matrix layer indices) as a square on a heatmap."""
    if block is None:
        return
    from matplotlib.patches import Rectangle

    side = block.end - block.start + 1
    ax.add_patch(Rectangle((block.start - 0.5, block.start - 0.5), side, side, fill=False, edgecolor=colour,
                           linewidth=1.2, linestyle="--"))


def heatmap_grid(matrices: list[list], row_labels: list[str], col_labels: list[str],
                 blocks: list[list] | None = None, cell_size: float = 2.4, cell_titles: list[list] | None = None):
    """CKA heatmaps on a grid (rows e.g. n_train, columns architectures), detected blocks outlined.

    `matrices[r][c]` may be None for a missing model; one colour bar serves the whole grid.
    """
    rows, cols = len(matrices), len(matrices[0])
    fig, axes = plt.subplots(rows, cols, figsize=(cell_size * cols + 0.9, cell_size * rows + 0.3), squeeze=False)
    image = None
    for r in range(rows):
        for c in range(cols):
            ax, matrix = axes[r][c], matrices[r][c]
            ax.grid(False)
            ax.set_xticks([])
            ax.set_yticks([])
            if matrix is None:
                ax.axis("off")
                continue
            image = ax.imshow(np.asarray(matrix), origin="lower", vmin=0, vmax=1, cmap="magma",
                              interpolation="nearest")
            if blocks is not None:
                outline_block(ax, blocks[r][c])
            title = col_labels[c] if r == 0 else ""
            if cell_titles is not None and cell_titles[r][c]:
                title = f"{title}\n{cell_titles[r][c]}" if title else cell_titles[r][c]
            if title:
                ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02, label="CKA")
    return fig


def layer_profiles(curves: dict[str, np.ndarray], ylabel: str, spans: dict[str, tuple[float, float]] | None = None,
                   threshold: float | None = None, ax=None):
    """Per-layer values (e.g. first-PC share) against relative depth, one line per model.

    `spans` shades each model's block (relative depth of its first and last layer) in the line's colour.
    """
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
    colours = plt.cm.tab10(np.arange(len(curves)) % 10)
    for colour, (label, values) in zip(colours, curves.items()):
        values = np.asarray(values, dtype=float)
        depth = np.linspace(0, 1, len(values))
        ax.plot(depth, values, "-", color=colour, label=label, linewidth=1.3)
        if spans and spans.get(label) is not None:
            ax.axvspan(*spans[label], color=colour, alpha=0.12)
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("relative depth (residual-stream layers)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, fontsize=7, ncol=2)
    if fig is not None:
        fig.tight_layout()
    return fig or ax.figure


INSIDE_COLOUR, OUTSIDE_COLOUR = "tab:orange", "tab:blue"


def deletion_bars(deletions: list[dict], title: str = "", ax=None):
    """Test-accuracy change when each residual block alone is deleted (bars), with BN repair (black ticks).

    Bars are shaded by whether the block lies in the block structure; blocks that cannot be deleted
    (stride 2) leave gaps in the forward-order axis.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 3.0))
    index = [d["block_index"] for d in deletions]
    ax.bar(index, [d["delta_acc"] for d in deletions], width=0.8,
           color=[INSIDE_COLOUR if d["inside_block"] else OUTSIDE_COLOUR for d in deletions])
    ax.plot(index, [d["delta_acc_repaired"] for d in deletions], "_", color="black", markersize=7, markeredgewidth=1.5)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_xlabel("deleted residual block (forward order)")
    ax.set_ylabel("Δ test accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(handles=[Patch(color=INSIDE_COLOUR, label="inside the block"),
                       Patch(color=OUTSIDE_COLOUR, label="outside"),
                       Line2D([], [], color="black", marker="_", linestyle="", markeredgewidth=1.5,
                              label="with BN repair")], frameon=False, fontsize=7)
    if fig is not None:
        fig.tight_layout()
    return fig or ax.figure


def cumulative_curves(inside: list[dict], outside: list[dict], title: str = "", ax=None):
    """Test-accuracy change as blocks are deleted one after another, inside vs outside the block (dashed: BN repair)."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 3.2))
    for curve, colour, label in ((inside, INSIDE_COLOUR, "inside"), (outside, OUTSIDE_COLOUR, "outside")):
        steps = [c["n_deleted"] for c in curve]
        ax.plot(steps, [c["delta_acc"] for c in curve], "o-", color=colour, label=label, markersize=3)
        ax.plot(steps, [c["delta_acc_repaired"] for c in curve], "o--", color=colour, label=f"{label}, BN repair",
                markersize=3, alpha=0.7)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_xlabel("blocks deleted")
    ax.set_ylabel("Δ test accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False, fontsize=7)
    if fig is not None:
        fig.tight_layout()
    return fig or ax.figure


def correct_fraction_grid(frac_a: np.ndarray, frac_b: np.ndarray, seeds_a: int, seeds_b: int,
                          label_a: str, label_b: str, title: str = "", ax=None):
    """Per-example correct fractions of A against B as a count grid (fractions take seeds + 1 values, so a scatter overplots).

    Each cell holds the number of test examples with that pair of fractions (log colour); examples on
    the diagonal are classified alike by both sets of seeds, far-off-diagonal ones are distinctive errors.
    """
    from matplotlib.colors import LogNorm

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(3.8, 3.4))
    rows = np.rint(np.asarray(frac_b) * seeds_b).astype(int)
    cols = np.rint(np.asarray(frac_a) * seeds_a).astype(int)
    counts = np.zeros((seeds_b + 1, seeds_a + 1))
    np.add.at(counts, (rows, cols), 1)
    image = ax.imshow(np.where(counts > 0, counts, np.nan), origin="lower", cmap="viridis",
                      norm=LogNorm(vmin=1, vmax=max(counts.max(), 2)),
                      extent=(-0.5 / seeds_a, 1 + 0.5 / seeds_a, -0.5 / seeds_b, 1 + 0.5 / seeds_b), aspect="auto")
    ax.plot([0, 1], [0, 1], color="white", linewidth=0.8, alpha=0.6)
    ax.grid(False)
    ax.set_xlabel(f"fraction of {label_a} seeds correct")
    ax.set_ylabel(f"fraction of {label_b} seeds correct")
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(image, ax=ax, label="test examples", fraction=0.046, pad=0.04)
    if fig is not None:
        fig.tight_layout()
    return fig or ax.figure


def null_histogram(test: np.ndarray, null: np.ndarray, xlabel: str, ax=None):
    """Distributions over seed splits of a statistic for A vs B (test) and for half vs half of one model (null)."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 3.0))
    values = np.concatenate([test, null]).astype(float)
    bins = np.histogram_bin_edges(values, bins=min(30, max(5, len(np.unique(values)))))
    ax.hist(null, bins=bins, color="grey", alpha=0.6, label="null: half vs half")
    ax.hist(test, bins=bins, color=INSIDE_COLOUR, alpha=0.6, label="wide vs deep")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("seed splits")
    ax.legend(frameon=False, fontsize=7)
    if fig is not None:
        fig.tight_layout()
    return fig or ax.figure


def class_differences(classes: list[str], result: dict, null: dict, label: str = "wide − deep", ax=None):
    """Per-class accuracy difference with its bootstrap interval, beside the seed-split null's intervals (grey)."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.0, 3.2))
    x = np.arange(len(classes))
    for values, colour, offset, name in ((null, "grey", 0.18, "null: half vs half of deep"),
                                         (result, INSIDE_COLOUR, -0.18, label)):
        diff = np.asarray(values["diff"])
        error = np.stack([diff - np.asarray(values["ci_low"]), np.asarray(values["ci_high"]) - diff])
        ax.errorbar(x + offset, diff, yerr=error, fmt="o", color=colour, markersize=4, capsize=2, label=name)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel("Δ class accuracy")
    ax.legend(frameon=False, fontsize=7)
    if fig is not None:
        fig.tight_layout()
    return fig or ax.figure


def grid_of_blocks(layout: list[list], row_labels: list[str], architectures: list[tuple[int, float]],
                   cell_titles: list[list] | None = None):
    """`heatmap_grid` of analysed models (`structure.grid_layout`: None where a model is missing), blocks outlined."""
    return heatmap_grid([[m.cka if m else None for m in row] for row in layout], row_labels,
                        [architecture_label(d, w) for d, w in architectures],
                        blocks=[[m.block if m else None for m in row] for row in layout], cell_titles=cell_titles)


def law_plane(rows: list[dict], fit, predict, outcome_label: str):
    """The fitted law over (parameters, n_train), one panel per series, every model a point (filled: a block)."""
    series = [s for s in ("width", "depth") if any(r["series"] == s for r in rows)]
    fig, axes = plt.subplots(1, len(series), figsize=(5.2 * len(series), 3.9), squeeze=False)
    params = np.array([r["parameters"] for r in rows], float)
    n_trains = np.array([r["n_train"] for r in rows], float)
    grid_p = np.geomspace(params.min() / 1.5, params.max() * 1.5, 80)
    grid_n = np.geomspace(n_trains.min() / 1.5, n_trains.max() * 1.5, 80)
    pp, nn = np.meshgrid(grid_p, grid_n)
    image = None
    for ax, name in zip(axes[0], series):
        if fit is not None:
            surface = predict(fit, pp, nn, depth_series=name == "depth")
            image = ax.pcolormesh(pp, nn, surface, shading="auto", cmap="viridis", alpha=0.75,
                                  vmin=0, vmax=max(1e-6, float(np.nanmax(surface))) if not fit.method.startswith("Firth") else 1)
        sub = [r for r in rows if r["series"] == name]
        jitter = np.linspace(0.97, 1.03, max(len(sub), 1))
        for k, r in enumerate(sub):
            ax.scatter(r["parameters"], r["n_train"] * jitter[k % len(jitter)], s=30, edgecolor="white",
                       color="crimson" if r["block"] is not None else "none", linewidth=1.0, zorder=3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("n_train")
        ax.set_title(f"{name} series", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02, label=outcome_label)
    return fig


def arms_by_data(rows: dict[str, list[dict]], value: str, ylabel: str):
    """A value against n_train per depth, one line style per schedule arm (e.g. main solid, short dashed)."""
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    depths = sorted({r["depth"] for arm in rows.values() for r in arm})
    colours = dict(zip(depths, plt.cm.plasma(np.linspace(0.1, 0.8, len(depths)))))
    for style, (arm, members) in zip(("-", "--", ":"), rows.items()):
        for depth in depths:
            sub = sorted((r for r in members if r["depth"] == depth), key=lambda r: r["n_train"])
            if not sub:
                continue
            by_n: dict[int, list[float]] = {}
            for r in sub:
                by_n.setdefault(r["n_train"], []).append(r[value])
            xs = sorted(by_n)
            ax.plot(xs, [np.mean(by_n[x]) for x in xs], style, marker="o", color=colours[depth],
                    label=f"ResNet-{depth}, {arm}")
    ax.set_xscale("log")
    ax.set_xlabel("n_train")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, ncol=2)
    return fig


def model_heatmap(m):
    """One analysed model's all-layer CKA heatmap, titled with its accuracy and block, the block outlined."""
    fig = cka_heatmap(m.cka, title=f"{m.label}: test acc {m.run.test_acc:.3f}, "
                                   f"block {'—' if m.block is None else m.span_name(m.block)}")
    outline_block(fig.axes[0], m.block)
    return fig


def pc_share_panels(groups: dict[str, list], threshold: float | None):
    """First-PC share along the residual stream, one panel per group of analysed models, their blocks shaded."""
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 3.6), squeeze=False, sharey=True)
    for ax, (title, members) in zip(axes[0], groups.items()):
        layer_profiles({m.label: m.pc1_share[m.stream] for m in members}, "first-PC share of variance",
                       spans={m.label: m.relative_span(m.block) for m in members}, threshold=threshold, ax=ax)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def first_pc_row(m, pc1_similarity, removed):
    """A model's stream-layer CKA, first-PC similarity and CKA without the first PC, its tested block outlined."""
    fig = heatmap_row([m.stream_cka, pc1_similarity, removed],
                      [f"{m.label}: CKA", "first-PC similarity |⟨u₁, u₁⟩|", "CKA, first PC removed"],
                      xlabels=["residual-stream layer"] * 3, ylabels=["residual-stream layer"] * 3)
    for ax in fig.axes[:3]:
        outline_block(ax, m.on_stream(m.tested_block()[0]))
    return fig


def probe_profiles(study, focus: list, chance: float):
    """Probe test accuracy along the residual stream of the `focus` models of Chapter 5, spans shaded."""
    return layer_profiles({study.plot_label(m): study.probe_accuracy(m) for m in focus}, "probe test accuracy",
                          threshold=chance,
                          spans={study.plot_label(m): m.relative_span(study.spans[m.label][0]) for m in focus})


def deletion_panels(study, focus: list):
    """`deletion_bars` of each `focus` model of Chapter 5's study, one panel per model."""
    fig, axes = plt.subplots(len(focus), 1, figsize=(6.4, 2.6 * len(focus)), squeeze=False)
    for ax, m in zip(axes[:, 0], focus):
        deletion_bars(study.effects[m.label]["deletions"], study.plot_label(m), ax=ax)
    fig.tight_layout()
    return fig


def cumulative_panels(study, focus: list):
    """`cumulative_curves` of the `focus` models that have deletable blocks on both sides (None if none has)."""
    curved = [m for m in focus if study.effects[m.label]["cumulative_inside"]]
    if not curved:
        return None
    fig, axes = plt.subplots(1, len(curved), figsize=(4.2 * len(curved), 3.3), squeeze=False)
    for ax, m in zip(axes[0], curved):
        effects = study.effects[m.label]
        cumulative_curves(effects["cumulative_inside"], effects["cumulative_outside"], study.plot_label(m), ax=ax)
    fig.tight_layout()
    return fig


def first_split_grids(fractions: dict[str, np.ndarray], wide_seeds: int, half: int):
    """Correct-fraction grids of one half-split (`studies.errors.ErrorsResult.first_split`): wide vs half 1, and the
    null, half 2 vs half 1."""
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.5))
    correct_fraction_grid(fractions["wide"], fractions["deep_1"], wide_seeds, half, "wide", "deep (half 1)",
                          "wide vs deep", ax=axes[0])
    correct_fraction_grid(fractions["deep_2"], fractions["deep_1"], half, half, "deep (half 2)", "deep (half 1)",
                          "null: deep vs deep", ax=axes[1])
    fig.tight_layout()
    return fig


def split_histograms(paired: dict[str, np.ndarray]):
    """Discoveries and mean |p_A(i) − p_B(i)| over paired half-splits (`errors.paired_split_tests`), test vs null."""
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.0))
    null_histogram(paired["test_n_significant"], paired["null_n_significant"], "significant examples (BH)",
                   ax=axes[0])
    null_histogram(paired["test_mean_abs_diff"], paired["null_mean_abs_diff"], "mean |p_A(i) − p_B(i)|", ax=axes[1])
    fig.tight_layout()
    return fig


def match_by_layer(study):
    """Chapter 7's result (`studies.subspace_match`): the match score at each ε and linear CKA along the post-ReLU layers (means over seed
    pairs), and beside it the ε that matches half the neurons, per pair and on average."""
    fig, (ax, ax_eps) = plt.subplots(1, 2, figsize=(9.6, 3.6))
    depth = np.arange(len(study.layers))
    for k, eps in enumerate(study.eps):
        ax.plot(depth, study.scores[:, :, k].mean(0), "o-", markersize=3, label=f"match, ε = {eps:g}")
    ax.plot(depth, study.cka.mean(0), "k--", linewidth=1.5, label="linear CKA")
    ax.set_xlabel("post-ReLU layer")
    ax.set_ylabel(f"mean over {len(study.pairs)} seed pairs")
    ax.set_ylim(0, 1.02)
    ax.legend(frameon=False, fontsize=7, ncol=2)
    for row in study.half_eps:
        ax_eps.plot(depth, row, "-", color="grey", alpha=0.4, linewidth=0.8)
    ax_eps.plot(depth, study.half_eps.mean(0), "o-", color="tab:red", markersize=3, label="mean over seed pairs")
    ax_eps.set_xlabel("post-ReLU layer")
    ax_eps.set_ylabel("ε that matches half the neurons")
    ax_eps.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


def power_curve(curve: list[dict], trained: int, wanted: float):
    """Expected discoveries (and under the null) against the wide population's seeds m (deep: 2m), ours marked."""
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    m = [p["m_a"] for p in curve]
    mean = np.array([p["expected_discoveries"] for p in curve])
    sd = np.array([p["sd_discoveries"] for p in curve])
    ax.plot(m, mean, "o-", label="expected discoveries (alternative)")
    ax.fill_between(m, np.clip(mean - sd, 0, None), mean + sd, alpha=0.2)
    ax.plot(m, [p["expected_false_discoveries_under_null"] for p in curve], "s--", color="grey",
            label="under the null")
    ax.axhline(wanted, color="black", lw=0.8, ls=":", label=f"{wanted:g} discoveries")
    ax.axvline(trained, color="crimson", lw=1.2, label=f"trained here: m = {trained}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(m, [str(v) for v in m])
    ax.set_xlabel("wide seeds m (deep seeds 2m)")
    ax.set_ylabel("significant examples")
    ax.legend(fontsize=8)
    return fig


def example_scatter(pairs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """Per-example correct fraction of one population against another, discoveries highlighted, one panel a pair."""
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.4 * len(pairs), 4.0), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (title, (x, y, significant)) in zip(axes[0], pairs.items()):
        jx, jy = (rng.uniform(-0.012, 0.012, len(x)) for _ in range(2))
        ax.scatter(x[~significant] + jx[~significant], y[~significant] + jy[~significant], s=3, alpha=0.15,
                   color="grey", rasterized=True)
        ax.scatter(x[significant], y[significant], s=14, color="crimson",
                   label=f"{int(significant.sum())} significant")
        ax.plot([0, 1], [0, 1], color="black", lw=0.6)
        ax.set_xlabel(title.split(" vs ")[0] + ": fraction of seeds right")
        ax.set_ylabel(title.split(" vs ")[1] + ": fraction of seeds right")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def image_grid(rows: dict[str, np.ndarray], captions: dict[str, list[str]] | None = None, size: float = 0.9):
    """Rows of small grey images (e.g. each seed's dominant examples), one row per key."""
    cols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), cols, figsize=(size * cols, size * len(rows) + 0.4), squeeze=False)
    for r, (title, images) in enumerate(rows.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(np.asarray(images[c]).squeeze(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                if captions is not None:
                    ax.set_title(captions[title][c], fontsize=6)
        axes[r][0].text(-0.5, 0.5, title, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=7)
    return fig


def class_bars(counts: dict[str, list[int]], classes: list[str], expected: list[float]):
    """Class histogram of each model's dominant examples, beside the count the class's share would give."""
    fig, ax = plt.subplots(figsize=(7.0, 3.4))
    width = 0.8 / (len(counts) + 1)
    x = np.arange(len(classes))
    for k, (name, values) in enumerate(counts.items()):
        ax.bar(x + k * width, values, width, label=name)
    ax.bar(x + len(counts) * width, expected, width, color="lightgrey", label="by class share")
    ax.set_xticks(x + 0.4 - width / 2, classes, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("dominant examples")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def training_progress(snapshots: dict[str, list[dict]]):
    """Block size and maximum first-PC share against training progress, one line per seed."""
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.4))
    for name, rows in snapshots.items():
        epochs = np.array([r["epoch"] for r in rows], float)
        progress = epochs / epochs.max()
        for ax, key in zip(axes, ("block_size", "max_pc1_share")):
            ax.plot(progress, [r[key] for r in rows], "o-", label=name)
    for ax, label in zip(axes, ("block size (share of stream layers)", "maximum first-PC share")):
        ax.set_xlabel("fraction of training")
        ax.set_ylabel(label)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def lens_heatmaps(matrices: dict[str, np.ndarray], title: str, span: tuple[int, int] | None = None,
                  columns: int = 5, cell_size: float = 2.2):
    """One model's layer-by-layer similarity under each measure (colour 0-1), the CKA block outlined."""
    rows = -(-len(matrices) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(cell_size * columns + 0.9, cell_size * rows + 0.6),
                             squeeze=False)
    image = None
    for ax, (name, matrix) in zip(axes.ravel(), matrices.items()):
        image = ax.imshow(np.clip(np.asarray(matrix), 0, 1), origin="lower", vmin=0, vmax=1, cmap="magma",
                          interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        if span is not None:
            from matplotlib.patches import Rectangle

            side = span[1] - span[0] + 1
            ax.add_patch(Rectangle((span[0] - 0.5, span[0] - 0.5), side, side, fill=False, edgecolor="cyan",
                                   linewidth=1.2, linestyle="--"))
    for ax in axes.ravel()[len(matrices):]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02, label="similarity")
    fig.suptitle(title, fontsize=9)
    return fig


def vit_grid(models: list):
    """Chapter 10: every ViT's all-layer heatmap of one seed (rows n_train, most data on top), CKA-only blocks outlined."""
    archs = sorted({(m.run.config.depth, m.run.config.width) for m in models})
    seed = min(m.run.config.seed for m in models)
    n_trains = sorted({m.run.config.n_train for m in models}, reverse=True)
    by_key = {(m.run.config.depth, m.run.config.width, m.run.config.n_train): m
              for m in models if m.run.config.seed == seed}
    layout = [[by_key.get((d, w, n)) for d, w in archs] for n in n_trains]
    return heatmap_grid([[m.cka if m else None for m in row] for row in layout], [f"n_train = {n}" for n in n_trains],
                        [architecture_label(d, w, arch="vit") for d, w in archs],
                        blocks=[[m.block_cka_only if m else None for m in row] for row in layout])


def vit_profiles(models: list, token_ratios: dict[str, np.ndarray]):
    """First-PC share and token-norm ratio along the residual stream of some ViTs, their CKA-only blocks shaded."""
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 3.7))
    spans = {m.label: m.relative_span(m.block_cka_only) for m in models}
    layer_profiles({m.label: m.pc1_share[m.stream] for m in models}, "first-PC share of variance", spans, ax=axes[0])
    layer_profiles({m.label: token_ratios[m.run.config.name()] for m in models},
                   "largest / median token norm (mean over images)", spans, ax=axes[1])
    highest = max(float(np.max(token_ratios[m.run.config.name()])) for m in models)
    axes[1].set_ylim(0, 1.05 * highest)
    axes[1].get_legend().remove()
    fig.tight_layout()
    return fig


def vit_beside_resnet(pair, raw: np.ndarray, calibrated: np.ndarray):
    """A ViT's and a ResNet's stream heatmaps, and the cross heatmap (ViT rows) raw and calibrated (mean over pairs)."""
    return heatmap_row([pair.vit.stream_cka, pair.resnet.stream_cka, raw, calibrated],
                       [pair.vit.label, pair.resnet.label, "ViT × ResNet, CKA", "ViT × ResNet, calibrated"],
                       xlabels=["ViT stream layer", "ResNet stream layer"] + ["ResNet stream layer"] * 2,
                       ylabels=["ViT stream layer", "ResNet stream layer"] + ["ViT stream layer"] * 2)
