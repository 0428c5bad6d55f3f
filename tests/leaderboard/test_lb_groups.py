"""Configurations for the page's grouped view, on the committed board (no data folder, no model) and
on hand-made checkpoints: the key, the statistics, the r = 0 / r > 0 pairs, and the claims page."""

from __future__ import annotations

import pytest
from helpers.lb_helpers import COMMITTED, committed_board

from saebench_scaffold.leaderboard import claims
from saebench_scaffold.leaderboard.claims import Checkpoint, load_checkpoints, recipe_version, t_interval
from saebench_scaffold.leaderboard.groups import (column_value, group_checkpoints, has_seeds, pairs,
                                                  summarize)
from saebench_scaffold.leaderboard.site import _md_table, claims_page


def _ck(name, arch="batchtopk", rank=0, seed=0, tokens=1000, fvu=0.1, recipe="1"):
    return Checkpoint(name, arch, rank, seed, tokens, {"core": {"reconstruction_quality": {"fvu": fvu}}}, recipe)


def test_recipe_version_is_read_where_the_trainer_writes_it_and_defaults_to_1():
    assert recipe_version({}) == "1"
    assert recipe_version({"extra": {"training": {"recipe": {"seed": 0}}}}) == "1"
    assert recipe_version({"extra": {"training": {"recipe_version": 2}}}) == "2"
    assert recipe_version({"extra": {"training": {"recipe": {"recipe_version": "3"}}}}) == "3"


def test_committed_board_configurations_by_recipe():
    groups = group_checkpoints(load_checkpoints(COMMITTED.parent))
    got = {(g.config.architecture, g.config.rank, g.config.tokens, g.config.recipe): sorted(c.seed for c in g.members)
           for g in groups}
    recipe_1 = {("batchtopk", r, 2080768, "1"): [0, 1, 2] for r in (0, 24)} | {
        ("matryoshka_batchtopk", r, 2080768, "1"): [0, 1, 2] for r in (0, 24)} | {
        ("batchtopk", r, 8323072, "1"): [0, 1] for r in (0, 24)}
    recipe_2 = {(arch, r, 2080768, "2"): [0, 1, 2, 3, 4] for arch in ("batchtopk", "matryoshka_batchtopk") for r in (0, 24)} | {
        ("batchtopk", r, 8323072, "2"): [0, 1, 2] for r in (0, 24)}
    assert got == recipe_1 | recipe_2
    assert has_seeds(groups)
    assert len(pairs(groups)) == 6 and all(a.config.setting == b.config.setting for a, b in pairs(groups))
    for a, b in pairs(groups):  # a pair reads as one hue: light r = 0, dark r = 24
        assert (a.config.rank, b.config.rank) == (0, 24) and a.colour != b.colour


def test_recipe_version_and_tokens_split_configurations():
    cks = [_ck("a", seed=0), _ck("b", seed=1), _ck("c", seed=2, recipe="2"), _ck("d", seed=0, tokens=2000), _ck("e", rank=24)]
    groups = group_checkpoints(cks)
    assert [(g.config.tokens, g.config.recipe, g.config.rank, [c.name for c in g.members]) for g in groups] == [
        (1000, "1", 0, ["a", "b"]), (1000, "1", 24, ["e"]), (1000, "2", 0, ["c"]), (2000, "1", 0, ["d"])]
    assert [(a.members[0].name, b.members[0].name) for a, b in pairs(groups)] == [("a", "e")]
    assert not has_seeds(group_checkpoints([_ck("a"), _ck("b", rank=24)]))


def test_summary_is_the_mean_with_claims_t_interval():
    one = summarize([0.5])
    assert (one.n, one.mean, one.low, one.high) == (1, 0.5, None, None)
    values = [0.1, 0.12, 0.17]
    s = summarize(values)
    assert s.mean == pytest.approx(sum(values) / 3, abs=1e-15)
    assert (s.low, s.high) == t_interval(values)[:2]
    assert summarize([]) is None
    assert column_value(_ck("a", fvu=0.25), "FVU") == 0.25 and column_value(_ck("a"), "dense>10%") is None


def test_claims_table_cells_are_cut_by_column_even_with_a_pipe_in_a_name():
    text = claims.render([{
        "text": "Dense latents fall", "architecture": "a|b<script>", "training_tokens": 2e6, "recipe": "1",
        "paper": "−84%", "paper_effect": -0.84, "effect": "relative", "margin": 0.1, "role": "", "notes": [],
        "reference_label": "r=0", "tested_label": "r=24", "reference_mean": 0.1, "reference_std": 0.01, "tested_mean": 0.05,
        "tested_std": None, "difference_mean": -0.5, "ci_low": None, "ci_high": None, "p_value": None, "n": 1,
        "verdict": None, "status": "skipped: one seed", "interval": None}])
    table = _md_table(text)
    assert table.count("<th>") == 10 and table.count("<td") == 10
    assert "<td>a|b&lt;script&gt;, 2.0M tok, recipe 1</td>" in table and "<script>" not in table
    assert '<td class="verdict skip">skipped: one seed</td>' in table


def test_claims_page_renders_the_boards_claims(tmp_path):
    board = committed_board(tmp_path)  # the recipe-1 runs
    page = claims_page(load_checkpoints(board))
    rows = claims.evaluate(load_checkpoints(board))
    assert page.count('<td class="verdict') == len(rows) == 31
    assert {r["recipe"] for r in rows} == {"1"} and "recipe 1" in page
    assert 'href="index.html"' in page and "Do the effects change with training length?" in page
    assert "VERDICT RULE" in page and "Holm family" in page
    assert page.count('class="forest" id="forest-') == len({r["claim"] for r in rows if r.get("difference_mean") is not None})
    assert "<p>No checkpoint" in claims_page([])
