"""The static web pages: `BOARD/site/index.html` (table and plots), `BOARD/site/claims.html` (the
paper's claims over the board's seeds) and `assets/plotly.min.js`, no server or internet needed.

Plots use plotly (a well-kept library): its figures are interactive (hover names the checkpoint,
the legend toggles groups, zoom into a range of L0), they are built in Python with validated
properties, and the Python package ships the whole JavaScript bundle (`plotly.min.js`), so `build`
copies it next to the page and the page works offline without vendoring files into the repository.
(Altair needs three separate Vega bundles fetched or vendored; matplotlib gives static images
without hover.)

Two views of every plot, switched on the page: one mark per configuration (mean over training seeds
with its 95% t interval, each seed a faint point; `groups.py`), the default when some configuration
has two or more seeds, as seed noise is what a difference must beat; and one mark per checkpoint.
Layout: legends sit right of the plot in a figure tall enough for all their entries, and titles
start below the band of plotly's mode bar, so neither is cut off or covered however many rows.

The claims page is computed from the board by `claims/` at build time, so it cannot go stale; below
its table, one forest plot per claim (`forest_figure`): each setting's effect with its interval, the
null line with the equivalence margin shaded, and the paper's value.

Escaping: every string from a submission goes through `html.escape` in the tables, and through
`html.escape` and then a JSON string with `<`, `>`, `&` as \\u escapes in the embedded figure data,
so no submitted text can close a tag or start a script.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..settings import atomic_write
from . import claims
from .claims import rows as claim_rows
from .groups import Group, column_value, group_checkpoints, has_seeds, pairs, summarize
from .table import FILTERS, IDENTITY_HEADERS, default_columns, fmt

RANK_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
ARCH_SYMBOLS = ["circle", "diamond", "square", "triangle-up", "cross", "star"]
CE_CONDITIONS = [  # ce_ablation categories shown in the CE-ratio plot, in this order; tick labels wrapped to fit
    ("scaffold_removed", "scaffold<br>removed"), ("pca_removed_mean_preserving", "top-r PCs<br>removed<br>(mean kept)"),
    ("pca_removed_zeroing", "top-r PCs<br>zeroed"), ("aligned_latents_removed_variance_matched", "aligned latents<br>(var.-matched)"),
    ("aligned_latents_removed", "aligned<br>latents"), ("random_subspace_removed", "random<br>subspace"),
    ("sae_spliced", "SAE<br>spliced in"),
]
TITLE_TOP = 36  # px kept free above the title: plotly's mode bar (~30 px tall) sits in that band at the top right
LEGEND_ENTRY = 22  # px per vertical legend entry; the figure grows to hold them all


def plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _json_for_script(obj) -> str:
    from plotly.utils import PlotlyJSONEncoder

    text = json.dumps(obj, cls=PlotlyJSONEncoder)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _name(rec: dict) -> str:
    return html.escape(f"{rec['submission']}/{rec['checkpoint']}")


def _join(*parts: str) -> str:
    return " · ".join(p for p in parts if p)


def _layout(fig, title: str, subtitle: str, legend_entries: int, legend_title: str = "", min_height: int = 420, **axes):
    """Title under the mode bar's band, legend right of the plot with room for every entry."""
    top = TITLE_TOP + 58
    height = max(min_height, top + 80 + LEGEND_ENTRY * (legend_entries + (2 if legend_title else 0)))
    fig.update_layout(
        title=dict(text=title, subtitle=dict(text=subtitle, font=dict(size=12)), x=0, xref="paper", xanchor="left",
                   y=1 - TITLE_TOP / height, yref="container", yanchor="top", font=dict(size=16)),
        height=height, margin=dict(l=70, r=20, t=top, b=70), template="plotly_white",
        legend=dict(x=1.02, xanchor="left", y=1, yanchor="top", title=dict(text=legend_title), tracegroupgap=0),
        **axes)
    return fig


def _error(summary) -> dict:
    if summary is None or summary.low is None:
        return dict(visible=False)
    return dict(type="data", symmetric=False, array=[summary.high - summary.mean], arrayminus=[summary.mean - summary.low])


def scatter_figure(recs: list[dict], info: dict, y_label: str, title: str, subtitle: str, extra_y: str | None,
                   y_title: str, archs: list[str]):
    """Per checkpoint: y vs L0, one trace per scaffold rank (colour), architecture as marker symbol;
    dotted lines join r = 0 / r > 0 checkpoints of one submission and seed that differ only in
    scaffold rank; error bars from the stds over resplits."""
    import plotly.graph_objects as go

    fig = go.Figure()
    points = [r for r in recs if r.get("L0") is not None and r.get(y_label) is not None]
    ranks = sorted({r["r"] for r in points})
    for i, rank in enumerate(ranks):
        group = [r for r in points if r["r"] == rank]
        colour = RANK_COLOURS[i % len(RANK_COLOURS)]
        stds = [r.get(y_label + " std") for r in group]
        fig.add_trace(go.Scatter(
            x=[r["L0"] for r in group], y=[r[y_label] for r in group], mode="markers", name=f"r = {rank}",
            marker=dict(size=11, color=colour, symbol=[ARCH_SYMBOLS[archs.index(str(r["arch"])) % 6] for r in group]),
            error_y=dict(type="data", array=[s or 0 for s in stds], visible=any(s is not None for s in stds)),
            hovertext=[f"{_name(r)}<br>{html.escape(str(r['arch']))}, r = {rank}" for r in group], hoverinfo="text+x+y"))
        extra = [r for r in group if extra_y and r.get(extra_y) is not None]
        if extra:
            fig.add_trace(go.Scatter(
                x=[r["L0"] for r in extra], y=[r[extra_y] for r in extra], mode="markers", name=f"r = {rank}, {extra_y}",
                marker=dict(size=11, color=colour, symbol="circle-open", line=dict(width=2)),
                hovertext=[f"{_name(r)} ({html.escape(extra_y)})" for r in extra], hoverinfo="text+x+y"))
    xs, ys = [], []
    by_pair: dict[tuple, list[dict]] = {}
    for r in points:
        ck, g = info.get((r["submission"], r["checkpoint"]), (None, None))
        key = (r["submission"], r["d_sae"], r.get("k"), r["model"], r["hook"], g.config.setting if g else r["arch"],
               ck.seed if ck else None)
        by_pair.setdefault(key, []).append(r)
    for group in by_pair.values():
        for r in (r for r in group if r["r"] > 0):
            for b in (b for b in group if b["r"] == 0):
                xs += [b["L0"], r["L0"], None]
                ys += [b[y_label], r[y_label], None]
    if xs:
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="r = 0 ↔ r > 0 pair", hoverinfo="skip",
                                 line=dict(color="#888", dash="dot", width=1.5)))
    has_std = any(r.get(y_label + " std") is not None for r in points)
    return _layout(fig, title, _join(subtitle, "one mark per checkpoint" + (" ± std over resplits" if has_std else "")),
                   len(fig.data),
                   xaxis_title="L0 (sparse latents per token)", yaxis_title=html.escape(y_title))


def grouped_scatter(groups: list[Group], y_label: str, title: str, subtitle: str, extra_y: str | None,
                    y_title: str, archs: list[str]):
    """Per configuration: the mean over seeds of y vs the mean L0, with y's 95% t interval; each seed
    a faint point (open markers: `extra_y`); dotted lines join the r = 0 / r > 0 means of a setting."""
    import plotly.graph_objects as go

    fig = go.Figure()
    means: dict[int, tuple[float, float]] = {}  # id(group) -> (mean L0, mean y), for the pair lines
    shown = 0
    for g in groups:
        symbol = ARCH_SYMBOLS[archs.index(g.config.architecture) % 6]
        name = html.escape(g.label)
        for column, open_marker in ((y_label, False), (extra_y, True)):
            pts = [(ck, column_value(ck, "L0"), column_value(ck, column)) for ck in g.members] if column else []
            pts = [p for p in pts if p[1] is not None and p[2] is not None]
            if not pts:
                continue
            x, y = summarize([p[1] for p in pts]), summarize([p[2] for p in pts])
            marker = dict(color=g.colour, symbol=symbol + ("-open" if open_marker else ""))
            fig.add_trace(go.Scatter(  # seeds first, so the mean is drawn over them
                x=[p[1] for p in pts], y=[p[2] for p in pts], mode="markers", legendgroup=name, showlegend=False,
                marker=dict(marker, size=7, opacity=0.35), hoverinfo="text+x+y", meta={"role": "seed", "column": column},
                hovertext=[f"{html.escape(ck.name)}, seed {ck.seed}" for ck, _, _ in pts]))
            interval = f" [{y.low:.4g}, {y.high:.4g}]" if y.low is not None else ""
            fig.add_trace(go.Scatter(
                x=[x.mean], y=[y.mean], mode="markers", name=name, legendgroup=name, showlegend=not open_marker,
                marker=dict(marker, size=13, line=dict(width=2 if open_marker else 1, color=g.colour if open_marker else "#333")),
                error_y=dict(_error(y), color=g.colour, thickness=2), hoverinfo="text",
                hovertext=f"{name}<br>{html.escape(column)}: mean {y.mean:.4g}{interval} over {y.n} seed(s)"
                          f"<br>L0 mean {x.mean:.4g}",
                meta={"role": "mean", "column": column, "n": y.n, **g.config.meta()}))
            if not open_marker:
                shown += 1
                means[id(g)] = (x.mean, y.mean)
    xs, ys = [], []
    for base, other in pairs(groups):
        if id(base) in means and id(other) in means:
            xs += [means[id(base)][0], means[id(other)][0], None]
            ys += [means[id(base)][1], means[id(other)][1], None]
    if xs:
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="r = 0 ↔ r > 0 means", hoverinfo="skip",
                                 line=dict(color="#888", dash="dot", width=1.5)))
        shown += 1
    return _layout(fig, title, _join(subtitle, "mean ± 95% CI over seeds; faint: each seed"), shown,
                   legend_title="configuration", xaxis_title="L0 (sparse latents per token)",
                   yaxis_title=html.escape(y_title))


@dataclass(frozen=True)
class BarPlot:
    """A bar plot of one task's figure per ablation condition, per checkpoint and per configuration."""

    task: str
    conditions: tuple[tuple[str, str], ...]
    """(key, tick label) in plotting order; tick labels wrapped to fit."""
    title: str
    y_title: str
    interval: str
    """What the per-checkpoint error bars are, for the subtitle."""
    value: Callable[[dict, str], tuple[float, float | None, float | None] | None]
    """(the task's eval_result_metrics, condition key) -> (value, interval low, interval high), or None."""


def _ce_value(m: dict, key: str):
    v = m.get(key, {})
    if not isinstance(v.get("ce_ratio"), (int, float)) or v.get("status", "ok") != "ok":
        return None
    return v["ce_ratio"], v.get("ce_ratio_ci_low"), v.get("ce_ratio_ci_high")


def _retained_value(m: dict, key: str):
    s = m.get("summary", {})
    v = s.get(f"{key}_retained")
    return (v, s.get(f"{key}_retained_ci_low"), s.get(f"{key}_retained_ci_high")) if isinstance(v, (int, float)) else None


BAR_PLOTS = {  # plot id -> BarPlot
    "ce": BarPlot("ce_ablation", tuple(CE_CONDITIONS), "CE ratio to clean per ablation condition", "CE / clean CE",
                  "95% bootstrap CI", _ce_value),
    "downstream": BarPlot("downstream", (("spliced", "SAE<br>spliced in"), ("scaffold", "scaffold<br>removed"),
                                         ("pca", "top-r PCs<br>removed<br>(mean kept)"), ("aligned", "aligned<br>latents"),
                                         ("random", "random<br>subspace"), ("zero", "zero<br>ablation")),
                          "Downstream accuracy kept per ablation condition (mean over lm-eval tasks)",
                          "(acc − chance) / (clean acc − chance)", "95% bootstrap CI over documents", _retained_value),
}


def _bar_axes(plot: BarPlot, **xaxis) -> dict:
    return dict(yaxis_title=plot.y_title, xaxis=dict(tickangle=0, automargin=True, showgrid=False, **xaxis))


def bar_figure(plot: BarPlot, recs: list[dict], results: dict, info: dict, groups: list[Group]):
    """Per checkpoint: the plot's figure per ablation condition, one bar per checkpoint, coloured by
    configuration (one legend entry each, toggling its checkpoints); r > 0 hatched; the result's own
    intervals as error bars."""
    import plotly.graph_objects as go

    fig = go.Figure()
    order = {id(g): i for i, g in enumerate(groups)}
    info = {key: info.get(key, (None, None)) for key in ((r["submission"], r["checkpoint"]) for r in recs)}
    seen = set()
    # a configuration's bars side by side, in the legend's order
    for rec in sorted(recs, key=lambda r: order.get(id(info[r["submission"], r["checkpoint"]][1]), len(order))):
        ck, g = info[rec["submission"], rec["checkpoint"]]
        res = results.get((rec["submission"], rec["checkpoint"]), {}).get(plot.task)
        if res is None:
            continue
        got = [(label, plot.value(res.eval_result_metrics, key)) for key, label in plot.conditions]
        got = [(label, v) for label, v in got if v is not None]
        if not got:
            continue
        ys = [v[0] for _, v in got]
        legend = html.escape(g.label) if g else _name(rec)
        fig.add_trace(go.Bar(
            x=[label for label, _ in got], y=ys, name=legend, legendgroup=legend, showlegend=legend not in seen,
            marker=dict(color=g.colour if g else "#999", pattern=dict(shape="/" if rec["r"] else "")),
            hovertext=f"{_name(rec)}" + (f", seed {ck.seed}" if ck else ""), hoverinfo="text+y",
            error_y=dict(type="data", symmetric=False,
                         array=[(hi if hi is not None else y) - y for (_, (y, _, hi)) in got],
                         arrayminus=[y - (lo if lo is not None else y) for (_, (y, lo, _)) in got])))
        seen.add(legend)
    return _layout(fig, plot.title, f"one bar per checkpoint, coloured by configuration (hatched: r > 0) ± {plot.interval}",
                   len(seen), legend_title="configuration", barmode="group",
                   **_bar_axes(plot, categoryorder="array", categoryarray=[label for _, label in plot.conditions]))


def grouped_bars(plot: BarPlot, groups: list[Group]):
    """Per configuration: mean of the plot's figure over seeds per condition with its 95% t interval,
    seeds as faint points on their bar. Bars sit at explicit offsets (numeric x, condition names as
    tick text) so a configuration's seeds land on its own bar."""
    import plotly.graph_objects as go

    def value(ck, k):
        v = plot.value(ck.metrics.get(plot.task, {}), k)
        return None if v is None else v[0]

    fig = go.Figure()
    values = {id(g): {k: [(ck, v) for ck in g.members if (v := value(ck, k)) is not None] for k, _ in plot.conditions}
              for g in groups}
    conds = [(k, label) for k, label in plot.conditions if any(values[id(g)][k] for g in groups)]
    drawn = [g for g in groups if any(values[id(g)][k] for k, _ in conds)]
    width = 0.84 / max(len(drawn), 1)
    tops = []  # every seed, mean and interval end
    for j, g in enumerate(drawn):
        offset = (j - (len(drawn) - 1) / 2) * width
        name = html.escape(g.label)
        bars = [(i + offset, k, summarize([v for _, v in values[id(g)][k]])) for i, (k, _) in enumerate(conds) if values[id(g)][k]]
        fig.add_trace(go.Bar(
            x=[x for x, _, _ in bars], y=[s.mean for _, _, s in bars], width=width * 0.92, name=name, legendgroup=name,
            marker=dict(color=g.colour, pattern=dict(shape="/" if g.config.rank else "")),
            error_y=dict(type="data", symmetric=False, array=[s.high - s.mean if s.low is not None else None for *_, s in bars],
                         arrayminus=[s.mean - s.low if s.low is not None else None for *_, s in bars]),
            hovertext=[f"{name}<br>{html.escape(k)}: mean {s.mean:.4g}" + (f" [{s.low:.4g}, {s.high:.4g}]" if s.low is not None else "")
                       + f" over {s.n} seed(s)" for _, k, s in bars], hoverinfo="text",
            meta={"role": "mean", "conditions": [k for _, k, _ in bars], **g.config.meta()}))
        seeds = [(x, ck, v) for x, k, _ in bars for ck, v in values[id(g)][k]]
        fig.add_trace(go.Scatter(
            x=[x for x, _, _ in seeds], y=[v for _, _, v in seeds], mode="markers", legendgroup=name, showlegend=False,
            marker=dict(size=6, color="#222", opacity=0.45, line=dict(width=1, color="white")), meta={"role": "seed"},
            hovertext=[f"{html.escape(ck.name)}, seed {ck.seed}" for _, ck, _ in seeds], hoverinfo="text+y"))
        tops += [v for _, _, v in seeds] + [s.high for _, _, s in bars if s.high is not None]
    # The y range holds every seed and every interval up to 1.3 x the highest seed, not beyond: two
    # seeds give t(1 dof) intervals ~13 sd wide that would flatten all bars; those run off the axis.
    highest = max((v for g in drawn for k, _ in conds for _, v in values[id(g)][k]), default=1.0)
    lowest = min([0.0] + [v for g in drawn for k, _ in conds for _, v in values[id(g)][k]])
    top = 1.08 * max(v for v in tops + [highest] if v <= 1.3 * highest)
    return _layout(fig, plot.title, "mean over seeds per configuration (hatched: r > 0) ± 95% CI over seeds "
                   "(long ones run off the axis; hover gives them), faint: each seed", len(drawn),
                   legend_title="configuration", yaxis_range=[1.08 * lowest, top],
                   **_bar_axes(plot, tickmode="array", tickvals=list(range(len(conds))), ticktext=[label for _, label in conds],
                               range=[-0.5, len(conds) - 0.5]))


PLOTS = [  # (id, y column, title, subtitle, extra y column (open markers), y-axis title)
    ("dense", "dense>10%", "Dense-latent fraction vs L0", "filled: > 10% of tokens; open: > 1%", "dense>1%",
     "fraction of latents"),
    ("fvu", "FVU", "FVU vs L0", "filled: all tokens; open: typical tokens", "FVU typical", "FVU"),
    ("probe", "probe top-1", "Sparse probing top-1 accuracy vs L0", "", None, "top-1 accuracy"),
    ("tpp", "TPP@20", "TPP (20 latents ablated) vs L0", "", None, "TPP total metric"),
]


def _row(rec: dict, provenance: dict, labels: list[str]) -> str:
    cells = []
    for h in IDENTITY_HEADERS + labels:
        v = rec.get(h)
        sort_value = "" if v is None else (repr(v) if isinstance(v, (int, float)) else str(v))
        cells.append(f'<td data-v="{html.escape(sort_value)}">{html.escape(fmt(rec, h))}</td>')
    links = " ".join(f'<a href="../{html.escape(label)}">{html.escape(task)}</a>' for task, label in sorted(rec["files"].items()))
    prov = html.escape(json.dumps(provenance, indent=1, default=str))
    cells.append(f'<td class="files">{links}<details><summary>provenance</summary><pre>{prov}</pre></details></td>')
    return "<tr>" + "".join(cells) + "</tr>"


def _row_info(results: dict, groups: list[Group]) -> dict:
    """(submission, checkpoint) -> (Checkpoint, its Group), through the sha256: `load_checkpoints`
    keeps one copy of a checkpoint submitted twice, and both rows belong to its configuration."""
    sha = {key: next(iter(tasks.values())).provenance.checkpoint_sha256 for key, tasks in results.items()}
    key_of = {f"{s}/{c}".strip("/"): (s, c) for s, c in results}
    by_sha = {sha[key_of[ck.name]]: (ck, g) for g in groups for ck in g.members if ck.name in key_of}
    return {key: by_sha[h] for key, h in sha.items() if h in by_sha}


VERDICT_CLASS = {"reproduced": "yes", "weaker": "weak", "no effect": "no", "reversed": "no", "inconclusive": "maybe"}


def _md_table(text: str) -> str:
    """A table as `claims.render` writes it (tabulate's GitHub Markdown) as HTML, every cell escaped.
    Cells are cut where the `|---|` rule has its bars (tabulate pads every cell to its column's
    width), so a `|` inside a submitted name cannot shift the columns."""
    lines = [line for line in text.splitlines() if line.strip()]
    rule = lines[1]
    bars = [i for i, ch in enumerate(rule) if ch == "|"]

    def cells(line: str) -> list[str]:
        if len(line) == len(rule) and all(line[i] == "|" for i in bars):
            return [line[a + 1:b].strip() for a, b in zip(bars, bars[1:])]
        return [c.strip() for c in line.strip().strip("|").split("|")]

    head = cells(lines[0])
    body = []
    for line in lines[2:]:
        tds = []
        for h, cell in zip(head, cells(line)):
            cls = f' class="verdict {VERDICT_CLASS.get(cell, "skip")}"' if h == "verdict" else ""
            tds.append(f"<td{cls}>{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f'<div class="wrap"><table><thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def forest_figure(claim_rows: list[dict]):
    """One claim's forest plot: per setting its effect (mean over seeds) with the 95% interval, the
    null (no effect) as a line with the equivalence margin shaded, and the paper's value as a diamond."""
    import plotly.graph_objects as go

    drawn = [r for r in claim_rows if r.get("difference_mean") is not None]
    first = claim_rows[0]
    null, margin, relative = first["null"], first["margin"], first["effect"] == "relative"
    labels = [html.escape(claims.setting_label(r)) for r in drawn]
    fig = go.Figure()
    fig.add_vrect(x0=null - margin, x1=null + margin, fillcolor="#bbb", opacity=0.25, line_width=0, layer="below")
    fig.add_vline(x=null, line=dict(color="#555", width=1.5))
    ok = [r["ci_low"] is not None for r in drawn]
    colours = {"reproduced": "#1b7837", "weaker": "#b8860b", "no effect": "#555", "reversed": "#b2182b"}
    fig.add_trace(go.Scatter(
        x=[r["difference_mean"] for r in drawn], y=labels, mode="markers", name="ours (mean over seeds, 95% CI)",
        marker=dict(size=11, color=[colours.get(r["verdict"], "#8a6d00") for r in drawn]),
        error_x=dict(type="data", symmetric=False,
                     array=[(r["ci_high"] - r["difference_mean"]) if k else 0 for r, k in zip(drawn, ok)],
                     arrayminus=[(r["difference_mean"] - r["ci_low"]) if k else 0 for r, k in zip(drawn, ok)],
                     thickness=2, width=6),
        hovertext=[html.escape(f"{r['verdict'] or r['status']}; n = {r['n']} seeds; {r.get('interval') or ''}")
                   for r in drawn], hoverinfo="text+x", meta={"role": "effect"}))
    paper = [(r["paper_effect"], lab) for r, lab in zip(drawn, labels) if r.get("paper_effect") is not None]
    if paper:
        fig.add_trace(go.Scatter(x=[p for p, _ in paper], y=[lab for _, lab in paper], mode="markers",
                                 name="paper", marker=dict(symbol="diamond-open", size=13, color="#000", line=dict(width=2)),
                                 hoverinfo="x+name", meta={"role": "paper"}))
    effect = {"relative": "relative change (r24 − r0) / r0", "ratio": "ratio tested / reference",
              "value": "ratio", "difference": "difference"}[first["effect"]]
    import textwrap

    title = "<br>".join(html.escape(line) for line in textwrap.wrap(first["text"], 64))
    subtitle = (html.escape(f"● ours: mean over seeds ± {claims.LEVEL:.0%} CI; ◇ the paper") + "<br>"
                + html.escape("line: no effect" + (f"; band: ±{margin:.0%} margin" if relative
                                                   else f" ({null:g}); band: ±{margin:g} margin")))
    fig = _layout(fig, title, subtitle, 0, min_height=250 + 40 * len(drawn) + 20 * title.count("<br>"),
                  xaxis=dict(title=effect, tickformat=".0%" if relative else None, zeroline=False),
                  yaxis=dict(autorange="reversed", automargin=True))
    top = TITLE_TOP + 78 + 20 * title.count("<br>")
    fig.update_layout(showlegend=False, margin=dict(l=70, r=30, t=top, b=60), title=dict(xref="container", x=0.01))
    return fig


def claims_page(checkpoints: list) -> str:
    """site/claims.html: `claims`' tables over the board's checkpoints (current recipe), one forest
    plot per claim, and its rule."""
    rows = claims.evaluate(checkpoints) if checkpoints else []
    plots = ""
    if not rows:
        body = (f"<p>No checkpoint on this board has the figures a claim needs (architecture, scaffold rank 0 or "
                f"{claims.CLAIM_RANK}, seed in <code>sae_cfg_dict</code>).</p>")
    else:
        counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICT_CLASS}
        counts = {v: n for v, n in counts.items() if n}
        skipped = sum(r["verdict"] is None for r in rows)
        recipes = sorted({r["recipe"] for r in rows})
        body = (f'<p class="counts">{len(rows)} claim × setting rows (recipe {html.escape(", ".join(recipes))}): '
                + ", ".join(f'<span class="verdict {VERDICT_CLASS[v]}">{n} {v}</span>' for v, n in counts.items())
                + (f', <span class="verdict skip">{skipped} without a verdict</span>' if skipped else "")
                + "</p>" + _md_table(claims.render(rows)) + f"<p>{html.escape(claims.family_text(rows))}</p>")
        missing = claims.missing_claims(rows)
        if missing:
            body += ("<p>No row (no checkpoint here holds the figures): "
                     + "; ".join(html.escape(c.text) for c in missing) + ".</p>")
        by_claim: dict[str, list[dict]] = {}
        for r in rows:
            by_claim.setdefault(r["claim"], []).append(r)
        figures = {key: forest_figure(group) for key, group in by_claim.items()
                   if any(r.get("difference_mean") is not None for r in group)}
        plots = ('<h2>One forest plot per claim</h2><div class="forests">'
                 + "".join(f'<div class="forest" id="forest-{html.escape(k)}"></div>' for k in figures) + "</div>"
                 + "".join(f'<script type="application/json" data-forest="{html.escape(k)}">'
                           f'{_json_for_script(fig.to_plotly_json())}</script>' for k, fig in figures.items()))
        length = claims.training_length(rows)
        if length:
            body += ("<h2>Do the effects change with training length?</h2><p>Each claim's per-seed difference at a "
                     "longer training run against the length with the most seeds (rule: <code>length_outcome</code>)."
                     "</p>" + _md_table(claims.render_length(length)))
    rule = claim_rows.__doc__.split("\n\n", 1)[-1]
    return CLAIMS_TEMPLATE.format(body=body, plots=plots, rule=html.escape(rule), level=f"{claims.LEVEL:.0%}",
                                  script=FOREST_SCRIPT)


def write_site(board: Path, recs: list[dict], results: dict, columns: tuple | None = None) -> Path:
    """Write `board/site/index.html`, `board/site/claims.html` and their asset; returns the board
    page's path. `results` is {(submission, checkpoint): {task: EvalResult}}; `columns`: the table's
    (`TaskVersions.columns()`; default: those of the tasks known without --include-path)."""
    labels = [c.label for c in columns or default_columns()]
    site = Path(board) / "site"
    (site / "assets").mkdir(parents=True, exist_ok=True)
    js = site / "assets" / "plotly.min.js"
    if not js.exists() or js.stat().st_size != plotly_js().stat().st_size:
        shutil.copyfile(plotly_js(), js)
    checkpoints = claims.checkpoints_from_results(results)
    groups = group_checkpoints(checkpoints)
    info = _row_info(results, groups)
    archs = sorted({str(r["arch"]) for r in recs} | {g.config.architecture for g in groups})
    views: dict[str, dict] = {"grouped": {}, "checkpoints": {}}
    for pid, y, title, subtitle, extra, y_title in PLOTS:
        views["checkpoints"][pid] = scatter_figure(recs, info, y, title, subtitle, extra, y_title, archs)
        if groups:
            views["grouped"][pid] = grouped_scatter(groups, y, title, subtitle, extra, y_title, archs)
    for pid, plot in BAR_PLOTS.items():
        if pid != "ce" and not any(plot.task in by_task for by_task in results.values()):
            continue  # a task no checkpoint has: no empty plot (ce_ablation's is always drawn, as before)
        views["checkpoints"][pid] = bar_figure(plot, recs, results, info, groups)
        if groups:
            views["grouped"][pid] = grouped_bars(plot, groups)
    view = "grouped" if has_seeds(groups) else "checkpoints"
    headers = IDENTITY_HEADERS + labels + ["files"]
    rows = []
    for rec in recs:
        by_task = results.get((rec["submission"], rec["checkpoint"]), {})
        provenance = {"sae_cfg": {k: v for k, v in next(iter(by_task.values())).sae_cfg_dict.items() if k != "extra"},
                      **{task: res.provenance.model_dump() for task, res in sorted(by_task.items())}}
        rows.append(_row(rec, provenance, labels))
    options = {}
    for key in FILTERS:
        values = sorted({str(r.get(key)) for r in recs if r.get(key) is not None})
        options[key] = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
    page = TEMPLATE.format(
        n=len(recs), n_configs=len(groups),
        grouped_attrs=("checked" if view == "grouped" else "") + ("" if groups else " disabled"),
        checkpoints_attrs="checked" if view == "checkpoints" else "",
        thead="".join(f'<th><button type="button">{html.escape(h)}</button></th>' for h in headers),
        tbody="\n".join(rows),
        filters="".join(f'<label>{k} <select data-col="{IDENTITY_HEADERS.index(k)}">'
                        f'<option value="">all</option>{opts}</select></label>' for k, opts in options.items()),
        plots="".join(f'<div class="plot" id="plot-{pid}"></div>' for pid in views["checkpoints"]),
        figures="\n".join(f'<script type="application/json" id="fig-{pid}-{v}" data-plot="{pid}" data-view="{v}">'
                          f'{_json_for_script(fig.to_plotly_json())}</script>'
                          for v, figs in views.items() for pid, fig in figs.items()),
        script=SCRIPT)
    atomic_write(site / "claims.html", claims_page(checkpoints))
    out = site / "index.html"
    atomic_write(out, page)
    return out


SCRIPT = """
const table = document.getElementById('board');
const body = table.tBodies[0];
function cellValue(row, col) {
  const v = row.cells[col].dataset.v;
  const n = parseFloat(v);
  return v !== '' && !isNaN(n) && /^[-+0-9.einfINF]+$/.test(v) ? n : v;
}
table.querySelectorAll('th button').forEach((btn, col) => btn.addEventListener('click', () => {
  const th = btn.parentElement;
  const dir = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
  table.querySelectorAll('th').forEach(h => h.removeAttribute('aria-sort'));
  th.setAttribute('aria-sort', dir);
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = cellValue(a, col), y = cellValue(b, col);
    if (x === '' || y === '') return (x === '') - (y === '');  // empty cells last
    const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
    return dir === 'ascending' ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
}));
function applyFilters() {
  const text = document.getElementById('filter-text').value.toLowerCase();
  const selects = Array.from(document.querySelectorAll('#filters select'));
  let shown = 0;
  Array.from(body.rows).forEach(row => {
    const ok = row.textContent.toLowerCase().includes(text) &&
      selects.every(s => !s.value || row.cells[+s.dataset.col].dataset.v === s.value);
    row.hidden = !ok; shown += ok;
  });
  document.getElementById('shown').textContent = shown;
}
document.querySelectorAll('#filters select, #filter-text').forEach(e => e.addEventListener('input', applyFilters));
const figures = {};  // plot id -> {view: figure JSON text}
document.querySelectorAll('script[type="application/json"][data-plot]').forEach(s => {
  (figures[s.dataset.plot] = figures[s.dataset.plot] || {})[s.dataset.view] = s.textContent;
});
const plotConfig = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ['select2d', 'lasso2d']};
function showView(view) {
  document.body.dataset.drawn = '';
  Promise.all(Object.entries(figures).map(([id, views]) => {
    const fig = JSON.parse(views[view] || views.checkpoints);  // a fresh copy: plotly writes computed ranges into it
    return Plotly.react('plot-' + id, fig.data, fig.layout, plotConfig);
  })).then(() => { document.body.dataset.drawn = view; });
}
document.querySelectorAll('#view input').forEach(i => i.addEventListener('change', () => showView(i.value)));
showView(document.querySelector('#view input:checked').value);
"""

STYLE = """
body {{ font-family: system-ui, sans-serif; margin: 1.2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 12px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 3px 6px; text-align: right; white-space: nowrap; vertical-align: top; }}
tbody tr:hover {{ background: #f4f7fb; }}
.wrap {{ overflow-x: auto; }}
nav {{ margin: .4em 0 .8em; }}
"""

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>saebench-scaffold leaderboard</title>
<style>""" + STYLE + """
td:nth-child(-n+7), th:nth-child(-n+7) {{ text-align: left; }}
th button {{ font: inherit; font-weight: 600; background: none; border: none; cursor: pointer; padding: 0; }}
th[aria-sort="ascending"] button::after {{ content: " ▲"; }}
th[aria-sort="descending"] button::after {{ content: " ▼"; }}
.files pre {{ text-align: left; max-width: 40em; white-space: pre-wrap; font-size: 11px; }}
#filters {{ margin: .6em 0; display: flex; gap: 1em; flex-wrap: wrap; }}
#view {{ margin-top: 1.2em; border: 1px solid #ccc; border-radius: 4px; display: flex; gap: 1.5em; flex-wrap: wrap; }}
.plots {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(760px, 1fr)); gap: 1em; margin-top: 1em; }}
.plot {{ min-width: 0; }}
#plot-ce {{ grid-column: 1 / -1; }}
</style>
<script src="assets/plotly.min.js"></script>
</head><body>
<h1>saebench-scaffold leaderboard</h1>
<nav><a href="claims.html">The paper's claims against this board</a>: intervals over training seeds and evaluation samples, verdicts.</nav>
<p>One row per checkpoint; every row was machine-checked (<code>saebench-scaffold leaderboard validate</code>) and can be
re-run from its provenance (<code>leaderboard verify SUBMISSION/CHECKPOINT</code>). <code>±</code> is the std over
resplits. “typical” columns exclude massive-norm tokens. Click a column header to sort.</p>
<div id="filters"><label>filter <input id="filter-text" type="search" placeholder="text"></label>{filters}
<span><span id="shown">{n}</span> of {n} rows</span></div>
<div class="wrap"><table id="board"><thead><tr>{thead}</tr></thead>
<tbody>
{tbody}
</tbody></table></div>
<fieldset id="view"><legend>Plots show</legend>
<label><input type="radio" name="view" value="grouped" {grouped_attrs}> {n_configs} configurations (architecture × scaffold rank ×
training tokens × recipe): mean ± 95% t interval over training seeds, each seed a faint point</label>
<label><input type="radio" name="view" value="checkpoints" {checkpoints_attrs}> one mark per checkpoint ({n})</label></fieldset>
<div class="plots">{plots}</div>
{figures}
<script>{script}</script>
</body></html>
"""

FOREST_SCRIPT = """
const forestConfig = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ['select2d', 'lasso2d']};
const forests = Array.from(document.querySelectorAll('script[type="application/json"][data-forest]'));
Promise.all(forests.map(s => {
  const fig = JSON.parse(s.textContent);
  return Plotly.newPlot('forest-' + s.dataset.forest, fig.data, fig.layout, forestConfig);
})).then(() => { document.body.dataset.drawn = 'forests'; });
"""

CLAIMS_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>saebench-scaffold leaderboard: the paper's claims</title>
<style>""" + STYLE + """
th, td {{ white-space: normal; text-align: left; min-width: 5em; }}
td:first-child {{ min-width: 16em; }}
td.verdict, span.verdict {{ font-weight: 600; white-space: nowrap; }}
.verdict.yes {{ color: #1b7837; }} .verdict.no {{ color: #b2182b; }} .verdict.maybe {{ color: #8a6d00; }}
.verdict.weak {{ color: #b8860b; }} .verdict.skip {{ color: #666; font-weight: 400; }}
pre {{ background: #f6f6f6; padding: .8em; font-size: 12px; overflow-x: auto; }}
.forests {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(620px, 1fr)); gap: 1em; }}
.forest {{ min-width: 0; }}
</style>
<script src="assets/plotly.min.js"></script>
</head><body>
<nav><a href="index.html">← leaderboard</a></nav>
<h1>The paper's claims against this board</h1>
<p>arXiv 2606.14040's claims held against the checkpoints on this board, computed from its submissions by
<code>saebench_scaffold/leaderboard/claims/</code> when the page was built (<code>saebench-scaffold claims BOARD</code>
prints the same tables). Effects are r=24 vs r=0 paired by training seed, or tested vs reference of one
checkpoint, as the claim states; {level} interval over training seeds and evaluation replicates (hierarchical bootstrap;
a Student-t interval over seeds where the results store no replicates, as the row says).</p>
{body}
{plots}
<h2>How the intervals and verdicts are decided</h2>
<pre>{rule}</pre>
<script>{script}</script>
</body></html>
"""
