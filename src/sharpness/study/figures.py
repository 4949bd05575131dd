"""The study's figures, drawn with matplotlib's object API (no pyplot, no global backend change).

Each function takes data that is already computed and returns a :class:`matplotlib.figure.Figure`;
:func:`save` writes it as PNG and PDF. Every text that comes from the data has its ``$`` escaped, so
a parameter regex or a hyper-parameter value is printed as it is, never parsed as mathtext.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_STYLE: dict[Any, Any] = {
    "font.size": 9,
    "axes.titlesize": 8.5,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 130,
}


def _wrap(text: str, width: int) -> str:
    """Break a spec string into lines of at most ``width`` characters after its ``,`` and ``:``.

    >>> print(_wrap("worst-linf-elementwise:rho=0.001,m=64,n_examples=128", 30))
    worst-linf-elementwise:
    rho=0.001,m=64,n_examples=128
    """
    lines = [""]
    for token in re.split(r"(?<=[,:])", text):
        if lines[-1] and len(lines[-1]) + len(token) > width:
            lines.append("")
        lines[-1] += token
    return "\n".join(lines)


def _plain(text: object) -> str:
    r"""Text shown literally: matplotlib reads a string with two ``$`` as mathtext unless escaped.

    >>> _plain('params="fc$",lr=$1')
    'params="fc\\$",lr=\\$1'
    """
    return str(text).replace("$", r"\$")


@contextlib.contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        yield


def scatter(
    table: pd.DataFrame,
    measures: Sequence[str],
    target: str,
    color_by: str | None,
    taus: Mapping[str, float],
    target_label: str,
    color_label: str = "",
    x_labels: Mapping[str, str] | None = None,
    errors: Mapping[str, np.ndarray] | None = None,
    notes: Mapping[str, Sequence[str]] | None = None,
) -> Figure:
    """One panel per measure: the measure (x) against the target (y), coloured by ``color_by``.

    Each panel's title is the measure's name, its τ from ``taus`` and its ``notes`` (what to read
    with care); its x axis says what the value is (``x_labels``, default "sharpness"); ``errors``
    (per measure, one standard error per row of ``table``, NaN for none) draw horizontal error bars.
    A numeric colour column gets a colour bar (logarithmic when positive and spanning a factor of
    10 or more); any other gets one colour per value and a legend.
    """
    from matplotlib.figure import Figure

    with _style():
        ncols = min(4, len(measures))
        nrows = math.ceil(len(measures) / ncols)
        fig = Figure(figsize=(3.4 * ncols + 1.2, 3.0 * nrows + 0.3), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        colors = _colors(table[color_by]) if color_by else None
        for ax, measure in zip(axes.flat, measures, strict=False):
            x, y = table[measure].to_numpy(float), table[target].to_numpy(float)
            shown = np.isfinite(x) & np.isfinite(y)
            c = colors["values"][shown] if colors else "tab:blue"
            if errors is not None and measure in errors:
                xerr = np.nan_to_num(np.asarray(errors[measure], float)[shown], nan=0.0)
                ax.errorbar(x[shown], y[shown], xerr=xerr, fmt="none", ecolor="0.45", elinewidth=0.8, zorder=1)
            mappable = ax.scatter(x[shown], y[shown], c=c, s=22, edgecolors="black", linewidths=0.3, zorder=2,
                                  **_cmap(colors))
            if shown.any() and np.all(x[shown] > 0) and x[shown].max() >= 100 * x[shown].min():
                ax.set_xscale("log")
            tau = taus[measure]
            note = "; ".join((notes or {}).get(measure, ()))
            ax.set_title(_plain(_wrap(measure, 44)) + (f"\nτ = {tau:+.2f}" if math.isfinite(tau) else "")
                         + (f"\n({_plain(_wrap(note, 48))})" if note else ""))
            ax.set_xlabel(_plain(_wrap((x_labels or {}).get(measure, "sharpness"), 44)))
            ax.set_ylabel(_plain(target_label))
            ax.grid(alpha=0.25)
        for ax in axes.flat[len(measures) :]:
            ax.set_visible(False)
        if colors and colors["kind"] == "numeric":
            fig.colorbar(mappable, ax=axes, label=_plain(color_label), shrink=0.9)
        elif colors:
            handles = [
                axes.flat[0].scatter([], [], color=color, s=22, edgecolors="black", linewidths=0.3)
                for color in colors["palette"]
            ]
            names = [_plain(n) for n in colors["names"]]
            fig.legend(handles, names, title=_plain(color_label), loc="outside right upper")
    return fig


def _colors(values: pd.Series) -> dict[str, Any]:
    """Per-point colour values: floats for a numeric column, palette colours for any other."""
    import pandas as pd
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize

    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        v = values.to_numpy(float)
        finite = v[np.isfinite(v)]
        lo, hi = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
        norm = LogNorm(lo, hi) if lo > 0 and hi >= 10 * lo else Normalize(lo, hi if hi > lo else lo + 1)
        return {"kind": "numeric", "values": v, "norm": norm}
    names = [str(v) for v in dict.fromkeys(values.map(str))]
    palette = [colormaps["tab10"](i % 10) for i in range(len(names))]
    lookup = dict(zip(names, palette, strict=True))
    points = np.array([lookup[str(v)] for v in values])
    return {"kind": "category", "values": points, "names": names, "palette": palette}


def _cmap(colors: dict[str, Any] | None) -> dict[str, Any]:
    return {"cmap": "viridis", "norm": colors["norm"]} if colors and colors["kind"] == "numeric" else {}


def tau_vs_rho(curves: pd.DataFrame) -> Figure:
    """τ against ρ, one panel per target, one line per definition family.

    ``curves`` has columns ``family``, ``rho``, ``target`` (a label) and ``tau``.
    """
    from matplotlib.figure import Figure

    with _style():
        targets = list(dict.fromkeys(curves["target"]))
        fig = Figure(figsize=(3.6 * len(targets) + 0.4, 4.2), layout="constrained")
        axes = fig.subplots(1, len(targets), squeeze=False, sharey=True)[0]
        for ax, target in zip(axes, targets, strict=True):
            for family, line in curves[curves["target"] == target].groupby("family", sort=False):
                line = line.sort_values("rho")
                ax.plot(line["rho"], line["tau"], marker="o", ms=4, label=_plain(_wrap(str(family), 48)))
            ax.axhline(0.0, color="grey", lw=0.8)
            ax.set_xscale("log")
            ax.set_ylim(-1.05, 1.05)
            ax.set_yticks([-1.0, -0.5, 0.0, 0.5, 1.0])
            ax.set_xlabel("ρ")
            ax.set_title(_plain(f"τ with {target}"))
            ax.grid(alpha=0.25)
        axes[0].set_ylabel("Kendall τ")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), fontsize=7.5)
    return fig


def heatmap(matrix: pd.DataFrame, title: str, label: str, vmin: float = -1.0, vmax: float = 1.0) -> Figure:
    """A rows × columns heat map, each cell annotated with its value (``–`` when undefined)."""
    from matplotlib.figure import Figure

    with _style():
        values = matrix.to_numpy(float)
        nrows, ncols = values.shape
        # room for the row labels (about 0.06 inch per character at 7.5 pt) and the slanted column labels
        rows_width = 0.06 * max(map(len, map(str, matrix.index)))
        columns_height = 0.045 * max(map(len, map(str, matrix.columns)))
        size = (2.0 + rows_width + 0.75 * ncols, 1.4 + columns_height + 0.32 * nrows)
        fig = Figure(figsize=size, layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu_r", vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_xticks(range(ncols), [_plain(c) for c in matrix.columns], rotation=35, ha="right")
        ax.set_yticks(range(nrows), [_plain(r) for r in matrix.index], fontsize=7.5)
        _annotate(ax, values, vmax)
        ax.set_title(_plain(title))
        fig.colorbar(image, ax=ax, label=_plain(label), shrink=0.8)
    return fig


def _annotate(ax: Axes, values: np.ndarray, vmax: float) -> None:
    for (i, j), v in np.ndenumerate(values):
        strong = math.isfinite(v) and abs(v) > 0.6 * vmax
        text = f"{v:.2f}" if math.isfinite(v) else "–"
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if strong else "black")


def save(fig: Figure, folder: Path, name: str) -> bytes:
    """Write ``folder/name.png`` and ``folder/name.pdf``; return the PNG's bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    with _style():
        fig.savefig(png, format="png")
        fig.set_layout_engine("none")  # keep the layout just computed: the PDF need not redo it
        fig.savefig(folder / f"{name}.pdf", format="pdf", metadata={"CreationDate": None})
    return png.read_bytes()
