"""Rank stability: per-layer rankings equal HF's own attention weights; Kendall matrix; files of the mode."""
import json
from pathlib import Path

import numpy as np
import torch
from conftest import left_pad, make_prompt, make_random_llava
from hydra import compose, initialize_config_dir

from vtr_bench.models.base import VLMAdapter
from vtr_bench.search.rank import HEATMAP_FILE, RESULT_FILE, kendall_matrix, layer_scores, rank_stability

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_layer_scores_equal_eager_attention_of_the_last_token(tiny_llava, pixel_values):
    ids, mask = left_pad([make_prompt(3, 5, seed=4)])
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixel_values[:1]}
    adapter = VLMAdapter(tiny_llava)
    scores = layer_scores(adapter, inputs)
    assert scores.shape == (6, 16) and all(len(layer._forward_pre_hooks) == 0 for layer in adapter.decoder_layers)
    eager = make_random_llava(attn="eager")  # same seed, same weights
    with torch.no_grad():
        attentions = eager(**inputs, output_attentions=True).attentions
    vision = adapter.vision_mask(ids)[0]
    expected = torch.stack([a[0, :, -1].mean(0)[vision] for a in attentions])
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)


def test_kendall_matrix():
    scores = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 9.0], [4.0, 3.0, 2.0, 1.0]])
    tau = kendall_matrix(scores)
    np.testing.assert_allclose(tau, [[1, 1, -1], [1, 1, -1], [-1, -1, 1]])


def test_mode_writes_matrix_and_heatmap(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["run.mode=rank_stability", "rank_stability.samples=2",
                                                       "logger=none", f"run.out_dir={tmp_path}"])
    results = rank_stability(cfg, tmp_path)
    saved = json.loads((tmp_path / RESULT_FILE).read_text())
    assert saved["tau"] == results["tau"] and saved["samples"] == 2 and saved["split"] == "search"
    tau = np.array(saved["tau"])
    assert tau.shape == (12, 12) and np.allclose(tau, tau.T) and np.allclose(np.diag(tau), 1)
    assert len(saved["adjacent_tau"]) == 11 and -1 <= saved["mean_tau_from_start_layer"] <= 1
    # the bootstrap interval of the mean tau over the samples holds the mean (the diagonal is 1 throughout)
    low, high = np.array(saved["tau_ci_low"]), np.array(saved["tau_ci_high"])
    assert np.all(low <= tau + 1e-12) and np.all(tau <= high + 1e-12) and np.allclose(np.diag(low), 1)
    assert saved["tau_ci"]["resamples"] == 2000 and saved["tau_ci"]["confidence"] == 0.95
    first, second = saved["mean_tau_from_start_layer_ci"]
    assert first <= saved["mean_tau_from_start_layer"] <= second
    assert (tmp_path / HEATMAP_FILE).stat().st_size > 0
