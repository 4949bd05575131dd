"""The tables of a reproduction's README, recomputed from its ``results.csv`` alone.

    python reproductions/tables.py reproductions/vit_scratch           # print the Markdown
    python reproductions/tables.py reproductions/vit_scratch --write   # replace the README's block
    python reproductions/tables.py reproductions/vit_scratch --check   # exit 1 if the README differs

The generated block sits between ``<!-- tables:begin -->`` and ``<!-- tables:end -->`` in the setting's
``README.md``; everything else in the README is prose. The block holds:

1. the zoo: how many models, their train / test / mean OOD error ranges;
2. one row per definition of ``results.csv`` (in its order): the ``spec`` string, Kendall τ-b with the
   test error, its 95% bootstrap interval (1000 resamples of models, seed 0), then τ with the
   generalization gap, with the mean OOD error and with every numeric hyper-parameter the zoo varies
   (augmentation as its rank none < light < medium < strong); the median over models of value /
   standard error, and the study report's caveats (fewer than 16 models, an interval spanning zero,
   values within two standard errors of zero);
3. Ψ (granulated τ with test error) per axis;
4. τ within groups of models that differ only in their seed, where the zoo has such groups;
5. the permutation null over the whole table of τ (definitions × the four targets test error, gap,
   mean OOD error and the first numeric hyper-parameter, or the first three where there is none).

Every number is a deterministic function of ``results.csv``: the check mode is what a test runs.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from sharpness import stats
from sharpness.study.report import caveats, near_zero

BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"
OOD_MEAN = "ood_mean"
N_BOOT = 1000
N_PERM = 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("setting", type=Path, help="the setting's folder (holds results.csv and README.md)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="replace the README's generated block")
    group.add_argument("--check", action="store_true", help="exit 1 when the README's block differs")
    args = p.parse_args(argv)
    block = tables(pd.read_csv(args.setting / "results.csv"))
    readme = args.setting / "README.md"
    if args.write:
        readme.write_text(replace_block(readme.read_text() if readme.exists() else f"{BEGIN}\n{END}\n", block))
        return 0
    if args.check:
        current = extract_block(readme.read_text())
        if current != block:
            print(f"{readme}: the generated tables differ from results.csv; run with --write", file=sys.stderr)
            return 1
        return 0
    print(block)
    return 0


# ------------------------------------------------------------------ README
def replace_block(text: str, block: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"the README has no {BEGIN} ... {END} block")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def extract_block(text: str) -> str:
    if BEGIN not in text or END not in text:
        return ""
    return text.partition(BEGIN)[2].partition(END)[0].removeprefix("\n")


# ------------------------------------------------------------------ tables
# Categorical axes with a natural order, correlated through their rank.
ORDINAL = {"hp.augment": ("none", "light", "medium", "strong")}


def model_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model (``stats.per_model``) plus the mean OOD error; ordered categories as ranks;
    axes that always change together (dropout and stochastic depth set by one grid axis) as one column."""
    table = stats.per_model(df)
    for column, order in ORDINAL.items():
        if column in table and table[column].isin(order).all():
            table[column] = table[column].map(order.index).astype(float)
    table = merge_collinear(table)
    ood = [c for c in table.columns if str(c).startswith("metric.ood.") and str(c).endswith("_err")]
    if ood:
        table[OOD_MEAN] = table[ood].astype(float).mean(axis=1)
    return table


def merge_collinear(table: pd.DataFrame) -> pd.DataFrame:
    """Drop each varying hyper-parameter column that splits the models exactly as an earlier one does,
    renaming the earlier ``hp.a`` to ``hp.a=b``: Ψ needs axes that can vary one at a time."""
    axes = stats.default_axes(table)
    keep: dict[str, list[str]] = {}
    for axis in axes:
        codes = tuple(pd.factorize(table[axis].astype(str))[0])
        twin = next((k for k in keep if tuple(pd.factorize(table[k].astype(str))[0]) == codes), None)
        if twin is None:
            keep[axis] = [axis]
        else:
            keep[twin].append(axis)
    dropped = [a for group in keep.values() for a in group[1:]]
    renamed = {group[0]: "=".join([group[0], *(a.removeprefix("hp.") for a in group[1:])])
               for group in keep.values() if len(group) > 1}
    return table.drop(columns=dropped).rename(columns=renamed)


def numeric_axes(table: pd.DataFrame) -> list[str]:
    return [c for c in stats.default_axes(table)
            if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])]


def tables(df: pd.DataFrame) -> str:
    table = model_table(df)
    specs = [s for s in dict.fromkeys(df["spec"]) if table[s].notna().any()]
    sections = [zoo_section(table), tau_section(df, table, specs), psi_section(table, specs),
                seed_section(table, specs), null_section(table, specs)]
    return "\n".join(s for s in sections if s)


def _range(values: pd.Series) -> str:
    return f"{values.min():.3f}-{values.max():.3f}"


def zoo_section(table: pd.DataFrame) -> str:
    lines = [f"**Zoo.** {len(table)} models; train error {_range(table['metric.train_err'])}, "
             f"test error {_range(table['metric.test_err'])}"]
    if OOD_MEAN in table:
        lines[0] += f", mean OOD error {_range(table[OOD_MEAN])}"
    lines[0] += "."
    return "\n".join(lines) + "\n"


def targets_of(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(column, header) of every τ column after the test error's."""
    out = [(stats.GAP, "τ gap")]
    if OOD_MEAN in table:
        out.append((OOD_MEAN, "τ mean OOD error"))
    out += [(c, f"τ {c.removeprefix('hp.')}" + (" (rank)" if c in ORDINAL else "")) for c in numeric_axes(table)]
    return out


def tau_cell(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.2f}"


def tau_section(df: pd.DataFrame, table: pd.DataFrame, specs: list[str]) -> str:
    extra = targets_of(table)
    stderr = stats.per_model(df, values="stderr").reindex(table.index)
    head = ["spec", "τ test error", "95% interval", *[h for _, h in extra], "median value / s.e.", "flags"]
    rows = []
    for spec in specs:
        pair = table[[spec, "metric.test_err"]].dropna()
        ci = stats.bootstrap_ci(pair, lambda t, s=spec: stats.kendall_tau(t[s], t["metric.test_err"]), n=N_BOOT)
        taus = [stats.kendall_tau(table[spec], table[c]) for c, _ in extra]
        flags = caveats(len(pair), ci, near_zero(table[spec], stderr[spec]))
        interval = "–" if math.isnan(ci.low) else f"[{ci.low:+.2f}, {ci.high:+.2f}]"
        rows.append([f"`{spec}`", tau_cell(ci.estimate), interval, *map(tau_cell, taus),
                     _median_snr(table[spec], stderr[spec]), "; ".join(flags)])
    return "**Kendall τ-b per definition** (τ > 0: sharper models have the larger value).\n\n" + markdown(head, rows)


def _median_snr(values: pd.Series, stderr: pd.Series) -> str:
    ratio = (values / stderr).replace([np.inf, -np.inf], np.nan).dropna()
    return f"{ratio.median():.3g}" if len(ratio) else "–"


def psi_section(table: pd.DataFrame, specs: list[str]) -> str:
    axes = stats.default_axes(table)
    if not axes:
        return ""
    head = ["spec", "Ψ", *[f"ψ {a.removeprefix('hp.')}" for a in axes]]
    rows = []
    for spec in specs:
        g = stats.granulated_kendall(table, spec, "metric.test_err", axes)
        rows.append([f"`{spec}`", tau_cell(g.psi), *[tau_cell(g.per_axis[a]) for a in axes]])
    return ("**Granulated τ with test error** (ψ per axis: the mean τ over groups of models that differ only "
            "in that axis and the seed).\n\n" + markdown(head, rows))


def seed_groups(table: pd.DataFrame) -> pd.Series | None:
    """A label per model naming its hyper-parameters without the seed; None without repeated groups."""
    axes = stats.default_axes(table)
    if "hp.seed" not in table or not axes:
        return None
    labels = table[axes].astype(str).agg(", ".join, axis=1)
    return labels if labels.value_counts().max() >= 2 else None


def seed_section(table: pd.DataFrame, specs: list[str]) -> str:
    labels = seed_groups(table)
    if labels is None:
        return ""
    grouped = table.assign(group=labels)
    targets = [("metric.test_err", "test error"), *([(OOD_MEAN, "mean OOD error")] if OOD_MEAN in table else [])]
    head = ["spec", *[f"mean τ within seeds: {name}" for _, name in targets], "groups"]
    rows = []
    for spec in specs:
        cells, n_groups = [], 0
        for column, _ in targets:
            within = stats.tau_within(grouped, spec, column, "group")
            defined = within["tau"].dropna()
            n_groups = len(defined)
            cells.append(tau_cell(float(defined.mean())) if len(defined) else "–")
        rows.append([f"`{spec}`", *cells, str(n_groups)])
    sizes = labels.value_counts()
    size = f"{sizes.min()}" if sizes.min() == sizes.max() else f"{sizes.min()}-{sizes.max()}"
    return (f"**τ across seeds only** ({len(sizes)} groups of {size} models that share every "
            "hyper-parameter; the mean of the groups' τ).\n\n" + markdown(head, rows))


def null_section(table: pd.DataFrame, specs: list[str]) -> str:
    numeric = numeric_axes(table)
    targets = ["metric.test_err", stats.GAP, *([OOD_MEAN] if OOD_MEAN in table else []), *numeric[:1]]
    null = stats.permutation_null(table, specs, targets, n=N_PERM)
    names = ", ".join(c.removeprefix("hp.").removeprefix("metric.") for c in targets)
    lines = [f"**Multiple comparisons.** {null.n_tests} τ values ({len(specs)} definitions × {names}), against "
             f"{null.n} permutations of the models' targets (seed 0). Under the null that no definition depends "
             f"on any target, the largest |τ| of a table exceeds {null.max_quantile:.2f} in 5% of permutations.",
             "", markdown(["|τ| at least", "observed", "expected by chance", "P(as many by chance)"],
                          [[f"{t:.1f}", str(null.observed[t]), f"{null.expected[t]:.1f}", f"{null.p_at_least[t]:.3f}"]
                           for t in null.thresholds])]
    return "\n".join(lines)


def markdown(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
