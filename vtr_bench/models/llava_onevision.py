"""LLaVA-OneVision (llava-hf): SigLIP + 2-layer MLP + Qwen2 decoder, AnyRes-max images.

An image is its 384 px base view (27 x 27 = 729 tokens) plus the tiles of its best-fitting grid of 384 px crops,
unpadded to the image's aspect ratio, with an image-newline token after every feature row; when those exceed
``anyres_max_9``'s 9 x 729 tokens the tile features are bilinearly shrunk first. Every one of these tokens (the
newlines too) sits at an ``<image>`` position, so the engine sees them all as vision tokens, as the official
reducers' ports do. The decoder is 1-D RoPE (the base adapter's); the token layout is no single grid, so the
downsampling control does not apply.
"""
from __future__ import annotations

from transformers import LlavaOnevisionProcessor, ProcessorMixin


class VisionOnlyOnevisionProcessor(LlavaOnevisionProcessor):
    """LlavaOnevisionProcessor without its video processor (which needs torchvision, left out here)."""

    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                 vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                 video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs):
        self.num_image_tokens = num_image_tokens
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.image_token = getattr(tokenizer, "image_token", None) or image_token
        self.video_token = getattr(tokenizer, "video_token", None) or video_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        self.vision_aspect_ratio = vision_aspect_ratio
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)
