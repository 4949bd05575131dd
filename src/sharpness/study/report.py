"""The study report: one self-contained ``report.html`` plus PNG and PDF figures, and a terminal table.

:func:`write_report` takes the study's long table (``sharpness.study.load``: one row per model and
definition) and asks whether each definition's sharpness ranks the models as their generalization
does: Kendall τ-b with every target (test error, generalization gap, each OOD error, and the
hyper-parameters themselves: a measure that merely tracks the learning rate shows up there), with a
bootstrap interval, the granulated Ψ, the conditional mutual information and the sign-error with the
primary target (:mod:`sharpness.stats`). The HTML has its CSS inline and its figures embedded as
base64 PNG, and every value in it is HTML-escaped. :func:`report` does all this for a study folder,
with the targets and colouring of its config copy.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sharpness import stats
from sharpness.errors import SharpnessError
from sharpness.spec import Spec
from sharpness.study import figures
from sharpness.study.config import load_config
from sharpness.study.store import CONFIG_COPY, load

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

_PRIMARY = "metric.test_err"


# ---------------------------------------------------------------- labels
def label(column: str) -> str:
    """A reader's name for a table column.

    >>> [label(c) for c in ["metric.test_err", "gap", "metric.ood.gaussian_noise_err", "hp.lr"]]
    ['test error', 'generalization gap', 'OOD error: gaussian_noise', 'lr']
    """
    if column == _PRIMARY:
        return "test error"
    if column == stats.GAP:
        return "generalization gap"
    if column.startswith("metric.ood.") and column.endswith("_err"):
        return "OOD error: " + column[len("metric.ood.") : -len("_err")]
    return column.split(".", 1)[1] if column.startswith(("metric.", "hp.")) else column


def family(spec: str) -> tuple[str, float]:
    """A definition without its radius, and the radius: specs that differ only in ρ share a family.

    >>> family("worst-linf-elementwise:rho=0.002,m=64")
    ('worst-linf-elementwise:m=64', 0.002)
    >>> family("not a spec")
    ('not a spec', nan)
    """
    try:
        parsed = Spec.parse(spec)
    except SharpnessError:
        return spec, math.nan
    head, _, tail = str(parsed).partition(":")
    rest = tail.partition(",")[2]  # the canonical form lists rho first and rho holds no comma
    return (f"{head}:{rest}" if rest else head), parsed.rho


def short_names(specs: Sequence[str]) -> tuple[dict[str, str], str]:
    """Names without the settings every definition shares, and those settings as text.

    >>> short_names(["worst-linf:rho=0.001,m=64,n_iters=5", "average-l2:rho=0.1,m=64"])
    ({'worst-linf:rho=0.001,m=64,n_iters=5': 'worst-linf-elementwise:rho=0.001,n_iters=5', \
'average-l2:rho=0.1,m=64': 'average-l2-elementwise:rho=0.1'}, 'm=64')
    """
    fields = [f for f in dataclasses.fields(Spec) if f.name not in ("case", "norm", "scaling", "rho")]
    try:
        parsed = {s: Spec.parse(s) for s in specs}
        values = {f.name: {getattr(p, f.name) for p in parsed.values()} for f in fields}
        shared = [f for f in fields if len(values[f.name]) == 1 and f.default not in values[f.name]]
        short = {s: str(p.replace(**{f.name: f.default for f in shared})) for s, p in parsed.items()}
    except SharpnessError:  # not spec strings, or a reset that the spec's checks refuse
        return {s: s for s in specs}, ""
    return short, ", ".join(f"{f.name}={next(iter(values[f.name]))}" for f in shared)


_QUANTITY = {"worst": "worst-case loss increase", "average": "average loss increase", "trace": "tr(DHD)",
             "eigen": "λmax(DHD)", "keskar": "Keskar sharpness", "pacbayes": "PAC-Bayes σ"}
_SCALING = {"standard": "", "elementwise": " adaptive", "filterwise": " filter-adaptive"}


def quantity(spec: str) -> str:
    """What a definition's value is, with its norm and radius, for an axis label.

    >>> quantity("worst-linf-elementwise:rho=0.002,logit_norm=true")
    'worst-case loss increase, L∞ adaptive + logit norm., ρ = 0.002'
    >>> quantity("average-l2-standard:rho=0.1,m=64")
    'average loss increase, L2, ρ = 0.1'
    >>> quantity("my own measure")
    'my own measure'
    """
    try:
        parsed = Spec.parse(spec)
    except SharpnessError:
        return spec
    norm = {"l2": "L2", "linf": "L∞"}.get(parsed.norm, parsed.norm)
    scaling = _SCALING.get(parsed.scaling, f" {parsed.scaling}")
    geometry = "" if parsed.geometry == "flat" else f" geodesic ({parsed.geometry})"
    extra = " + logit norm." if parsed.logit_norm else ""
    return f"{_QUANTITY.get(parsed.case, parsed.case)}, {norm}{scaling}{geometry}{extra}, ρ = {parsed.rho:g}"


#: Below this many models a τ is reported with a warning: its standard error is about 0.15 or more.
FEW_MODELS = 16
#: A value closer to zero than this many standard errors is not told apart from "not sharp at all".
NEAR_ZERO_SE = 2.0


def caveats(n_models: int, interval: stats.Interval, n_near_zero: int) -> list[str]:
    """Why a definition's τ should be read with care: few models, an interval spanning zero, values in the noise.

    >>> caveats(12, stats.Interval(0.3, -0.1, 0.6, 0.95, 500), 5)
    ['only 12 models', 'interval spans 0', '5 of 12 within 2 s.e. of 0']
    >>> caveats(24, stats.Interval(0.3, 0.1, 0.5, 0.95, 500), 0)
    []
    """
    out = []
    if n_models < FEW_MODELS:
        out.append(f"only {n_models} models")
    if not (interval.low > 0 or interval.high < 0):
        out.append("interval spans 0")
    if n_near_zero:
        out.append(f"{n_near_zero} of {n_models} within {NEAR_ZERO_SE:g} s.e. of 0")
    return out


def near_zero(values: pd.Series, stderr: pd.Series) -> int:
    """How many values lie within :data:`NEAR_ZERO_SE` standard errors of zero (rows with both finite)."""
    keep = values.notna() & stderr.notna()
    return int((values[keep].abs() < NEAR_ZERO_SE * stderr[keep]).sum())


# -------------------------------------------------------------- analysis
@dataclass(frozen=True)
class Analysis:
    """Everything the report shows, computed once."""

    table: pd.DataFrame  # one row per model (stats.per_model)
    specs: list[str]  # definitions with at least one measured model
    names: dict[str, str]  # spec -> name shown (without the settings all share)
    common: str  # the settings all definitions share
    targets: list[str]
    axes: list[str]
    primary: str
    color_by: str | None
    tau: pd.DataFrame  # specs x targets
    ci: dict[str, stats.Interval]
    psi: dict[str, stats.GranulatedTau]
    cmi: dict[str, stats.ConditionalMI]
    sign: dict[str, stats.SignError]
    within: dict[str, dict[str, pd.DataFrame]]  # categorical axis -> spec -> stats.tau_within
    failed: pd.DataFrame
    stderr: pd.DataFrame  # one row per model, one column per spec: the value's standard error
    caveats: dict[str, list[str]]  # spec -> what to read with care (see :func:`caveats`)


def _prepare(df: pd.DataFrame, targets: Sequence[str] | None) -> tuple[pd.DataFrame, list[str], list[str]]:
    table = stats.per_model(df)
    specs = [s for s in dict.fromkeys(df["spec"]) if table[s].notna().any()]
    chosen = stats.default_targets(table) if targets is None else [_resolve(table, t, "target") for t in targets]
    return table, specs, chosen


def _resolve(table: pd.DataFrame, name: str, what: str) -> str:
    """A column named in full (``metric.test_err``) or short (``test_err``, ``lr``)."""
    for candidate in (name, f"metric.{name}", f"hp.{name}"):
        if candidate in table.columns:
            return candidate
    options = [str(c) for c in table.columns if str(c).startswith(("hp.", "metric.")) or c == stats.GAP]
    raise SharpnessError(f"unknown {what} {name!r}; the study table has {options}")


def analyse(
    df: pd.DataFrame, targets: Sequence[str] | None = None, color_by: str | None = None, n_boot: int = 500
) -> Analysis:
    """Compute every statistic of the report from the study's long table."""
    table, specs, chosen = _prepare(df, targets)
    if not chosen:
        raise SharpnessError("no targets: the study table has no metric.* or varying hp.* columns")
    axes = stats.default_axes(table)
    primary = _PRIMARY if _PRIMARY in chosen else chosen[0]
    if color_by is not None:
        color_by = _resolve(table, color_by, "color_by column")
    elif axes:
        color_by = "hp.lr" if "hp.lr" in axes else axes[0]
    ci, psi, cmi, sign = {}, {}, {}, {}
    for spec in specs:
        pair = table[[spec, primary]]
        ci[spec] = stats.bootstrap_ci(pair, _tau_of(spec, primary), n=n_boot)
        if axes:
            psi[spec] = stats.granulated_kendall(table, spec, primary, axes)
            cmi[spec] = stats.conditional_mutual_information(table, spec, primary, axes)
            sign[spec] = stats.sign_error(table, spec, primary, axes)
    within = _within_groups(table, specs, primary, axes)
    failed = df.loc[df["status"] != "done", [c for c in ("model", "spec", "status", "error") if c in df.columns]]
    tau = stats.correlation_table(table, specs, chosen)
    names, common = short_names(specs)
    stderr = stats.per_model(df, values="stderr").reindex(table.index)[specs]
    notes = {s: caveats(int(table[[s, primary]].notna().all(axis=1).sum()), ci[s], near_zero(table[s], stderr[s]))
             for s in specs}
    return Analysis(table, specs, names, common, chosen, axes, primary, color_by, tau, ci, psi, cmi, sign, within,
                    failed, stderr, notes)


def _within_groups(table: pd.DataFrame, specs: Sequence[str], primary: str,
                   axes: Sequence[str]) -> dict[str, dict[str, pd.DataFrame]]:
    """For each categorical axis, each definition's :func:`stats.tau_within` with ``primary``."""
    return {x: {s: stats.tau_within(table, s, primary, x) for s in specs} for x in _categorical(table, axes)}


def _categorical(table: pd.DataFrame, axes: Sequence[str], max_groups: int = 8) -> list[str]:
    """Axes whose values name kinds rather than amounts (architecture, optimizer), with a readable count of them."""
    import pandas as pd

    def is_amount(column: pd.Series) -> bool:
        return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)

    return [x for x in axes if not is_amount(table[x]) and table[x].astype(str).nunique() <= max_groups]


def _tau_of(measure: str, target: str) -> Callable[[pd.DataFrame], float]:
    return lambda t: stats.kendall_tau(t[measure], t[target])


def _tau(a: Analysis, spec: str, target: str) -> float:
    return float(a.tau.loc[spec, target])  # type: ignore[arg-type]


# ---------------------------------------------------------------- terminal
def format_tau_table(df: pd.DataFrame, targets: Sequence[str] | None = None) -> str:
    """Kendall τ-b of each definition (rows) with each target (columns), as fixed-width text.

    ``df`` is the study's long table; ``targets`` default to :func:`sharpness.stats.default_targets`.
    """
    table, specs, chosen = _prepare(df, targets)
    tau = stats.correlation_table(table, specs, chosen)
    heads = [label(t).removeprefix("OOD error: ") for t in chosen]
    first = max([len("definition"), *map(len, specs)])
    widths = [max(6, len(h)) for h in heads]
    lines = [
        f"Kendall tau-b with each target over {len(table)} models (rows: definitions)",
        "  ".join(["definition".ljust(first), *(h.rjust(w) for h, w in zip(heads, widths, strict=True))]),
    ]
    for spec in specs:
        cells = (_num(tau.loc[spec, t], 2, signed=True).rjust(w) for t, w in zip(chosen, widths, strict=True))
        lines.append("  ".join([spec.ljust(first), *cells]))
    if not (specs and chosen):
        return "\n".join(lines)
    primary = _PRIMARY if _PRIMARY in chosen else chosen[0]
    for axis, within in _within_groups(table, specs, primary, stats.default_axes(table)).items():
        groups = _group_heads(within)
        widths = [max(6, len(g)) for g in groups]
        lines += ["", f"within each {label(axis)}: tau-b with {label(primary)}",
                  "  ".join(["definition".ljust(first), *(g.rjust(w) for g, w in zip(groups, widths, strict=True))])]
        for spec in specs:
            cells = (_num(float(t), 2, signed=True).rjust(w) for t, w in zip(within[spec]["tau"], widths, strict=True))
            lines.append("  ".join([spec.ljust(first), *cells]))
    return "\n".join(lines)


def _num(value: object, digits: int = 3, signed: bool = False) -> str:
    if value is None or not isinstance(value, (int, float)) or math.isnan(value):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


# ---------------------------------------------------------------- figures
def _figures(a: Analysis, folder: Path) -> list[tuple[str, str, bytes]]:
    """Draw, save and return ``(name, caption, png bytes)`` for every figure of the report."""
    import pandas as pd

    if not a.specs:
        return []
    target, shown = label(a.primary), _one_rho_per_family(a.specs)
    color = label(a.color_by) if a.color_by else ""
    taus = {a.names[s]: _tau(a, s, a.primary) for s in shown}
    drawn: list[tuple[str, str, Figure]] = [
        (
            "scatter",
            f"Sharpness against {target}, one point per model with ±1 standard error, coloured by "
            f"{color or 'nothing'}; τ (Kendall τ-b) in each title, with what to read with care. A definition "
            "measured at several ρ is shown at its median ρ.",
            figures.scatter(
                a.table.rename(columns=a.names), [a.names[s] for s in shown], a.primary, a.color_by, taus, target,
                color, x_labels={a.names[s]: quantity(s) for s in shown},
                errors={a.names[s]: a.stderr[s].to_numpy(float) for s in shown},
                notes={a.names[s]: a.caveats[s] for s in shown},
            ),
        ),
        (
            "tau_heatmap",
            "Kendall τ of every definition with every target.",
            figures.heatmap(a.tau.rename(index=a.names, columns=label), "Kendall τ-b", "τ"),
        ),
    ]
    curves = _rho_curves(a)
    if len(curves):  # definitions that are not Spec strings have no ρ
        drawn.insert(
            1,
            (
                "tau_vs_rho",
                "Kendall τ against the radius ρ; definitions that differ only in ρ form one line.",
                figures.tau_vs_rho(curves),
            ),
        )
    if a.psi:
        psi = {a.names[s]: {**{label(k): v for k, v in g.per_axis.items()}, "Ψ": g.psi} for s, g in a.psi.items()}
        drawn.append(
            (
                "psi_per_axis",
                f"Granulated Kendall coefficient with {target}: ψ for each hyper-parameter axis (only that axis "
                "varies within a group) and their mean Ψ.",
                figures.heatmap(pd.DataFrame.from_dict(psi, orient="index"), f"ψ per axis with {target}", "ψ"),
            )
        )
    return [(name, caption, figures.save(fig, folder, name)) for name, caption, fig in drawn]


def _one_rho_per_family(specs: list[str]) -> list[str]:
    by_family: dict[str, list[tuple[float, str]]] = {}
    for spec in specs:
        fam, rho = family(spec)
        by_family.setdefault(fam, []).append((rho, spec))
    return [sorted(members)[(len(members) - 1) // 2][1] for members in by_family.values()]


def _rho_curves(a: Analysis) -> pd.DataFrame:
    import pandas as pd

    wanted = [a.primary, stats.GAP, a.color_by]
    targets = [t for t in dict.fromkeys(wanted) if t in a.targets]
    rows = [(*family(a.names[spec]), label(t), a.tau.loc[spec, t]) for spec in a.specs for t in targets]
    return pd.DataFrame(rows, columns=["family", "rho", "target", "tau"]).dropna(subset=["rho"])


# -------------------------------------------------------------------- HTML
def write_report(
    df: pd.DataFrame,
    out_dir: Path,
    color_by: str | None = None,
    targets: Sequence[str] | None = None,
    n_boot: int = 500,
) -> Path:
    """Write ``out_dir/report.html`` and ``out_dir/figures/*.png|pdf``; return the HTML's path.

    Args:
        df: the study's long table (``sharpness.study.load``).
        out_dir: the study folder (created if needed).
        color_by: hyper-parameter colouring the scatter (``lr`` or ``hp.lr``); default the learning
            rate when it varies, else the first varying hyper-parameter.
        targets: columns to correlate with (full or short names); default test error, generalization
            gap, every OOD error and every numeric varying hyper-parameter.
        n_boot: bootstrap resamples for the interval of τ with the primary target.
    """
    out_dir = Path(out_dir)
    a = analyse(df, targets, color_by, n_boot)
    pictures = _figures(a, out_dir / "figures")
    page = _page(a, pictures, df)
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d232b;
background:#f6f7f9;margin:0}
main{max-width:1180px;margin:0 auto;padding:28px 32px 60px;background:#fff;min-height:100vh}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 8px;border-bottom:1px solid #e3e6ea;
padding-bottom:4px}
.lede{color:#4a5563;margin:4px 0 16px}.note{color:#5b6573;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0;display:block;overflow-x:auto;max-width:100%}
th,td{padding:4px 9px;border:1px solid #e3e6ea;text-align:right;white-space:nowrap}
th{background:#f0f2f5;font-weight:600;white-space:normal;vertical-align:bottom;min-width:48px}
td.l,th.l{text-align:left;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
figure{margin:18px 0}figure img{max-width:100%;border:1px solid #e3e6ea}figcaption{color:#4a5563;font-size:13px}
dl dt{font-weight:600;margin-top:8px}dl dd{margin-left:18px}code{background:#f0f2f5;padding:0 3px}
.wrap td{white-space:pre-wrap;word-break:break-word;max-width:560px}
details summary{cursor:pointer;font-weight:600;margin:18px 0 6px}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """An HTML table; ``rows`` hold already escaped cell HTML; the first ``left`` columns align left."""
    cls = ['class="l"' if i < left else "" for i in range(len(head))]
    top = "".join(f"<th {c}>{_e(h)}</th>" for c, h in zip(cls, head, strict=True))
    body = "".join(
        "<tr>" + "".join(f"<td {c}>{cell}</td>" for c, cell in zip(cls, row, strict=True)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{top}</tr></thead><tbody>{body}</tbody></table>"


def _tau_cell(value: float) -> str:
    """τ as text on a red (+1) / white (0) / blue (-1) background."""
    if math.isnan(value):
        return "–"
    t = max(-1.0, min(1.0, value))
    end = (178, 24, 43) if t > 0 else (33, 102, 172)
    rgb = [round(255 + abs(t) * (c - 255)) for c in end]
    ink = "#fff" if abs(t) > 0.6 else "#1d232b"
    return (
        f'<span style="display:block;background:rgb({rgb[0]},{rgb[1]},{rgb[2]});color:{ink};margin:-4px -9px;'
        f'padding:4px 9px">{_e(_num(value, 2, signed=True))}</span>'
    )


def _page(a: Analysis, pictures: list[tuple[str, str, bytes]], df: pd.DataFrame) -> str:
    from sharpness import __version__

    n_done = int((df["status"] == "done").sum())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">',
        f"<title>Sharpness study report</title><style>{_CSS}</style></head><body><main>",
        "<h1>Does sharpness predict generalization?</h1>",
        f'<p class="lede">{len(a.table)} models × {df["spec"].nunique()} definitions: '
        f"{n_done} measurements done, {len(a.failed)} not done. Primary target: <b>{_e(label(a.primary))}</b>. "
        f"Hyper-parameter axes: {_e(', '.join(label(x) for x in a.axes) or 'none')}."
        + (f" Every definition also sets <code>{_e(a.common)}</code>." if a.common else "")
        + "</p>",
        _headline(a),
        "<h2>Figures</h2>",
        *(_figure(name, caption, png) for name, caption, png in pictures),
        "<h2>Kendall τ-b: definitions × targets</h2>",
        _table(
            ["definition", *map(label, a.targets)],
            [[_e(a.names[s]), *(_tau_cell(_tau(a, s, t)) for t in a.targets)] for s in a.specs],
        ),
        *(_within_table(a, axis) for axis in a.within),
        _psi_table(a),
        _failed(a.failed),
        _models(a.table),
        _methods(a),
        f'<p class="note">Written by sharpness {_e(__version__)}.</p>',
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _headline(a: Analysis) -> str:
    extra = [t for t in dict.fromkeys([stats.GAP, a.color_by]) if t in a.targets and t != a.primary]
    head = ["definition", f"τ with {label(a.primary)}", f"{a.ci[a.specs[0]].level:.0%} CI" if a.specs else "CI"]
    head += [f"τ with {label(t)}" for t in extra]
    if a.axes:
        head += ["Ψ", "CMI (min)", "argmin set", "sign-error", "robust sign-error"]
    head.append("read with care")
    rows = []
    for s in a.specs:
        ci = a.ci[s]
        row = [_e(a.names[s]), _tau_cell(ci.estimate), _e(f"[{_num(ci.low, 2, True)}, {_num(ci.high, 2, True)}]")]
        row += [_tau_cell(_tau(a, s, t)) for t in extra]
        if a.axes:
            cmi, sign = a.cmi[s], a.sign[s]
            argmin = ", ".join(label(x) for x in cmi.argmin) or "∅"
            row += [_tau_cell(a.psi[s].psi), _e(_num(cmi.value)), _e(argmin), _e(_num(sign.mean)), _e(_num(sign.max))]
        row.append(_e("; ".join(a.caveats[s])))
        rows.append(row)
    return f"<h2>Headline: τ with {_e(label(a.primary))}</h2>" + _table(head, rows)


def _figure(name: str, caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="{_e(name)}"><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)} (figures/{_e(name)}.png, .pdf)</figcaption></figure>"
    )


def _psi_table(a: Analysis) -> str:
    if not a.psi:
        return ""
    head = ["definition", *(f"ψ {label(x)}" for x in a.axes), "Ψ", *(f"groups {label(x)}" for x in a.axes)]
    rows = [
        [
            _e(a.names[s]),
            *(_tau_cell(g.per_axis[x]) for x in a.axes),
            _tau_cell(g.psi),
            *(_e(g.n_groups[x]) for x in a.axes),
        ]
        for s, g in a.psi.items()
    ]
    return f"<h2>Granulated Kendall Ψ with {_e(label(a.primary))}</h2>" + _table(head, rows)


def _group_heads(within: dict[str, pd.DataFrame]) -> list[str]:
    """``value (n=models)`` for each group of :func:`stats.tau_within` tables (n: the most over definitions)."""
    import pandas as pd

    sizes = pd.concat([t["n"] for t in within.values()], axis=1).max(axis=1)
    return [f"{value} (n={n})" for value, n in sizes.items()]


def _within_table(a: Analysis, axis: str) -> str:
    if not a.specs:
        return ""
    head = ["definition", "all models", *_group_heads(a.within[axis])]
    rows = [
        [_e(a.names[s]), _tau_cell(a.ci[s].estimate), *(_tau_cell(float(t)) for t in a.within[axis][s]["tau"])]
        for s in a.specs
    ]
    return (f"<h2>Kendall τ-b with {_e(label(a.primary))} within each {_e(label(axis))}</h2>"
            f"<p>Pooled over {_e(label(axis))}, τ can reflect only what separates the groups; these are the "
            f"rank correlations inside each group.</p>" + _table(head, rows))


def _failed(failed: pd.DataFrame) -> str:
    if failed.empty:
        return ""
    rows = [[_e(v) for v in row] for row in failed.itertuples(index=False)]
    table = _table(list(map(str, failed.columns)), rows, left=len(failed.columns))
    return f'<h2>Measurements not done</h2><div class="wrap">{table}</div>'


def _models(table: pd.DataFrame) -> str:
    head = ["model", *(str(c) for c in table.columns)]
    rows = [[_e(model), *(_e(_cell(v)) for v in values)] for model, *values in table.itertuples()]
    return f"<details><summary>Per-model table ({len(table)} models)</summary>{_table(head, rows)}</details>"


def _cell(value: object) -> str:
    return _num(value, 4) if isinstance(value, float) else str(value)


def _methods(a: Analysis) -> str:
    return f"""<h2>How to read this</h2><dl>
<dt>Kendall τ-b</dt><dd>Rank correlation over all models, ties handled: +1 when sharper models always have the
larger target (e.g. error), −1 when always the smaller. A τ with a hyper-parameter (such as the learning rate)
shows what the measure tracks besides generalization. The interval is a percentile bootstrap over models
({a.ci[a.specs[0]].n if a.specs else 0} resamples).</dd>
<dt>Granulated Ψ (Jiang et al. 2020)</dt><dd>For each hyper-parameter, τ within groups of models that share
every other hyper-parameter, averaged over groups (ψ); Ψ is the mean over hyper-parameters.</dd>
<dt>Conditional mutual information (Jiang et al. 2020)</dt><dd>Between the signs of the measure's and the
target's differences over pairs of models, given the pair's values of a set of at most two hyper-parameters,
normalised by the target's conditional entropy; the minimum over such sets is shown with the set attaining it.
0: the hyper-parameters explain everything the measure knows; 1: the measure determines the order.</dd>
<dt>Sign-error (Dziugaite et al. 2020)</dt><dd>Over environments (pairs of models that differ in one
hyper-parameter), the fraction of pairs the measure orders against the target (½ for a tie); mean over
environments, and the worst environment (robust).</dd></dl>"""


# ------------------------------------------------------------ a study folder
def report(folder: str | Path, color_by: str | None = None, out: str | Path | None = None) -> tuple[Path, str]:
    """Write the study's ``report.html`` and figures; returns its path and the τ table as text.

    ``color_by`` and the targets default to the ``report`` and ``targets`` of the config copy; ``out`` (default:
    the study folder) receives the report, so that a read-only study can be reported elsewhere.
    """
    folder = Path(folder)
    cfg = load_config(folder / CONFIG_COPY)
    df = load(folder)
    targets = expand_targets(cfg.targets, df.columns)
    target = Path(out) if out is not None else folder
    if out is None and not os.access(folder, os.W_OK):
        raise SharpnessError(f"the study folder {str(folder)!r} is read-only: write the report elsewhere (--out DIR)")
    target.mkdir(parents=True, exist_ok=True)
    path = write_report(df, target, color_by=color_by or cfg.color_by, targets=targets)
    return path, format_tau_table(df, targets)


def expand_targets(targets: Sequence[str] | None, columns: Iterable[str]) -> list[str] | None:
    """The config's targets with ``ood`` standing for every OOD error column of the table.

    >>> expand_targets(["test_err", "ood"], ["metric.ood.blur_err", "metric.ood.blur_loss", "metric.ood.noise_err"])
    ['test_err', 'metric.ood.blur_err', 'metric.ood.noise_err']
    """
    if targets is None:
        return None
    ood = [c for c in columns if c.startswith("metric.ood.") and c.endswith("_err")]
    return [name for t in targets for name in (ood if t == "ood" else [t])]
