"""Shared fixtures: tiny random-init models built from configs (no download), offline settings."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models are fastest on one thread, and a loaded 2-core machine makes multi-threaded tiny ops ~100x slower;
# subprocesses (CLI tests) inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

IMAGE_TOKEN = 5
PAD = 0


def make_random_llava(layers: int = 6, attn: str = "sdpa", seed: int = 0, image_size: int = 16):
    """A tiny LLaVA (CLIP-style ViT, (image_size/4)² image tokens: 16 by default, Llama decoder with GQA) in
    float32, eval mode."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    text = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       pad_token_id=PAD, bos_token_id=1, eos_token_id=2)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_size, patch_size=4, projection_dim=32)
    config = LlavaConfig(text_config=text, vision_config=vision, image_token_index=IMAGE_TOKEN,
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    config._attn_implementation = attn
    model = LlavaForConditionalGeneration(config)
    model.eval()
    return model


def make_prompt(n_text_before: int, n_text_after: int, n_image: int = 16, seed: int = 0) -> torch.Tensor:
    """Token ids: text, ``n_image`` image tokens, text (ids avoid the special ids)."""
    g = torch.Generator().manual_seed(seed)
    before = torch.randint(6, 64, (n_text_before,), generator=g)
    after = torch.randint(6, 64, (n_text_after,), generator=g)
    return torch.cat([before, torch.full((n_image,), IMAGE_TOKEN), after])


def left_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad 1-D id tensors into (ids, attention_mask)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return ids, mask


@pytest.fixture(scope="session")
def tiny_llava():
    return make_random_llava()


@pytest.fixture(scope="session")
def pixel_values():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 16, 16, generator=g)


@pytest.fixture(scope="module")
def task_cache(tmp_path_factory):
    """A folder for generated task data (the bundled shapes tasks), one per test module."""
    return tmp_path_factory.mktemp("tasks")
