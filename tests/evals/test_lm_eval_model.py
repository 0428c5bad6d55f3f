"""The lm-eval model and task files: `clean` equals lm-eval's own `hf` model on the same weights and
documents, an exact-reconstruction SAE spliced in equals `clean`, our task files keep lm-eval's
prompts and metrics, and bad input is one clear line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from saebench_scaffold.evals.ablation import conditions as ab
from saebench_scaffold.evals.downstream.lm_eval_model import PACK_TOKENS, SAESplicedLM, build_edits
from saebench_scaffold.evals.downstream.packing import pack
from saebench_scaffold.evals.registry import builtin_task_dir
from saebench_scaffold.saes import SAEConfig, make_sae
from saebench_scaffold.settings import UserError

TASK_DIR = builtin_task_dir() / "lm_eval_tasks"
LOCAL = {"lambada_openai": "lambada/lambada_openai.yaml", "piqa": "piqa/piqa.yaml",
         "hellaswag": "hellaswag/hellaswag.yaml", "winogrande": "winogrande/default.yaml"}
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture
def downstream_data() -> Path:
    """The data directory holding `downstream/` (skips naming the files where there is none)."""
    value = os.environ.get("SAEBENCH_DATA_DIR") or (str(SHARED_DATA) if SHARED_DATA.is_dir() else "")
    if not value or not (Path(value) / "downstream").is_dir():
        pytest.skip("needs downstream/{lambada_openai,piqa,hellaswag,winogrande}/*.jsonl from the real data directory")
    return Path(value)


def identity_sae(d: int):
    """An SAE whose reconstruction is x exactly: ReLU(x) W_dec[:d] + ReLU(-x) W_dec[d:] with ±I."""
    sae = make_sae(SAEConfig("standard", d, 2 * d, apply_b_dec_to_input=True))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def lm_eval_yaml(rel: str) -> dict:
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(Path(lm_eval.__file__).parent / "tasks" / rel, resolve_func=False)


@pytest.mark.parametrize("task", sorted(LOCAL))
def test_task_files_keep_lm_eval_prompts_and_metrics(task):
    from lm_eval.tasks._yaml_loader import load_yaml

    ours = load_yaml(TASK_DIR / f"{task}_local.yaml", resolve_func=False)
    theirs = lm_eval_yaml(LOCAL[task])
    assert ours["dataset_path"] == "json" and ours["task"] == f"{task}_local"
    for key in ("output_type", "doc_to_text", "doc_to_target", "doc_to_choice", "metric_list", "metadata"):
        if task == "winogrande" and key.startswith("doc_to"):
            # lm-eval's own functions, imported by module path rather than relative to its folder
            name = f"lm_eval.tasks.winogrande.preprocess_winogrande.{key}"
            assert str(ours[key]).endswith("/" + name) and str(theirs[key]).replace("/", ".").endswith(name), key
            continue
        assert ours.get(key) == theirs.get(key), key


def test_hellaswag_local_docs_equal_lm_eval_docs_of_the_hub_row():
    """The derived copy (ctx_a + " " + ctx_b joined, tags cleaned) gives lm-eval's query and choices."""
    import datasets
    from lm_eval.tasks.hellaswag.utils import preprocess, process_docs

    from saebench_scaffold.builtin_tasks.lm_eval_tasks.local_data import hellaswag_process_docs

    hub = [{"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
            "endings": ["is using wrap to wrap a pair of skis.", "starts pulling up roofing on a roof."], "label": "1"},
           {"activity_label": "Clean and jerk", "ctx_a": "A lady walks to a barbell. She bends down and grabs the pole.",
            "ctx_b": "the lady", "endings": ["swings and lands in her arms.", "stands and lifts the weight."], "label": "1"},
           {"activity_label": "Home and Garden", "ctx_a": "[header] How to grow tomatoes [title] Pick a sunny spot.",
            "ctx_b": "", "endings": ["Water daily [substeps] at dawn.", "Dig a hole [substeps] twice."], "label": "0"}]
    derived = [{"activity_label": preprocess(r["activity_label"]), "ctx": preprocess(r["ctx_a"] + " " + r["ctx_b"]),
                "endings": [preprocess(e) for e in r["endings"]], "label": int(r["label"])} for r in hub]
    want = process_docs(datasets.Dataset.from_list(hub))
    got = hellaswag_process_docs(datasets.Dataset.from_list(derived))
    for w, g in zip(want, got):
        assert (g["query"], g["choices"], g["gold"]) == (w["query"], w["choices"], w["gold"])


def test_local_data_names_a_missing_file(tmp_path):
    from saebench_scaffold.builtin_tasks.lm_eval_tasks.local_data import resolve_data_files

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "downstream" / "piqa.jsonl")):
        resolve_data_files({"validation": "downstream/piqa.jsonl"}, str(tmp_path))
    (tmp_path / "x.jsonl").write_text("{}\n")
    assert resolve_data_files({"test": "x.jsonl"}, str(tmp_path)) == {"test": str(tmp_path / "x.jsonl")}


def test_conditions_that_do_not_apply_or_do_not_exist_are_refused():
    sae = make_sae(SAEConfig("topk", 16, 32, k=4))
    with pytest.raises(UserError, match="scaffold_removed does not apply.*scaffold_rank = 0"):
        build_edits(None, sae, ["clean", "scaffold_removed"])
    with pytest.raises(UserError, match="unknown condition spliced_in"):
        build_edits(None, sae, ["spliced_in"])
    edits, _ = build_edits(None, sae, ["clean", "sae_spliced", "scaffold_removed", "zero_ablation"], skip_inapplicable=True)
    assert list(edits) == ["clean", "sae_spliced", "zero_ablation"]


@pytest.mark.slow
@pytest.mark.parametrize("pack_tokens", [PACK_TOKENS, 0])
def test_clean_equals_lm_eval_hf_model_and_exact_splice_equals_clean(lm, hook, downstream_data, pack_tokens):
    """Per document and choice, our `clean` log-likelihoods equal lm-eval's `HFLM` on the same
    weights within 1e-4 and every task's accuracy is identical; an identity SAE spliced in equals clean.
    Both ways of running requests: packed prefix trees (the default) and HFLM's padded batches."""
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from saebench_scaffold.evals.base import EvalContext

    ctx = EvalContext(lm.spec, hook, str(downstream_data), given=lm)
    manager = TaskManager(include_path=str(TASK_DIR), metadata={"data_dir": str(downstream_data)})
    tasks = manager.load([f"{t}_local" for t in LOCAL])
    ours = SAESplicedLM.from_context(ctx, {"clean": None, "sae_spliced": ab.sae_splice(identity_sae(lm.d_model))},
                                     batch_size=8, pack_tokens=pack_tokens)
    theirs = HFLM(pretrained=lm.hf, tokenizer=lm.tokenizer, batch_size=8)
    runs = {}
    for name, model in (("clean", ours), ("hf", theirs), ("sae_spliced", ours)):
        if name != "hf":
            ours.condition = name
        runs[name] = evaluate(model, tasks, limit=2, bootstrap_iters=0, log_samples=True, verbosity="ERROR")
    for task in tasks["tasks"]:
        rows = {n: sorted(r["samples"][task], key=lambda s: s["doc_id"]) for n, r in runs.items()}
        assert len(rows["hf"]) == 2
        for n in ("clean", "sae_spliced"):
            for a, b in zip(rows[n], rows["hf"]):
                ll_a = [resp[0][0] for resp in a["resps"]]
                ll_b = [resp[0][0] for resp in b["resps"]]
                assert ll_a == pytest.approx(ll_b, abs=1e-4), (task, n, a["doc_id"])
                assert a["acc"] == b["acc"]
            assert runs[n]["results"][task]["acc,none"] == runs["hf"]["results"][task]["acc,none"]


@pytest.mark.slow
def test_rolling_and_generation_follow_hf(lm, hook):
    """loglikelihood_rolling windows and greedy generate_until as lm-eval's HFLM, under `clean`."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from saebench_scaffold.evals.base import EvalContext

    ctx = EvalContext(lm.spec, hook, given=lm)
    ours = SAESplicedLM.from_context(ctx, {"clean": None, "zero_ablation": ab.zero_ablation}, max_length=24)
    theirs = HFLM(pretrained=lm.hf, tokenizer=lm.tokenizer, batch_size=4, max_length=24)
    text = "The river rose after three days of rain, and the village moved its boats to higher ground. " * 2
    rolling = [Instance("loglikelihood_rolling", {}, (text,), 0)]
    assert ours.loglikelihood_rolling(rolling) == pytest.approx(theirs.loglikelihood_rolling(rolling), abs=1e-3)
    gen = [Instance("generate_until", {}, ("The capital of France is", {"until": ["\n", "."], "max_gen_toks": 6}), 0)]
    assert ours.generate_until(gen) == theirs.generate_until(gen)
    ours.condition = "zero_ablation"
    assert ours.loglikelihood_rolling(rolling)[0] < theirs.loglikelihood_rolling(rolling)[0] - 10


def test_packing_shares_prefixes_and_keeps_every_input():
    """Each input's nodes spell its tokens at depths 0..len-1, attend to exactly its own earlier nodes;
    a shared prefix is one set of nodes; rows stay within their budget (a longer input gets its own)."""
    inputs = [(5, 6, 7, 8), (5, 6, 9), (5, 6, 7, 8), (1, 2), (5, 6, 7, 8, 3), tuple(range(20, 32))]
    rows = pack(inputs, row_tokens=8)
    seen = sorted(i for row in rows for i, _ in row.members)
    assert seen == list(range(len(inputs)))
    for row in rows:
        mask = row.mask()
        assert len(row) <= 8 or len(row.members) == 1
        for i, nodes in row.members:
            assert [row.tokens[n] for n in nodes] == list(inputs[i])
            assert [row.depth[n] for n in nodes] == list(range(len(inputs[i])))
            for d, n in enumerate(nodes):
                assert set(mask[n].nonzero().flatten().tolist()) == set(nodes[:d + 1])
    # (1,2) | (5,6,7,8) twice + (5,6,7,8,3) + (5,6,9): 2 + 4 + 1 + 1 nodes = 8 in one row; the long one alone
    assert [len(r) for r in rows] == [8, 12] and len(rows[0].members) == 5


@pytest.mark.slow
def test_packed_rows_equal_padded_batches_under_every_edit(lm, hook, downstream_data):
    """The context-sharing path gives the plain path's answers under edits too (position 0 of every
    packed input stays unedited, as it does alone), with several documents per row and several rows."""
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager

    from saebench_scaffold.evals.base import EvalContext

    ctx = EvalContext(lm.spec, hook, str(downstream_data), given=lm)
    manager = TaskManager(include_path=str(TASK_DIR), metadata={"data_dir": str(downstream_data)})
    tasks = manager.load(["piqa_local", "winogrande_local", "hellaswag_local"])
    sae = make_sae(SAEConfig("batchtopk", lm.d_model, 256, k=8, scaffold_rank=4))
    edits = {"clean": None, "sae_spliced": ab.sae_splice(sae), "scaffold_removed": ab.remove_scaffold(sae),
             "zero_ablation": ab.zero_ablation}
    answers = {}
    for pack_tokens in (0, 120):
        model = SAESplicedLM.from_context(ctx, edits, batch_size=4, pack_tokens=pack_tokens)
        calls = []
        real = model._score_packed
        model._score_packed = lambda todo, real=real: (calls.append(len(todo)), real(todo))
        for name in edits:
            model.condition = name
            out = evaluate(model, tasks, limit=3, bootstrap_iters=0, log_samples=True, verbosity="ERROR")
            answers[pack_tokens, name] = {(t, s["doc_id"]): [r[0] for r in s["resps"]]
                                          for t, rows in out["samples"].items() for s in rows}
        assert bool(calls) == (pack_tokens > 0)
    for name in edits:
        plain, packed = answers[0, name], answers[120, name]
        assert plain.keys() == packed.keys() and len(plain) == 9
        for doc, resps in plain.items():
            # float32 sums in another order: 1e-4, or 1e-6 relative for the long sums a random SAE makes large
            assert [r[0] for r in packed[doc]] == pytest.approx([r[0] for r in resps], abs=1e-4, rel=1e-6), (name, doc)
            assert [r[1] for r in packed[doc]] == [r[1] for r in resps]
    assert answers[0, "zero_ablation"] != answers[0, "clean"]
