"""The static web page: `BOARD/site/index.html` plus `assets/plotly.min.js`, no server or internet
needed to open it.

Plots use plotly (a well-kept library): its figures are interactive (hover names the checkpoint,
the legend toggles scaffold-rank groups, zoom into a range of L0), they are built in Python with
validated properties, and the Python package ships the whole JavaScript bundle (`plotly.min.js`),
so `build` copies it next to the page and the page works offline without vendoring files into the
repository. (Altair needs three separate Vega bundles fetched or vendored; matplotlib gives static
images without hover.)

Escaping: every string from a submission goes through `html.escape` in the table, and through
`html.escape` and then a JSON string with `<`, `>`, `&` as \\u escapes in the embedded figure data,
so no submitted text can close a tag or start a script.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

from ..settings import atomic_write
from .table import COLUMNS, IDENTITY_HEADERS, fmt

RANK_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
ARCH_SYMBOLS = ["circle", "diamond", "square", "triangle-up", "cross", "star"]
CE_CONDITIONS = [  # ce_ablation categories shown in the CE-ratio plot, in this order
    ("scaffold_removed", "scaffold removed"), ("pca_removed_mean_preserving", "top-r PCs removed (mean kept)"),
    ("pca_removed_zeroing", "top-r PCs zeroed"), ("aligned_latents_removed_variance_matched", "aligned latents (var.-matched)"),
    ("aligned_latents_removed", "aligned latents"), ("random_subspace_removed", "random subspace"),
    ("sae_spliced", "SAE spliced in"),
]


def plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _json_for_script(obj) -> str:
    from plotly.utils import PlotlyJSONEncoder

    text = json.dumps(obj, cls=PlotlyJSONEncoder)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _pair_key(rec: dict) -> tuple:
    return (rec["submission"], rec["arch"], rec["d_sae"], rec.get("k"), rec["model"], rec["hook"])


def _name(rec: dict) -> str:
    return html.escape(f"{rec['submission']}/{rec['checkpoint']}")


def scatter_figure(recs: list[dict], y_label: str, title: str, extra_y: str | None = None, y_title: str | None = None):
    """y vs L0, one trace per scaffold rank (colour) with architecture as marker symbol; dotted
    lines join r = 0 / r > 0 checkpoints that differ only in scaffold rank; error bars from stds."""
    import plotly.graph_objects as go

    fig = go.Figure()
    points = [r for r in recs if r.get("L0") is not None and r.get(y_label) is not None]
    ranks = sorted({r["r"] for r in points})
    archs = sorted({str(r["arch"]) for r in points})
    for i, rank in enumerate(ranks):
        group = [r for r in points if r["r"] == rank]
        colour = RANK_COLOURS[i % len(RANK_COLOURS)]
        stds = [r.get(y_label + " std") for r in group]
        fig.add_trace(go.Scatter(
            x=[r["L0"] for r in group], y=[r[y_label] for r in group], mode="markers", name=f"r = {rank}",
            marker=dict(size=11, color=colour, symbol=[ARCH_SYMBOLS[archs.index(str(r["arch"])) % 6] for r in group]),
            error_y=dict(type="data", array=[s or 0 for s in stds], visible=any(s is not None for s in stds)),
            hovertext=[f"{_name(r)}<br>{html.escape(str(r['arch']))}, r = {rank}" for r in group], hoverinfo="text+x+y"))
        if extra_y:
            extra = [r for r in group if r.get(extra_y) is not None]
            if extra:
                fig.add_trace(go.Scatter(
                    x=[r["L0"] for r in extra], y=[r[extra_y] for r in extra], mode="markers", name=f"r = {rank}, {extra_y}",
                    marker=dict(size=11, color=colour, symbol="circle-open", line=dict(width=2)),
                    hovertext=[f"{_name(r)} ({html.escape(extra_y)})" for r in extra], hoverinfo="text+x+y"))
    xs, ys = [], []
    by_pair: dict[tuple, list[dict]] = {}
    for r in points:
        by_pair.setdefault(_pair_key(r), []).append(r)
    for group in by_pair.values():
        base = [r for r in group if r["r"] == 0]
        for r in (r for r in group if r["r"] > 0):
            for b in base:
                xs += [b["L0"], r["L0"], None]
                ys += [b[y_label], r[y_label], None]
    if xs:
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="r = 0 ↔ r > 0 pair", hoverinfo="skip",
                                 line=dict(color="#888", dash="dot", width=1.5)))
    fig.update_layout(title=title, xaxis_title="L0 (sparse latents per token)", yaxis_title=html.escape(y_title or y_label),
                      margin=dict(l=60, r=20, t=50, b=50), height=380, template="plotly_white",
                      legend=dict(orientation="h", y=-0.25))
    return fig


def ce_figure(recs: list[dict], results: dict):
    """Next-token CE ratio to clean per ablation condition, one bar group per checkpoint; r > 0
    checkpoints hatched; 95% bootstrap CIs as error bars."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for rec in recs:
        res = results.get((rec["submission"], rec["checkpoint"]), {}).get("ce_ablation")
        if res is None:
            continue
        m = res.eval_result_metrics
        conds = [(key, label) for key, label in CE_CONDITIONS
                 if isinstance(m.get(key, {}).get("ce_ratio"), (int, float)) and m[key].get("status", "ok") == "ok"]
        if not conds:
            continue
        ratio = [m[k]["ce_ratio"] for k, _ in conds]
        fig.add_trace(go.Bar(
            x=[label for _, label in conds], y=ratio, name=f"{_name(rec)} (r = {rec['r']})", showlegend=True,
            marker=dict(pattern=dict(shape="/" if rec["r"] else "")),
            error_y=dict(type="data", symmetric=False,
                         array=[m[k].get("ce_ratio_ci_high", v) - v for (k, _), v in zip(conds, ratio)],
                         arrayminus=[v - m[k].get("ce_ratio_ci_low", v) for (k, _), v in zip(conds, ratio)])))
    fig.update_layout(title="CE ratio to clean per ablation condition (hatched: scaffold rank r > 0)", barmode="group",
                      yaxis_title="CE / clean CE", xaxis=dict(categoryorder="array", categoryarray=[lab for _, lab in CE_CONDITIONS]), margin=dict(l=60, r=20, t=50, b=90), height=420,
                      template="plotly_white", legend=dict(orientation="h", y=-0.35))
    return fig


PLOTS = [  # (id, y column, title, extra y column (open markers), y-axis title)
    ("dense", "dense>10%", "Dense-latent fraction vs L0 (filled: > 10% of tokens; open: > 1%)", "dense>1%",
     "fraction of latents"),
    ("fvu", "FVU", "FVU vs L0 (filled: all tokens; open: typical tokens)", "FVU typical", "FVU"),
    ("probe", "probe top-1", "Sparse probing top-1 accuracy vs L0 (± std over resplits)", None, "top-1 accuracy"),
    ("tpp", "TPP@20", "TPP (20 latents ablated) vs L0 (± std over resplits)", None, "TPP total metric"),
]


def _row(rec: dict, provenance: dict) -> str:
    cells = []
    for h in IDENTITY_HEADERS + [c.label for c in COLUMNS]:
        v = rec.get(h)
        sort_value = "" if v is None else (repr(v) if isinstance(v, (int, float)) else str(v))
        cells.append(f'<td data-v="{html.escape(sort_value)}">{html.escape(fmt(rec, h))}</td>')
    links = " ".join(f'<a href="../{html.escape(label)}">{html.escape(task)}</a>' for task, label in sorted(rec["files"].items()))
    prov = html.escape(json.dumps(provenance, indent=1, default=str))
    cells.append(f'<td class="files">{links}<details><summary>provenance</summary><pre>{prov}</pre></details></td>')
    return "<tr>" + "".join(cells) + "</tr>"


def write_site(board: Path, recs: list[dict], results: dict) -> Path:
    """Write `board/site/index.html` and its asset; returns the page's path. `results` is
    {(submission, checkpoint): {task: EvalResult}}."""
    site = Path(board) / "site"
    (site / "assets").mkdir(parents=True, exist_ok=True)
    js = site / "assets" / "plotly.min.js"
    if not js.exists() or js.stat().st_size != plotly_js().stat().st_size:
        shutil.copyfile(plotly_js(), js)
    figures = {pid: scatter_figure(recs, y, title, extra, y_title) for pid, y, title, extra, y_title in PLOTS}
    figures["ce"] = ce_figure(recs, results)
    headers = IDENTITY_HEADERS + [c.label for c in COLUMNS] + ["files"]
    rows = []
    for rec in recs:
        by_task = results.get((rec["submission"], rec["checkpoint"]), {})
        provenance = {"sae_cfg": {k: v for k, v in next(iter(by_task.values())).sae_cfg_dict.items() if k != "extra"},
                      **{task: res.provenance.model_dump() for task, res in sorted(by_task.items())}}
        rows.append(_row(rec, provenance))
    options = {}
    for key in ("model", "hook", "arch", "r"):
        values = sorted({str(r.get(key)) for r in recs})
        options[key] = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
    page = TEMPLATE.format(
        n=len(recs),
        thead="".join(f'<th><button type="button">{html.escape(h)}</button></th>' for h in headers),
        tbody="\n".join(rows),
        filters="".join(f'<label>{k} <select data-col="{IDENTITY_HEADERS.index(k)}">'
                        f'<option value="">all</option>{opts}</select></label>' for k, opts in options.items()),
        plots="".join(f'<div class="plot" id="plot-{pid}"></div>' for pid in figures),
        figures="\n".join(f'<script type="application/json" id="fig-{pid}">{_json_for_script(fig.to_plotly_json())}</script>'
                          for pid, fig in figures.items()),
        script=SCRIPT)
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
document.querySelectorAll('script[type="application/json"][id^="fig-"]').forEach(s => {
  const fig = JSON.parse(s.textContent);
  Plotly.newPlot('plot-' + s.id.slice(4), fig.data, fig.layout, {responsive: true, displaylogo: false});
});
"""

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>saebench-scaffold leaderboard</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 12px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 3px 6px; text-align: right; white-space: nowrap; vertical-align: top; }}
td:nth-child(-n+7), th:nth-child(-n+7) {{ text-align: left; }}
th button {{ font: inherit; font-weight: 600; background: none; border: none; cursor: pointer; padding: 0; }}
th[aria-sort="ascending"] button::after {{ content: " ▲"; }}
th[aria-sort="descending"] button::after {{ content: " ▼"; }}
tbody tr:hover {{ background: #f4f7fb; }}
.files pre {{ text-align: left; max-width: 40em; white-space: pre-wrap; font-size: 11px; }}
#filters {{ margin: .6em 0; display: flex; gap: 1em; flex-wrap: wrap; }}
.plots {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 1em; margin-top: 1em; }}
.wrap {{ overflow-x: auto; }}
</style>
<script src="assets/plotly.min.js"></script>
</head><body>
<h1>saebench-scaffold leaderboard</h1>
<p>One row per checkpoint; every row was machine-checked (<code>saebench-scaffold leaderboard validate</code>) and can be
re-run from its provenance (<code>leaderboard verify SUBMISSION/CHECKPOINT</code>). <code>±</code> is the std over
resplits. “typical” columns exclude massive-norm tokens. Click a column header to sort.</p>
<div id="filters"><label>filter <input id="filter-text" type="search" placeholder="text"></label>{filters}
<span><span id="shown">{n}</span> of {n} rows</span></div>
<div class="wrap"><table id="board"><thead><tr>{thead}</tr></thead>
<tbody>
{tbody}
</tbody></table></div>
<div class="plots">{plots}</div>
{figures}
<script>{script}</script>
</body></html>
"""
