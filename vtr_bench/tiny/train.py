"""Train the bundled tiny checkpoints on the synthetic shapes / sparse benchmarks (CPU, deterministic, resumable).

    python -m vtr_bench.tiny.train --model tiny_llava --out vtr_bench/assets/tiny_llava
    python -m vtr_bench.tiny.train --all          # every tiny model into vtr_bench/assets/<name>, two at a time

Stage 0 stands in for the pretrained vision encoders of the real models: the vision tower and projector learn to
make every vision token tell its grid cell's colour, shape, object, row and column (throw-away linear heads).
Stage 1 is LLaVA-style instruction tuning with AdamW on streamed train samples: each image is packed with its
question, more questions about the same scene and, for a share of images, "Describe the image." with a cell-by-cell
caption (the caption targets of LLaVA's alignment stage); each packed question sees only the image prefix, exactly
as the evaluated prompt. The loss covers only the answer tokens. Afterwards the test split is scored with a batched
greedy loop and the numbers go to ``TRAINING.md`` next to the checkpoint. A stopped run resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from vtr_bench.models.tiny import (ASSETS, PROMPT_TEMPLATE, build_tiny_internvl2, build_tiny_llava,
                                   build_tiny_sparse_llava)
from vtr_bench.tiny import data, sparse

BUILDERS = {"tiny_llava": build_tiny_llava, "tiny_internvl2": build_tiny_internvl2,
            "tiny_sparse_llava": build_tiny_sparse_llava}
BENCHMARKS = {"tiny_llava": data, "tiny_internvl2": data, "tiny_sparse_llava": sparse}
"""The data module (``shapes`` or ``sparse``) each tiny model is trained and scored on."""
HPARAMS = {
    "tiny_llava": {"vision_steps": 600, "steps": 2000, "batch_size": 16, "lr": 1.5e-3, "caption_share": 0.5,
                   "extra_questions": 6, "freeze_vision": True},
    "tiny_internvl2": {"vision_steps": 400, "steps": 3400, "batch_size": 16, "lr": 1.5e-3, "caption_share": 0.5,
                       "extra_questions": 6, "freeze_vision": True,
                       "type_weights": {"count": 2, "color": 1, "shape": 1, "position": 2, "exist": 2}},
    "tiny_sparse_llava": {"vision_steps": 1200, "steps": 2000, "batch_size": 16, "lr": 1.5e-3, "caption_share": 0.5,
                          "extra_questions": 6, "freeze_vision": True, "balance_objects": True},
}


def questions(sample: dict, rng: random.Random, extra_questions: int, caption_share: float,
              type_weights: dict[str, float] | None = None, bench=data) -> list[tuple[str, str]]:
    """(question, answer) pairs trained on one image: the sample's own question, ``extra_questions`` more about the
    same scene (types drawn with replacement, uniformly or by ``type_weights``; a type with no fitting question is
    skipped) and, with probability ``caption_share``, "Describe the image." with the caption; ``bench`` is the
    data module (``data`` for shapes, ``sparse``)."""
    pairs = [(sample["question"], sample["answer"])]
    weights = [type_weights[t] for t in bench.QUESTION_TYPES] if type_weights else None
    for qtype in rng.choices(bench.QUESTION_TYPES, weights=weights, k=extra_questions):
        qa = bench.ask(sample["objects"], qtype, rng)
        if qa is not None and qa not in pairs:
            pairs.append(qa)
    if rng.random() < caption_share:
        pairs.append((bench.CAPTION_QUESTION, sample["caption"]))
    return pairs


def make_batch(processor, samples: list[dict], caption_share: float, rng: random.Random,
               extra_questions: int = 0, type_weights: dict[str, float] | None = None, bench=data) -> dict:
    """Pack several single-turn examples per image into one row that shares the image prefix.

    A row is ``<s> USER: <image>...`` followed, per pair of :func:`questions`, by one segment: the rest of
    ``PROMPT_TEMPLATE`` and `` {answer}</s>``. A 4-D attention mask lets each segment see the prefix and itself
    only, and its position ids continue from the prefix, so every segment is computed exactly as the evaluated
    prompt (tested) while the image is encoded once. Labels cover the answer tokens (and eos) only; right padding.
    """
    tok = processor.tokenizer
    head, image, tail = PROMPT_TEMPLATE.partition("<image>")
    images, texts, layouts = [], [], []
    for s in samples:
        pairs = questions(s, rng, extra_questions, caption_share, type_weights, bench)
        segments = [(tail.format(question=q), f" {a}{tok.eos_token}") for q, a in pairs]
        images.append(bench.image(s))
        texts.append(head + image + "".join(q + a for q, a in segments))
        # word-level tokenisation is additive over pieces, so segment lengths can be counted piece by piece
        layouts.append([tuple(len(tok(piece, add_special_tokens=False).input_ids) for piece in segment)
                        for segment in segments])
    batch = processor(images=images, text=texts, return_tensors="pt", padding=True, padding_side="right")
    ids = batch["input_ids"]
    n, width = ids.shape
    labels = torch.full_like(ids, -100)
    positions = torch.zeros_like(ids)
    mask = torch.eye(width, dtype=torch.bool).repeat(n, 1, 1, 1)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    for i, (length, layout) in enumerate(zip(batch["attention_mask"].sum(1).tolist(), layouts)):
        prefix = length - sum(q + a for q, a in layout)
        positions[i, :prefix] = torch.arange(prefix)
        mask[i, 0, :prefix, :prefix] = causal[:prefix, :prefix]
        start = prefix
        for q, a in layout:
            end = start + q + a
            positions[i, start:end] = torch.arange(prefix, prefix + q + a)
            mask[i, 0, start:end, :prefix] = True
            mask[i, 0, start:end, start:end] = causal[:q + a, :q + a]
            labels[i, start + q:end] = ids[i, start + q:end]
            start = end
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
            "pixel_values": batch["pixel_values"], "labels": labels}


def _token_grid(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The LLM's vision tokens (projected image features, a square grid in row-major order): (B, side, side, D)."""
    cfg = model.config
    feats = model.model.get_image_features(pixel_values=pixel_values, vision_feature_layer=cfg.vision_feature_layer,
                                           vision_feature_select_strategy=cfg.vision_feature_select_strategy)
    feats = torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats
    side = math.isqrt(feats.shape[1])
    return feats.view(feats.shape[0], side, side, feats.shape[-1])


OBJECT_HEADS = ("color", "shape", "object")
"""The stage-0 heads that name what is under a token (empty on background); row and column are every token's."""


def stage0_loss(logits: dict, targets: dict, balance_objects: bool = False):
    """Sum over the heads of the per-token cross-entropy (``logits[k]``: tokens x classes, ``targets[k]``: tokens).
    ``balance_objects``: for colour / shape / object, the mean over object tokens plus the mean over background
    tokens, so the few object tokens weigh as much as all the rest."""
    on_object = targets["object"] > 0
    loss = 0
    for k in logits:
        if balance_objects and k in OBJECT_HEADS and on_object.any():
            token_loss = torch.nn.functional.cross_entropy(logits[k], targets[k], reduction="none")
            loss = loss + token_loss[on_object].mean() + token_loss[~on_object].mean()
        else:  # exactly the loss the shapes checkpoints were trained with
            loss = loss + torch.nn.functional.cross_entropy(logits[k], targets[k])
    return loss


def pretrain_vision(model, processor, steps: int, batch_size: int, lr: float, seed: int, bench=data,
                    balance_objects: bool = False) -> tuple[float, float]:
    """Stage 0, a stand-in for the pretrained CLIP / InternViT of the real models: train the vision tower and
    projector so that every vision token tells, through throw-away linear heads, the colour, shape and object
    (colour and shape together, as CLIP features name whole objects; or empty) of its grid cell and the cell's row
    and column (``bench.token_targets``). ``balance_objects``: the colour / shape / object losses weigh the tokens
    on objects as much as all background tokens together (on ``sparse`` objects cover ~5% of the tokens, and an
    unweighted loss left shape nearly undecodable there: a linear probe read it on 0.49 of object tokens).
    Returns the mean per-token accuracy and the mean colour / shape / object accuracy on object tokens, on 200
    search images."""
    dim = model.config.text_config.hidden_size
    sizes = bench.TOKEN_CLASSES
    heads = torch.nn.ModuleDict({k: torch.nn.Linear(dim, n) for k, n in sizes.items()})
    params = list(model.model.vision_tower.parameters()) + list(model.model.multi_modal_projector.parameters())
    opt = torch.optim.AdamW(params + list(heads.parameters()), lr=lr, weight_decay=0.01)

    def step_loss(samples):
        pv = processor.image_processor([bench.image(s) for s in samples], return_tensors="pt")["pixel_values"]
        tokens = _token_grid(model, pv)
        targets = bench.token_targets(samples, tokens.shape[1])
        logits = {k: heads[k](tokens).flatten(0, 2) for k in sizes}
        targets = {k: v.flatten() for k, v in targets.items()}
        on_object = targets["object"] > 0
        loss = stage0_loss(logits, targets, balance_objects)
        hits = {k: logits[k].argmax(-1) == targets[k] for k in sizes}
        correct = sum(h.float().mean() for h in hits.values()) / len(sizes)
        object_correct = sum(hits[k][on_object].float().mean() for k in OBJECT_HEADS) / len(OBJECT_HEADS)
        return loss, correct, object_correct

    stream = bench.iter_train(start=10_000_000 + seed)
    model.train()
    for _ in tqdm(range(steps), desc="stage 0: vision", mininterval=5):
        loss, _, _ = step_loss(list(itertools.islice(stream, batch_size)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, correct, object_correct = step_loss(bench.split_samples("search")[:200])
    return float(correct), float(object_correct)


@torch.no_grad()
def evaluate(model, processor, samples: list[dict], batch_size: int = 50, max_new_tokens: int = 4,
             bench=data) -> dict[str, float]:
    """Exact-match accuracy of batched greedy decoding (left padding), overall and per question type."""
    model.eval()
    hits: Counter = Counter()
    totals = Counter(s["qtype"] for s in samples)
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        batch = processor(images=[bench.image(s) for s in chunk], return_tensors="pt", padding=True,
                          text=[PROMPT_TEMPLATE.format(question=s["question"]) for s in chunk])
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        answers = processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        for s, a in zip(chunk, answers):
            hits[s["qtype"]] += a.strip() == s["answer"]
    acc = {f"exact_match_{t}": hits[t] / totals[t] for t in bench.QUESTION_TYPES}
    acc["exact_match"] = sum(hits.values()) / len(samples)
    return acc


def _save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` ``state`` so that ``path`` is the old checkpoint or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def fit(name: str, vision_steps: int, steps: int, batch_size: int, lr: float, caption_share: float,
        extra_questions: int, freeze_vision: bool, type_weights: dict[str, float] | None = None,
        balance_objects: bool = False, seed: int = 0,
        threads: int = 1, eval_every: int = 0, checkpoint: Path | None = None, checkpoint_every: int = 100,
        stop_at: int | None = None):
    """Train tiny model ``name`` from scratch; returns ``(model, processor, timings)``. Deterministic for a given
    ``seed`` and ``threads`` (tested), whether it runs at once or is stopped and resumed.

    Stage 0 pretrains the vision tower (:func:`pretrain_vision`); stage 1 trains the model on packed rows
    (:func:`make_batch`), all but the vision tower with ``freeze_vision`` (as LLaVA-1.5 keeps CLIP frozen).
    ``eval_every`` > 0 prints the accuracy on the first 100 search samples every that many steps (not timed).
    With ``checkpoint`` (a file) the state (weights, optimiser, schedule, random generators, data position) is
    saved after stage 0 and every ``checkpoint_every`` steps, and a run finding one resumes from it (its
    hyper-parameters must match); ``stop_at`` ends the run after that step, checkpointed, returning None.
    """
    hp = dict(name=name, vision_steps=vision_steps, steps=steps, batch_size=batch_size, lr=lr,
              caption_share=caption_share, extra_questions=extra_questions, freeze_vision=freeze_vision,
              type_weights=type_weights, balance_objects=balance_objects, seed=seed, threads=threads)
    bench = BENCHMARKS[name]
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model, processor = BUILDERS[name](seed=seed)
    state = torch.load(checkpoint, weights_only=False) if checkpoint is not None and checkpoint.exists() else None
    if state is not None and state["hp"] != hp:
        raise ValueError(f"{checkpoint} was written with other settings ({state['hp']}); delete it to start over")
    if state is None:
        start = time.perf_counter()
        cell_acc, object_acc = pretrain_vision(model, processor, vision_steps, batch_size, 2e-3, seed, bench,
                                               balance_objects)
        vision_s = time.perf_counter() - start
        tqdm.write(f"stage 0: cell accuracy {cell_acc:.4f}, on object tokens {object_acc:.4f} after {vision_s:.0f} s")
        first, elapsed = 0, 0.0
    else:
        model.load_state_dict(state["model"])
        cell_acc, vision_s, first, elapsed = state["cell_acc"], state["vision_s"], state["step"], state["elapsed"]
        object_acc = state["object_acc"]
        tqdm.write(f"{name}: resuming from step {first} of {steps} ({checkpoint})")
    rng = random.Random(seed)
    stream = bench.iter_train(start=first * batch_size)
    model.model.vision_tower.requires_grad_(not freeze_vision)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01,
                            betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    if state is not None:
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])

    def save(step: int) -> None:
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {
                "hp": hp, "step": step, "model": model.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                "cell_acc": cell_acc, "object_acc": object_acc, "vision_s": vision_s,
                "elapsed": elapsed + time.perf_counter() - start})

    start = time.perf_counter()
    if state is None:
        save(0)
    model.train()
    bar = tqdm(range(first, steps), desc=f"train {name}", mininterval=5, initial=first, total=steps)
    for step in bar:
        batch = make_batch(processor, list(itertools.islice(stream, batch_size)), caption_share, rng, extra_questions,
                           type_weights, bench)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
            paused = time.perf_counter()
            tqdm.write(f"step {step + 1}: loss {loss.item():.3f}, search[:100] "
                       f"{evaluate(model, processor, bench.split_samples('search')[:100], bench=bench)}")
            model.train()
            start += time.perf_counter() - paused
        if (step + 1) % checkpoint_every == 0 or step + 1 == stop_at:
            save(step + 1)
        if step + 1 == stop_at and stop_at < steps:
            bar.close()
            return None
    timings = {"train_seconds": elapsed + time.perf_counter() - start + vision_s, "vision_seconds": vision_s,
               "cell_accuracy": cell_acc, "object_accuracy": object_acc, "resumed": state is not None}
    return model.eval(), processor, timings


def train(name: str, out: Path, seed: int = 0, threads: int = 1, eval_every: int = 0,
          checkpoint: Path | None = None, stop_at: int | None = None, **hp) -> dict | None:
    """:func:`fit` tiny model ``name`` with hyper-parameters ``hp``, score it on the test and search splits, save
    checkpoint + processor + ``TRAINING.md`` to ``out``; returns the metrics (None: stopped at ``stop_at``, to be
    resumed from ``checkpoint``, which is deleted once the model is saved)."""
    fitted = fit(name, seed=seed, threads=threads, eval_every=eval_every, checkpoint=checkpoint, stop_at=stop_at, **hp)
    if fitted is None:
        return None
    model, processor, metrics = fitted
    bench = BENCHMARKS[name]
    metrics["test"] = evaluate(model, processor, bench.split_samples("test"), bench=bench)
    metrics["search_exact_match"] = evaluate(model, processor, bench.split_samples("search"),
                                             bench=bench)["exact_match"]
    metrics["baselines_test"] = bench.baselines(bench.split_samples("test"))
    metrics["params"] = sum(p.numel() for p in model.parameters())
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _write_report(out / "TRAINING.md", name, model, metrics, seed=seed, threads=threads, **hp)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return metrics


def _write_report(path: Path, name: str, model, metrics: dict, **hp) -> None:
    acc, base = metrics["test"], metrics["baselines_test"]
    bench = BENCHMARKS[name]
    n_test, n_search = len(bench.split_samples("test")), len(bench.split_samples("search"))
    text = model.config.text_config
    lines = [
        f"# {name}: training record",
        "",
        f"Command: `python -m vtr_bench.tiny.train --model {name} --out vtr_bench/assets/{name}`"
        f" (hyper-parameters: {', '.join(f'{k}={v}' for k, v in hp.items())}).",
        f"Machine: 2-core CPU, torch {torch.__version__}, {hp['threads']} thread(s), float32.",
        f"Training wall time: {metrics['train_seconds'] / 60:.1f} min in all, of which stage 0 (vision pretraining, "
        f"{hp['vision_steps']} steps) {metrics['vision_seconds'] / 60:.1f} min, reaching a per-token accuracy "
        f"(colour, shape, object, row, column) of "
        f"{metrics['cell_accuracy']:.4f} (colour / shape / object on object tokens: {metrics['object_accuracy']:.4f})"
        f"; stage 1: {hp['steps']} steps x {hp['batch_size']} images, each packed with "
        f"up to {1 + hp['extra_questions']} questions (+ a caption for a share of {hp['caption_share']}).",
        "Wall time of this run on this machine; other work running alongside lengthens it"
        + (" (resumed from a checkpoint: the sum of its stretches)." if metrics.get("resumed") else "."),
        f"Model: {metrics['params'] / 1e6:.2f} M parameters; decoder {text.model_type}, "
        f"{text.num_hidden_layers} layers, "
        f"hidden {text.hidden_size}; {model.config.image_seq_length} image tokens per image.",
        "",
        f"Exact-match accuracy on the `{bench.NAME}` test split ({n_test} samples, greedy, batch 50, left padding):",
        "",
        "| metric | accuracy |",
        "|---|---|",
        *[f"| {k} | {v:.3f} |" for k, v in acc.items()],
        f"| search split ({n_search}), exact_match | {metrics['search_exact_match']:.3f} |",
        "",
        "Blind baselines on the test split (fitted on 20k train samples):",
        "",
        "| baseline | accuracy |",
        "|---|---|",
        f"| majority answer | {base['majority']:.3f} |",
        f"| majority answer per question type | {base['type_majority']:.3f} |",
        f"| text-only (most frequent answer per question text) | {base['text_only']:.3f} |",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", choices=sorted(BUILDERS))
    group.add_argument("--all", action="store_true", help="train every tiny model into vtr_bench/assets/<name>")
    parser.add_argument("--out", type=Path, help="output folder (default vtr_bench/assets/<model>)")
    parser.add_argument("--vision-steps", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--caption-share", type=float)
    parser.add_argument("--extra-questions", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=0, help="print search accuracy every N steps")
    parser.add_argument("--checkpoint", type=Path,
                        help="state saved every 100 steps (default runs/train/<model>.pt; removed when done)")
    parser.add_argument("--stop-at", type=int, help="stop after this step (checkpointed); run again to resume")
    args = parser.parse_args(argv)
    if args.all:
        if args.out is not None:
            parser.error("--out names one model's folder; --all writes vtr_bench/assets/<name>")
        _train_all([a for a in (sys.argv[1:] if argv is None else argv) if a != "--all"])
        return
    hp = dict(HPARAMS[args.model])
    overrides = {"vision_steps": args.vision_steps, "steps": args.steps, "batch_size": args.batch_size,
                 "lr": args.lr, "caption_share": args.caption_share, "extra_questions": args.extra_questions}
    hp.update({k: v for k, v in overrides.items() if v is not None})
    out = args.out if args.out is not None else ASSETS / args.model
    checkpoint = args.checkpoint if args.checkpoint is not None else Path("runs") / "train" / f"{args.model}.pt"
    try:
        metrics = train(args.model, out, seed=args.seed, threads=args.threads, eval_every=args.eval_every,
                        checkpoint=checkpoint, stop_at=args.stop_at, **hp)
    except ValueError as error:
        sys.exit(f"vtr_bench.tiny.train: error: {error}")
    if metrics is None:
        print(f"{args.model}: stopped after step {args.stop_at}; the same command resumes ({checkpoint})")
        return
    print(f"{args.model}: test exact_match {metrics['test']['exact_match']:.3f} "
          f"({metrics['train_seconds'] / 60:.1f} min) -> {out}")


def _train_all(options: list[str], jobs: int = 2) -> None:
    """Train every tiny model, one single-thread process each, ``jobs`` at a time (the 2-core machine), the longest
    first; exits non-zero naming the models that failed."""
    from concurrent.futures import ThreadPoolExecutor

    def run(name: str) -> int:
        return subprocess.call([sys.executable, "-m", "vtr_bench.tiny.train", "--model", name, *options])

    order = ["tiny_sparse_llava", "tiny_internvl2", "tiny_llava"]
    assert sorted(order) == sorted(BUILDERS)
    with ThreadPoolExecutor(jobs) as pool:
        codes = dict(zip(order, pool.map(run, order)))
    failed = [name for name, code in codes.items() if code != 0]
    if failed:
        sys.exit(f"vtr_bench.tiny.train: error: training failed for {', '.join(failed)}")


if __name__ == "__main__":
    main()
