"""`punie-lab bootstrap`: the embedded default main and draft models, built from scratch.

1. corpus   - agent chat examples rendered from the real agent's requests (punie.corpus)
2. tokenizer - byte-level BPE trained on the corpus text
3. models   - random Qwen3 inits trained with `mlx_lm lora --fine-tune-type full`, fused
4. metrics  - corpus sizes, parameter counts, losses, seconds, BLAS

`--blas-benchmark` times one short training job with and without OpenBLAS; `--step-cost`
times one training step per padded batch length of the corpus (`punie.step_cost`); `--eval`
measures the built models through the real pipeline (server + agent + tools) and the draft's
acceptance in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from punie.errors import StageError
from punie.params import Distill, ModelShape, Params, load_params
from punie.train import Job, fuse, teacher_answers, train, train_many, train_metrics

CORPUS_DIR = Path("data/corpus")
METRICS = Path("metrics/bootstrap.json")
MAIN_DIR = Path("models/main")
DRAFT_DIR = Path("models/draft")


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--blas-benchmark",
        action="store_true",
        help="time the same short training job with OpenBLAS and with the bundled BLAS",
    )
    parser.add_argument(
        "--step-cost",
        action="store_true",
        help="time mlx-lm's training step of bootstrap.main at each padded batch length",
    )
    parser.add_argument(
        "--eval",
        action="store_true",
        help=(
            "measure the built models: agent accuracy through a real server, first-token "
            "decision margin, draft acceptance"
        ),
    )
    parser.add_argument("--main", help="--eval this main model instead of params models.main")
    parser.add_argument("--draft", help="--eval this draft instead of params models.draft")
    parser.add_argument(
        "--queries",
        action="append",
        type=Path,
        help="query file(s) for --eval (default: the seed and held-out sets from params.yaml)",
    )


def run(name: str, args: argparse.Namespace) -> int:
    import os

    # Measured here: with the CPU shared, one OpenBLAS thread trains these small models
    # ~1.6x faster than two (spinning threads fight the other process for the cores).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    params = load_params()
    if args.blas_benchmark:
        return blas_benchmark(params)
    if args.step_cost:
        return step_cost(params)
    if args.eval:
        from punie.bootstrap_eval import evaluate
        from punie.params import Models

        main = args.main or params.models.main
        models = Models(main=main, draft=args.draft or params.models.draft)
        return evaluate(params.model_copy(update={"models": models}), args.queries)
    build(params)
    return 0


# --- corpus and tokenizer ------------------------------------------------------------------


def excluded_queries(params: Params) -> list[str]:
    """Queries that must never be trained on: the seed and held-out sets."""
    from punie.queries import load_queries

    paths = [Path(params.queries.seed), Path(params.queries.heldout)]
    return [q.query for p in paths for q in load_queries(p)]


def keep_answers(
    groups: list[list[dict[str, Any]]], share: float, seed: int
) -> list[list[dict[str, Any]]]:
    """Keep the second-turn answer of about `share` of the tool queries (a fixed choice per
    seed); a tool query's call row and every direct answer always stay."""
    rng = random.Random(seed + 1)
    return [g if len(g) == 1 or rng.random() < share else g[:1] for g in groups]


def build_corpus(params: Params, out_dir: Path = CORPUS_DIR) -> dict[str, int]:
    """Render train/valid/test JSONL; returns row counts per split and kind."""
    import datasets

    from punie.corpus import make_specs, render_all, to_jsonl, workspace_facts
    from punie.results import write_text_atomic
    from punie.tools import Workspace

    sizes = params.bootstrap.corpus
    seed = params.runtime.seed
    ws = Workspace(
        Path(params.agent.workspace), params.agent.tool_timeout_s, params.agent.tool_output_cap
    )
    total = sizes.train + sizes.valid + sizes.test
    # A direct query gives one row, a tool query its call plus (answer_share of the time)
    # the second-turn answer; make_specs draws tool and direct queries half and half.
    rows_per_spec = 1 + 0.5 * sizes.answer_share
    specs = make_specs(
        int(total / rows_per_spec) + 40,
        workspace_facts(ws.root),
        seed,
        excluded_queries(params),
        nonce_share=sizes.nonce_share,
    )
    groups = keep_answers(
        render_all(specs, ws, seed, processes=sizes.processes), sizes.answer_share, seed
    )
    # Whole specs go to one split, so no query is in two splits.
    splits: dict[str, list[dict[str, Any]]] = {"test": [], "valid": [], "train": []}
    targets = {"test": sizes.test, "valid": sizes.valid, "train": sizes.train}
    names = iter(splits)
    current = next(names)
    for group in groups:
        while len(splits[current]) >= targets[current]:
            current = next(names, None)  # type: ignore[arg-type]
            if current is None:
                break
        if current is None:
            break
        splits[current].extend(group)
    counts: dict[str, int] = {}
    for split, rows in splits.items():
        if len(rows) < targets[split]:
            raise StageError(f"corpus: only {len(rows)} {split} rows, wanted {targets[split]}")
        # `datasets` shuffles with a fixed seed; rows stay JSON strings so Arrow does not merge
        # the two tools' schemas into one struct (that would add null keys to every schema).
        ds = datasets.Dataset.from_dict(
            {"row": [json.dumps(r) for r in rows], "kind": [r["kind"] for r in rows]}
        ).shuffle(seed=seed)
        decoded = [json.loads(r) for r in ds["row"]]
        write_text_atomic(out_dir / f"{split}.jsonl", to_jsonl(decoded))
        counts[f"corpus_{split}"] = len(rows)
        for kind in ("tool_call", "tool_answer", "direct"):
            counts[f"corpus_{split}_{kind}"] = sum(r["kind"] == kind for r in rows)
    return counts


def corpus_texts(corpus_dir: Path = CORPUS_DIR, limit: int = 800) -> list[str]:
    """Training examples rendered with the chat template, as the model will see them."""
    from transformers import PreTrainedTokenizerFast

    from punie.corpus import read_jsonl
    from punie.tokenizer import CHAT_TEMPLATE, train_tokenizer

    # Rendering needs a tokenizer object; any will do, the text does not depend on it.
    scaffold = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(["scaffold"], 300), chat_template=CHAT_TEMPLATE
    )
    rows = read_jsonl(corpus_dir / "train.jsonl")[:limit]
    return [
        str(scaffold.apply_chat_template(r["messages"], tools=r["tools"], tokenize=False))
        for r in rows
    ]


def build_tokenizer(params: Params, out_dir: Path, corpus_dir: Path = CORPUS_DIR) -> None:
    from punie.tokenizer import save_tokenizer, train_tokenizer

    tok = train_tokenizer(
        corpus_texts(corpus_dir), params.bootstrap.tokenizer.vocab_size, split_words=False
    )
    save_tokenizer(tok, out_dir)


def prompt_lengths(model_dir: Path, corpus_dir: Path = CORPUS_DIR) -> dict[str, int]:
    """Longest full example and system+tools prompt, in tokens, as mlx-lm tokenizes them."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from punie.corpus import read_jsonl

    tok = load_tokenizer(Path(model_dir))
    longest = 0
    system = 0
    for split in ("train", "valid", "test"):
        for row in read_jsonl(corpus_dir / f"{split}.jsonl"):
            ids = tok.apply_chat_template(row["messages"], tools=row["tools"], return_dict=False)
            longest = max(longest, len(ids))
            if not system:
                first = [row["messages"][0], {"role": "user", "content": ""}]
                system = len(tok.apply_chat_template(first, tools=row["tools"], return_dict=False))
    return {"max_example_tokens": longest, "system_prompt_tokens": system}


# --- models ------------------------------------------------------------------------------------


def shape_of(m: ModelShape) -> Any:
    from punie.modelgen import Qwen3Shape

    return Qwen3Shape(
        m.hidden_size,
        m.num_hidden_layers,
        m.num_attention_heads,
        m.num_key_value_heads,
        m.intermediate_size,
    )


def embed_scale(m: ModelShape) -> float:
    """Init std of the frozen, tied embedding: logits can reach ~2*sqrt(hidden_size)."""
    return 2.0 / m.hidden_size**0.5


def distill_draft(
    params: Params,
    draft_dir: Path,
    work: Path,
    tok_dir: Path,
    *,
    teacher: Path = MAIN_DIR,
    out: Path = DRAFT_DIR,
    distill: Distill | None = None,
) -> dict[str, Any]:
    """Fine-tune the draft in `draft_dir` on the `teacher` model's greedy answers to corpus
    train prompts (punie.distill), then fuse it into `out` (default: models/draft)."""
    from punie.corpus import read_jsonl, to_jsonl

    b = params.bootstrap
    d = distill or b.distill
    blas = params.runtime.blas
    data = work / "distill"
    data.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_rows = read_jsonl(CORPUS_DIR / "train.jsonl")[: d.rows]
    valid_rows = read_jsonl(CORPUS_DIR / "valid.jsonl")[: d.valid_rows]
    print(
        f"distill: {teacher} answers {len(train_rows)} train and {len(valid_rows)} valid "
        f"prompts for the draft ({d.processes} processes)"
    )
    answers = teacher_answers(
        teacher, [*train_rows, *valid_rows], work, max_tokens=d.max_tokens,
        processes=d.processes, blas=blas, threads=b.main.blas_threads,
    )  # fmt: skip
    (data / "train.jsonl").write_text(to_jsonl(answers[: len(train_rows)]))
    (data / "valid.jsonl").write_text(to_jsonl(answers[len(train_rows) :]))
    seconds = time.perf_counter() - t0
    shape = b.draft.model_copy(update={"iters": d.iters, "learning_rate": d.learning_rate})
    job = Job("draft-distill", draft_dir, shape)
    trained = train_many([job], data, work, seed=params.runtime.seed, blas=blas)[job.label]
    fuse(draft_dir, work / "draft-distill-adapters", out, tok_dir, blas)
    return {
        "distill_rows": d.rows,
        "distill_generate_seconds": seconds,
        **train_metrics("draft_distill", trained),
    }


def build(params: Params) -> dict[str, Any]:
    from punie.memory import ServerMemorySampler
    from punie.results import write_json

    # The stage's whole process tree (this process, the trainers side by side, fuse, distil
    # generation), summed at each sample: what the machine must hold at once.
    with ServerMemorySampler(os.getpid(), interval_s=0.5) as memory:
        metrics = _build(params)
    metrics["peak_rss_mb"] = round(memory.peak_rss_mb, 1)
    write_json(METRICS, metrics)
    print(json.dumps(metrics, indent=2))
    return metrics


def _build(params: Params) -> dict[str, Any]:
    from punie.mlx_runtime import blas_in_use
    from punie.modelgen import init_model_dir
    from punie.results import round_floats

    b = params.bootstrap
    blas = params.runtime.blas
    seed = params.runtime.seed
    t_all = time.perf_counter()
    metrics: dict[str, Any] = {}
    print("bootstrap: rendering the agent corpus from the agent's own requests")
    t0 = time.perf_counter()
    metrics.update(build_corpus(params))
    metrics["corpus_seconds"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="punie-bootstrap-") as tmp:
        work = Path(tmp)
        tok_dir = work / "tokenizer"
        build_tokenizer(params, tok_dir)
        # Always the DVC outputs, whatever params.models points the other stages at.
        outputs = {"main": MAIN_DIR, "draft": DRAFT_DIR}
        jobs = []
        for label, shape in (("main", b.main), ("draft", b.draft)):
            init = work / f"{label}-init"
            n = init_model_dir(
                init, shape_of(shape), tok_dir, seed=seed, embed_scale=embed_scale(shape)
            )
            metrics[f"{label}_params"] = n
            if label == "main":
                metrics.update(prompt_lengths(init))
            if metrics["max_example_tokens"] > shape.max_seq_length:
                raise StageError(
                    f"bootstrap.{label}.max_seq_length={shape.max_seq_length} is below the "
                    f"longest example ({metrics['max_example_tokens']} tokens)"
                )
            jobs.append(Job(label, init, shape))
        t0 = time.perf_counter()
        trained = train_many(jobs, CORPUS_DIR, work, seed=seed, blas=blas)
        metrics["train_seconds"] = time.perf_counter() - t0
        distilling = b.distill.rows > 0
        # A distilled draft is fused aside first, then fine-tuned on the main model's answers.
        if distilling:
            outputs["draft"] = work / "draft-corpus"
        for job in jobs:
            metrics.update(train_metrics(job.label, trained[job.label]))
            fuse(job.model_dir, work / f"{job.label}-adapters", outputs[job.label], tok_dir, blas)
        if distilling:
            metrics.update(distill_draft(params, outputs["draft"], work, tok_dir))
    if metrics["main_params"] < 10 * metrics["draft_params"]:
        print("bootstrap: warning: the draft has fewer than 10x fewer parameters than main")
    metrics["total_seconds"] = time.perf_counter() - t_all
    metrics["blas"] = blas_in_use(blas)
    return round_floats(metrics)


# --- OpenBLAS vs bundled BLAS ------------------------------------------------------------------


def random_main(params: Params, work: Path) -> Path:
    """A random init of `bootstrap.main` with the tokenizer trained on the corpus."""
    from punie.modelgen import init_model_dir

    if not (CORPUS_DIR / "train.jsonl").exists():
        raise StageError(f"{CORPUS_DIR}/train.jsonl is missing: run `punie-lab bootstrap` first")
    m = params.bootstrap.main
    build_tokenizer(params, work / "tokenizer")
    init_model_dir(
        work / "init", shape_of(m), work / "tokenizer", seed=params.runtime.seed,
        embed_scale=embed_scale(m),
    )  # fmt: skip
    return work / "init"


def step_cost(params: Params, reps: int = 3) -> int:
    """mlx-lm's training step of `bootstrap.main` timed at each padded batch length of the
    corpus, and each length's share of an epoch: which examples the training time goes to."""
    from punie.mlx_runtime import run_mlx
    from punie.step_cost import epoch_seconds, epoch_shares

    m = params.bootstrap.main
    with tempfile.TemporaryDirectory(prefix="punie-step-cost-") as tmp:
        work = Path(tmp)
        request = {
            "model": str(random_main(params, work)), "data": str(CORPUS_DIR),
            "batch_size": m.batch_size, "max_seq_length": m.max_seq_length,
            "learning_rate": m.learning_rate, "reps": reps,
            "hidden_size": m.hidden_size, "intermediate_size": m.intermediate_size,
        }  # fmt: skip
        (work / "request.json").write_text(json.dumps(request))
        args = [str(work / "request.json"), str(work / "result.json")]
        run_mlx(
            args, module="punie.step_cost", blas=params.runtime.blas, threads=m.blas_threads,
            on_line=print,
        )  # fmt: skip
        result = json.loads((work / "result.json").read_text())
    rows = epoch_shares(result["rows"])
    steps = sum(r["batches"] for r in rows)
    epoch = epoch_seconds(rows)
    print(f"\nbootstrap.main training step (batch {m.batch_size}, median of {reps}):")
    print(" length  batches  ms/step  share of the steps  share of the time")
    for r in rows:
        print(f"{r['length']:>7}  {r['batches']:>7}  {r['step_s'] * 1e3:>7.0f}  "
              f"{r['batches'] / steps:>18.1%}  {r['share']:>17.1%}")  # fmt: skip
    print(
        f"one epoch: {steps} steps, {epoch:.0f} s ({epoch / steps * 1e3:.0f} ms per step); "
        f"{m.iters} iterations of this mix: {m.iters * epoch / steps:.0f} s"
    )
    exp, mul = result["exp_ns_per_element"], result["multiply_ns_per_element"]
    print(
        f"CPU kernels: mlx exp {exp:.2f} ns per element (numpy's "
        f"{result['numpy_exp_ns_per_element']:.2f}), multiply {mul:.2f} ns ({exp / mul:.0f}x); "
        f"a {m.hidden_size}x{m.intermediate_size} projection of 384 tokens "
        f"{result['matmul_gflops']:.0f} GFLOP/s"
    )
    return 0


def blas_benchmark(params: Params, iters: int = 12) -> int:
    """The same short training job with OpenBLAS preloaded and without; prints the ratio."""
    from punie.mlx_runtime import find_openblas

    if find_openblas() is None:
        raise StageError("no system OpenBLAS found (install libopenblas0-pthread)")
    m = params.bootstrap.main
    with tempfile.TemporaryDirectory(prefix="punie-blas-") as tmp:
        work = Path(tmp)
        init = random_main(params, work)
        seconds: dict[str, float] = {}
        losses: dict[str, float | None] = {}
        for blas in ("auto", "off"):
            t0 = time.perf_counter()
            log = train(f"blas-{blas}", init, CORPUS_DIR, work, m, seed=0, blas=blas, iters=iters)
            seconds[blas] = time.perf_counter() - t0
            losses[blas] = log.train[-1][1] if log.train else None
    ratio = seconds["off"] / seconds["auto"]
    print(
        f"blas benchmark ({iters} iters of bootstrap.main, same job, same run): "
        f"bundled {seconds['off']:.1f} s, OpenBLAS {seconds['auto']:.1f} s, "
        f"speedup {ratio:.2f}x; final losses {losses['off']} vs {losses['auto']}"
    )
    return 0
