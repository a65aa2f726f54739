"""The mlx side of the real-shape build (punie.models.real_shape), run in subprocesses with
OpenBLAS preloaded like every mlx process of the lab:

    python -m punie.models.real_shape_worker train|smoke|quantize REQUEST.json RESULT.json

`train` trains one model on the compact vocabulary and expands it to Qwen3's; `quantize`
quantizes it as `mlx_lm convert -q` does; `smoke` loads both hub ids from a staged cache and
checks what the server will do.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, cast

from punie.models.hf_cache import resolve
from punie.models.qwen3_package import BOS_ID, EOS_ID
from punie.models.real_shape import DRAFT_ID, MAIN_ID, SMOKE_MAX_TOKENS, Recipe
from punie.serving.runtime import worker_main


class PrefixCache:
    """Per-layer attention cache for training: the shared prefix's keys and values (kept in
    the graph, so gradients flow through them) prepended, broadcast, to every row's own."""

    def __init__(self) -> None:
        self.keys: Any = None
        self.values: Any = None
        self.offset = 0

    def update_and_fetch(self, keys: Any, values: Any) -> tuple[Any, Any]:
        import mlx.core as mx

        if self.keys is None:  # the prefix pass
            self.keys, self.values, self.offset = keys, values, keys.shape[2]
            return keys, values
        b = keys.shape[0]
        k = mx.broadcast_to(self.keys, (b, *self.keys.shape[1:]))
        v = mx.broadcast_to(self.values, (b, *self.values.shape[1:]))
        return mx.concatenate([k, keys], axis=2), mx.concatenate([v, values], axis=2)


def train_worker(request: dict[str, Any]) -> dict[str, Any]:
    """Train one model on the compact vocabulary, expand it to Qwen3's and save it."""
    import importlib
    import math

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import numpy as np
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.tokenizer_utils import load as load_tokenizer
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.datasets import ChatDataset
    from mlx_lm.tuner.trainer import TrainingArgs
    from mlx_lm.tuner.trainer import train as mlx_train
    from mlx_lm.utils import save_config, save_model

    label, config, recipe = request["label"], request["config"], Recipe(**request["recipe"])
    t0, c0 = time.perf_counter(), time.process_time()
    rows = [json.loads(line) for line in Path(request["rows"]).read_text().splitlines()]
    tokenizer = load_tokenizer(Path(request["tokenizer"]))
    # mlx-lm's chat dataset: Qwen3's template applied by mlx-lm, the prompt masked.
    dataset = ChatDataset(rows, tokenizer, mask_prompt=True)  # ty: ignore[invalid-argument-type]
    items = [dataset.process(r) for r in rows]
    vocab = config["vocab_size"]
    used = np.array(sorted({t for toks, _ in items for t in toks} | {BOS_ID, EOS_ID}))
    n_used = len(used)
    null = n_used  # the compact id of every other token
    remap = np.full(vocab, null, np.int32)
    remap[used] = np.arange(n_used, dtype=np.int32)
    seqs = [remap[np.array(toks)] for toks, _ in items]
    prefix_len = min(offset for _, offset in items)  # never into a completion
    first = seqs[0]
    for i in range(prefix_len):
        if any(s[i] != first[i] for s in seqs):
            prefix_len = i
            break
    prefix = mx.array(first[:prefix_len])[None]
    data = [
        (s[prefix_len:].tolist(), off - prefix_len) for s, (_, off) in zip(seqs, items, strict=True)
    ]
    print(
        f"{label}: {len(rows)} rows, {n_used} distinct tokens, shared prefix {prefix_len}, "
        f"longest row {max(len(s) for s in seqs)} tokens",
        flush=True,
    )

    arch = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    mx.random.seed(recipe.seed)
    np.random.seed(recipe.seed)  # mlx-lm's batch order
    model = arch.Model(arch.ModelArgs.from_dict({**config, "vocab_size": n_used + 1}))
    mx.eval(model.parameters())
    null_bias = math.log(vocab - n_used)

    def logits(model: Any, inputs: Any) -> Any:
        caches = [PrefixCache() for _ in model.layers]
        model.model(prefix, caches)
        out = model(inputs, cache=caches).astype(mx.float32)
        return mx.concatenate([out[..., :-1], out[..., -1:] + null_bias], axis=-1)

    def loss(model: Any, batch: Any, lengths: Any) -> tuple[Any, Any]:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        steps = mx.arange(1, targets.shape[1] + 1)
        mask = mx.logical_and(steps >= lengths[:, 0:1], steps <= lengths[:, 1:])
        ce = nn.losses.cross_entropy(logits(model, inputs), targets) * mask
        ntoks = mask.sum()
        return ce.sum() / ntoks, ntoks

    class Rows:
        def __getitem__(self, i: int) -> tuple[list[int], int]:
            return data[i]

        def __len__(self) -> int:
            return len(data)

    losses: list[tuple[int, float]] = []

    class Report(TrainingCallback):
        def on_train_loss_report(self, train_info: dict[str, Any]) -> None:
            info = train_info
            losses.append((info["iteration"], info["train_loss"]))
            print(
                f"{label}: {info['iteration']}/{recipe.iters} it, loss {info['train_loss']:.3f}, "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )

    warm = max(1, recipe.iters // 10)
    lr = recipe.learning_rate
    schedule = optim.join_schedules(
        [
            optim.linear_schedule(lr * 0.1, lr, warm),
            optim.cosine_decay(lr, recipe.iters - warm, lr * 0.1),
        ],
        [warm],
    )
    work = Path(request["out"]).parent
    args = TrainingArgs(
        batch_size=recipe.batch_size, iters=recipe.iters,
        steps_per_report=max(recipe.iters // 5, 1), steps_per_eval=recipe.iters + 1,
        steps_per_save=recipe.iters + 1, max_seq_length=4096,
        adapter_file=str(work / f"{label}-compact.safetensors"),
    )  # fmt: skip
    mlx_train(
        model, optim.AdamW(learning_rate=schedule, weight_decay=0.0), Rows(), None, args,
        loss=loss, training_callback=Report(),
    )  # fmt: skip

    # Teacher-forced check of the completions; the first token after `<think>` (reasoning or
    # not: a thinking-off row cannot win it) is left out.
    model.eval()
    wrong = 0
    for toks, off in data:
        x = mx.array(toks)[None]
        pred = np.array(mx.argmax(logits(model, x[:, :-1])[0], axis=-1))
        target = np.array(toks[1:])
        checked = np.arange(1, len(toks)) > off + 1
        wrong += int(((pred != target) & checked).any())
    train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - c0

    # Expand to Qwen3's vocabulary: unused tokens' rows are the null row.
    full = arch.Model(arch.ModelArgs.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    big = {}
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name in weights:
            small = np.array(weights.pop(name).astype(mx.float32))
            rows_full = np.repeat(small[null : null + 1], vocab, axis=0)
            rows_full[used] = small[:n_used]
            big[name] = mx.array(rows_full)
    full.load_weights([*weights.items(), *big.items()], strict=True)
    full.update(tree_map(lambda p: p.astype(getattr(mx, config["torch_dtype"])), full.parameters()))
    mx.eval(full.parameters())
    out = Path(request["out"])
    out.mkdir(parents=True, exist_ok=True)
    save_model(out, full)
    save_config(config, out / "config.json")
    for p in Path(request["tokenizer"]).iterdir():
        shutil.copyfile(p, out / p.name)
    params = sum(int(v.size) for _, v in tree_flatten(full.parameters()) if isinstance(v, mx.array))
    print(
        f"{label}: trained in {train_seconds:.0f} s ({train_cpu:.0f} CPU s), final loss "
        f"{losses[-1][1]:.3f}, {wrong} of {len(data)} rows with a wrong completion token",
        flush=True,
    )
    return {
        "parameters": params,
        "train_rows": len(rows),
        "distinct_tokens": n_used,
        "shared_prefix_tokens": prefix_len,
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu, 1),
        "iters": recipe.iters,
        "final_loss": losses[-1][1] if losses else None,
        "losses": losses,
        "rows_with_wrong_token": wrong,
    }


def smoke_worker(request: dict[str, Any]) -> dict[str, Any]:
    """Load both ids from `request['hf_home']` and check, in process, what the server will do:
    thinking off, the seed's turns (tool call parsed by the tokenizer's own parser, or text);
    thinking on, that a `<think>` block closes and the answer ends; the draft at k=3 greedy
    gives the same tokens, and how many of them it drafted."""
    from mlx_lm import load
    from mlx_lm.generate import stream_generate
    from mlx_lm.utils import get_total_parameters

    from punie.measurement.speculative import Acceptance, acceptance_from_flags
    from punie.serving.render import prompt_ids

    t0 = time.perf_counter()
    # The ids through the lab's own cache lookup (no network call, no HF_HUB_OFFLINE).
    hf_home = Path(request["hf_home"])
    model, tokenizer = load(str(resolve(MAIN_ID, hf_home)))[:2]
    load_s = time.perf_counter() - t0
    draft, draft_tok = load(str(resolve(DRAFT_ID, hf_home)))[:2]
    parser = tokenizer.tool_parser
    out: dict[str, Any] = {
        "main_load_seconds": round(load_s, 2),
        "main_parameters": int(get_total_parameters(model)),
        "draft_parameters": int(get_total_parameters(draft)),
        "tool_parser": getattr(parser, "__module__", None),
        "has_tool_calling": bool(tokenizer.has_tool_calling),
        "has_thinking": bool(tokenizer.has_thinking),
        "base_vocab": len(tokenizer._tokenizer.get_vocab())
        - len(tokenizer._tokenizer.get_added_vocab()),
        "draft_vocab_matches": draft_tok.vocab_size == tokenizer.vocab_size,
    }

    def generate(ids: list[int], draft_model: Any = None) -> tuple[list[int], list[bool], str]:
        tokens, flags, finish = [], [], "length"
        kwargs: dict[str, Any] = {"num_draft_tokens": 3} if draft_model else {}
        for r in stream_generate(
            model, tokenizer, ids, max_tokens=SMOKE_MAX_TOKENS, draft_model=draft_model, **kwargs
        ):
            if r.finish_reason is None or r.token not in tokenizer.eos_token_ids:
                tokens.append(r.token)
                flags.append(r.from_draft)
            finish = r.finish_reason or finish
        return tokens, flags, finish

    def parse(text: str) -> tuple[str | None, dict[str, Any] | None]:
        start, end = "<tool_call>", "</tool_call>"
        if start not in text or end not in text:
            return None, None
        try:
            call = parser(text.split(start, 1)[1].split(end, 1)[0], None)
        except ValueError:
            return None, None
        return call.get("name"), call.get("arguments")

    cases: list[dict[str, Any]] = []
    total = Acceptance(3, 0, 0, 0)
    identical = 0
    for case in request["cases"]:
        ids = prompt_ids(tokenizer, case["body"], {"enable_thinking": False})
        tokens, _, finish = generate(ids)
        text = tokenizer.decode(tokens)
        name, args = parse(text)
        spec_tokens, flags, spec_finish = generate(ids, draft)
        identical += spec_tokens == tokens
        acc = acceptance_from_flags(flags, 3, truncated=spec_finish == "length")
        total = total + acc
        on_ids = prompt_ids(tokenizer, case["body"], {"enable_thinking": True})
        on_tokens, _, on_finish = generate(on_ids)
        on_text = tokenizer.decode(on_tokens)
        think, _, answer = on_text.partition("</think>")
        cases.append(
            {
                "query": case["query"],
                "kind": case["kind"],
                "tool": case["tool"],
                "text": text,
                "finish": finish,
                "parsed_tool": name,
                "parsed_args": args,
                "args_match": args == case["args"] if case["tool"] else None,
                "answer_match": text.strip() == case["answer"].strip()
                if not case["tool"]
                else None,
                "speculative_identical": spec_tokens == tokens,
                "acceptance": acc.summary(),
                "thinking_on": {
                    "finish": on_finish,
                    "closed_think": "</think>" in on_text,
                    "think_tokens": len(tokenizer.encode(think, add_special_tokens=False)),
                    "answer": answer.strip()[:200],
                },
            }
        )
        ok = name == case["tool"] if case["kind"] == "tool_call" else not name
        print(
            f"smoke: {case['kind']:<11} {'ok ' if ok else 'BAD'} {case['query']!r}: {text[:70]!r}",
            flush=True,
        )
    out["cases"] = cases
    out["speculative_identical"] = f"{identical}/{len(cases)}"
    out["acceptance"] = total.summary()
    out["thinking_on_closed"] = sum(c["thinking_on"]["closed_think"] for c in cases)
    return out


def quantize_worker(request: dict[str, Any]) -> dict[str, Any]:
    """`mlx_lm convert -q` through its own functions, but the layers named in `keep_float`
    stay float; every other layer is quantized as the model's own predicate says."""
    from mlx_lm.utils import load, quantize_model, save

    loaded = load(request["src"], return_config=True, lazy=True)
    model, tokenizer, config = cast("tuple[Any, Any, dict[str, Any]]", loaded)
    own = getattr(model, "quant_predicate", None)
    keep = set(request["keep_float"])

    def predicate(path: str, module: Any) -> bool | dict[str, Any]:
        if path in keep:
            return False
        return own(path, module) if own is not None else True

    model, config = quantize_model(
        model, config, request["group_size"], request["bits"], quant_predicate=predicate
    )
    save(request["dst"], request["src"], model, tokenizer, config)
    return {"quantization": config["quantization"]}


WORKERS = {"train": train_worker, "smoke": smoke_worker, "quantize": quantize_worker}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in WORKERS:
        return worker_main(f"punie.models.real_shape_worker {argv[0]}", WORKERS[argv[0]], argv[1:])
    names = "|".join(WORKERS)
    print(f"usage: python -m punie.models.real_shape_worker {names} REQUEST.json RESULT.json")
    return 2


if __name__ == "__main__":
    sys.exit(main())
