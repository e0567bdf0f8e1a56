"""Rank stability (``run.mode=rank_stability``): how alike the vision-token rankings of the decoder layers are.

For each of N samples the unreduced model runs one prefill; forward pre-hooks of our own on the decoder layers
compute, from each layer's input hidden states, the head-averaged attention the last prompt token pays every
vision token (the engine's :class:`~vtr_bench.reduction.scoring.LastTokenAttention`, recomputed from the
layer's own q/k and RoPE, so the model keeps running SDPA). Kendall's tau-b between the score vectors of every
pair of layers, averaged over samples, gives an L x L matrix (the paper reports tau >= 0.7 from layer 2 on).
Outputs in the run dir: ``rank_stability.json`` and ``rank_stability.png``; the same are logged to W&B.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vtr_bench.errors import ConfigError

RESULT_FILE = "rank_stability.json"
HEATMAP_FILE = "rank_stability.png"


def layer_scores(adapter, inputs: dict):
    """Last-token attention to the vision tokens in every decoder layer of the unreduced model, one sample.

    Args:
        adapter: the model adapter.
        inputs: model inputs of one sample (``input_ids``, ``attention_mask``, ``pixel_values``, ...).

    Returns:
        A (layers, n_vision) float tensor.
    """
    import torch

    from vtr_bench.eval.generate import prefill_positions
    from vtr_bench.reduction.scoring import LastTokenAttention, ScoringInputs
    from vtr_bench.reduction.sequence import SequenceState

    vision = adapter.vision_mask(inputs["input_ids"])
    mask = inputs["attention_mask"]
    scorer, rows, decoder = LastTokenAttention(source_offset=0), {}, adapter.decoder

    def capture(index):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            cos, sin = decoder.token_embeddings(kwargs["position_embeddings"], 1)
            state = SequenceState.initial(vision, mask, torch.zeros_like(mask), cos, sin)  # positions unused
            rows[index] = scorer.score(ScoringInputs(index, module, hidden, state, decoder=decoder))[0][vision[0]]

        return hook

    handles = [layer.register_forward_pre_hook(capture(i), with_kwargs=True)
               for i, layer in enumerate(adapter.decoder_layers)]
    try:
        with torch.no_grad():
            model_inputs, position_ids = prefill_positions(inputs)
            adapter.model(**model_inputs, position_ids=position_ids, use_cache=False, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([rows[i] for i in range(len(adapter.decoder_layers))]).float().cpu()


def kendall_matrix(scores: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between the rows of a (layers, n) score array (NaN where a row is constant)."""
    from scipy.stats import kendalltau

    layers = scores.shape[0]
    tau = np.eye(layers)
    for i in range(layers):
        for j in range(i + 1, layers):
            tau[i, j] = tau[j, i] = kendalltau(scores[i], scores[j]).statistic
    return tau


def rank_stability(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the analysis a config describes (``rank_stability:`` block) and write, log and print its summary."""
    from vtr_bench.models.loader import load_adapter
    from vtr_bench.search.data import load_search_samples
    from vtr_bench.search.report import plot_heatmap
    from vtr_bench.eval.stats import DEFAULT_RESAMPLES, bootstrap_mean_interval
    from vtr_bench.tracking.results import write_json_atomic
    from vtr_bench.tracking.wandb_logger import make_logger

    rank = cfg.rank_stability
    if int(rank.samples) < 1:
        raise ConfigError(f"rank_stability.samples must be >= 1, got {rank.samples}")
    adapter = load_adapter(cfg.model, device=cfg.run.device)
    split, samples = load_search_samples(str(rank.task), rank.local, cfg.run.cache_dir, int(rank.samples))
    taus = np.stack([kendall_matrix(layer_scores(adapter, adapter.prepare([image], [question])).numpy())
                     for image, question in samples])
    tau, tau_std = np.nanmean(taus, axis=0), np.nanstd(taus, axis=0)
    tau_low, tau_high = bootstrap_mean_interval(taus, DEFAULT_RESAMPLES, int(cfg.seed))
    layers, start = tau.shape[0], int(rank.start_layer)
    later = [tau[i, j] for i in range(start, layers) for j in range(i + 1, layers)]
    summary = {"mean_tau_from_start_layer": float(np.mean(later)) if later else None,
               "min_tau_from_start_layer": float(np.min(later)) if later else None,
               "adjacent_tau": [float(tau[i, i + 1]) for i in range(layers - 1)]}
    if later:  # the interval of the headline: per sample, the mean tau over pairs of layers >= start_layer
        pairs = [(i, j) for i in range(start, layers) for j in range(i + 1, layers)]
        per_sample = np.nanmean(np.stack([taus[:, i, j] for i, j in pairs], axis=1), axis=1)
        low, high = bootstrap_mean_interval(per_sample, DEFAULT_RESAMPLES, int(cfg.seed))
        summary["mean_tau_from_start_layer_ci"] = [float(low), float(high)]
    run_dir = Path(run_dir)
    results = {"model": cfg.model.name, "task": str(rank.task), "split": split, "samples": len(samples),
               "layers": layers, "start_layer": start,
               "ranking": "head-averaged attention of the last prompt token to each vision token, per layer",
               "tau": tau.tolist(), "tau_std": tau_std.tolist(),
               "tau_ci_low": tau_low.tolist(), "tau_ci_high": tau_high.tolist(),
               "tau_ci": {"confidence": 0.95, "resamples": DEFAULT_RESAMPLES, "seed": int(cfg.seed),
                          "method": "percentile bootstrap over samples"}, **summary}
    write_json_atomic(run_dir / RESULT_FILE, results)
    heatmap = plot_heatmap(tau.tolist(), run_dir / HEATMAP_FILE,
                           f"{cfg.model.name}\nKendall tau of vision-token rankings, {len(samples)} samples",
                           "Kendall tau")
    logger = make_logger(cfg.logger.mode, project=cfg.logger.project, save_dir=run_dir,
                         tags=[cfg.model.name, "rank_stability"], name=f"{cfg.model.name}-rank_stability")
    try:
        logger.start(OmegaConf.to_container(cfg, resolve=True))
        logger.log_metrics({k: v for k, v in summary.items() if v is not None})
        logger.log_table("kendall_tau", ["layer", *map(str, range(layers))],
                         [[i, *row] for i, row in enumerate(tau.tolist())])
        logger.log_image("rank_stability", heatmap)
    finally:
        logger.finish()
    print(json.dumps({"run_dir": str(run_dir), "samples": len(samples), **summary}))
    return results
