"""An ipywidgets explorer over precomputed figures that also works in the static HTML book, offline.

Layer: book support (no widedeep imports).

The book's HTML has no kernel behind it, so a control cannot call Python. Instead every figure is
rendered once, as a PNG inside an `Image` widget, and the figures are arranged in nested `Stack`s, one
level per dimension (e.g. width, depth, n_train, seed). One `Dropdown` per dimension is joined by
`jslink` to the `selected_index` of every Stack at its level: a link runs in the browser's widget
manager from the widget state that the executed notebook embeds, so switching works in the static
page. In a live kernel the same dropdowns also update the stacks from Python (`observe`), which is
what the tests check. Combinations that were not computed show a short note instead of a figure.
"""

from __future__ import annotations

import io
from collections.abc import Hashable, Mapping, Sequence

import ipywidgets as widgets


def arms_with_seed_study(arms: Mapping[str, Sequence], arm: str, seed_models: Sequence) -> dict[str, list]:
    """The explorer's models by schedule arm, with the seed study added to its own arm's list.

    New lists throughout: appending in place would also grow the list a study holds (a chapter once
    added the seed study to `study.main` this way).
    """
    out = {name: list(models) for name, models in arms.items()}
    out.setdefault(arm, []).extend(seed_models)
    return out


def figure_png(fig, dpi: int = 80, close: bool = True) -> bytes:
    """A matplotlib figure as PNG bytes, by default then closed so the notebook does not also draw it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(fig)
    return buffer.getvalue()


def level_values(keys: Sequence[tuple], level: int) -> list:
    """The distinct values of one dimension over all keys, sorted."""
    return sorted({key[level] for key in keys})


def _check_items(items: Mapping[tuple, bytes], names: Sequence[str]) -> None:
    if not items:
        raise ValueError("the explorer needs at least one figure")
    if not names:
        raise ValueError("the explorer needs at least one dimension name")
    for key in items:
        if not isinstance(key, tuple) or len(key) != len(names):
            raise ValueError(f"every key must be a tuple of {len(names)} values ({', '.join(names)}); got {key!r}")


def _build(items: Mapping[tuple, bytes], values: list[list], prefix: tuple, stacks: list[list[widgets.Stack]],
           placeholder: str) -> widgets.Widget:
    """The widget for all keys that start with `prefix`: a Stack over the next level, or a leaf."""
    level = len(prefix)
    if level == len(values):
        if prefix in items:
            return widgets.Image(value=items[prefix], format="png", layout=widgets.Layout(max_width="100%"))
        return widgets.HTML(f"<p><em>{placeholder}</em></p>")
    stack = widgets.Stack([_build(items, values, prefix + (v,), stacks, placeholder) for v in values[level]],
                          selected_index=0)
    stacks[level].append(stack)
    return stack


def nested_explorer(items: Mapping[tuple, bytes], names: Sequence[str], formats: Mapping[str, str] | None = None,
                    placeholder: str = "not computed in this profile") -> widgets.VBox:
    """Dropdowns (one per dimension in `names`) that switch between the PNG figures keyed by value tuples.

    `formats` maps a dimension name to a format string for its dropdown labels, e.g. {"width": "×{:g}"}.
    The first key (in sorted order) is selected at start. The returned box holds the dropdowns (in
    `.controls`), the nested stacks (in `.stacks`, one list per level) and each level's values (`.values`)
    and the jslinks (`.links`).
    """
    _check_items(items, names)
    formats = dict(formats or {})
    keys = list(items)
    values = [level_values(keys, level) for level in range(len(names))]
    stacks: list[list[widgets.Stack]] = [[] for _ in names]
    root = _build(items, values, (), stacks, placeholder)
    controls, links = [], []
    for level, name in enumerate(names):
        label = formats.get(name, "{}")
        dropdown = widgets.Dropdown(options=[(label.format(v), i) for i, v in enumerate(values[level])], value=0,
                                    description=name, layout=widgets.Layout(width="auto"),
                                    style={"description_width": "initial"})
        for stack in stacks[level]:
            links.append(widgets.jslink((dropdown, "index"), (stack, "selected_index")))  # works without a kernel

            def follow(change, stack=stack):  # the same in a live kernel, where Python holds the state
                stack.selected_index = change["new"]
            dropdown.observe(follow, names="value")
        controls.append(dropdown)
    first = min(keys)
    for dropdown, level_list, value in zip(controls, values, first):
        dropdown.value = level_list.index(value)
    box = widgets.VBox([widgets.HBox(controls), root])
    box.controls, box.stacks, box.values, box.links = controls, stacks, values, links
    return box


def selected_leaf(box: widgets.VBox) -> widgets.Widget:
    """The widget the explorer shows now (following every stack's selected index): for tests and live use."""
    node = box.children[1]
    while isinstance(node, widgets.Stack):
        node = node.children[node.selected_index]
    return node


def select(box: widgets.VBox, key: Sequence[Hashable]) -> widgets.Widget:
    """Set every dropdown to the values of `key` and return the leaf shown."""
    for dropdown, level_list, value in zip(box.controls, box.values, key):
        if value not in level_list:
            raise ValueError(f"{value!r} is not an option of {dropdown.description!r}: {level_list}")
        dropdown.value = level_list.index(value)
    return selected_leaf(box)
