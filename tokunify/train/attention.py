"""Packed-sequence attention for SDPA models: causal attention inside each document only.

PyTorch has no variable-length attention kernel on the CPU (flash-attn's varlen is CUDA-only), and
a dense ``[B, 1, L, L]`` block mask both computes the masked blocks and costs O(L^2) memory. This
attention function runs ``scaled_dot_product_attention(is_causal=True)`` per document instead:
exact, O(sum of len^2) work, no mask tensor. It plugs into transformers' ``AttentionInterface``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

NAME = "tokunify_packed"
BOUNDS_KW = "tokunify_doc_bounds"


def packed_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, H, L, d]
    key: torch.Tensor,  # [B, H_kv, L, d]
    value: torch.Tensor,  # [B, H_kv, L, d]
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    bounds: list[list[tuple[int, int]]] | None = kwargs.get(BOUNDS_KW)
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    p = dropout if module.training else 0.0
    if bounds is None:  # not a packed batch (e.g. generation): plain causal attention
        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_mask,
            is_causal=attention_mask is None and query.shape[2] > 1,
            dropout_p=p,
            scale=scaling,
        )
        return out.transpose(1, 2).contiguous(), None
    rows = []
    for b, row in enumerate(bounds):
        segs = [
            F.scaled_dot_product_attention(
                query[b : b + 1, :, s:e],
                key[b : b + 1, :, s:e],
                value[b : b + 1, :, s:e],
                is_causal=True,
                dropout_p=p,
                scale=scaling,
            )
            for s, e in row
        ]
        end = row[-1][1] if row else 0
        if end < query.shape[2]:  # padding tail: attends to itself only, never read by a target
            segs.append(value[b : b + 1, :, end:])
        rows.append(torch.cat(segs, dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None  # [B, L, H, d]


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None


def register() -> None:
    from transformers import AttentionInterface

    try:
        from transformers import AttentionMaskInterface
    except ImportError:
        from transformers.masking_utils import AttentionMaskInterface
    AttentionInterface.register(NAME, packed_sdpa)
    AttentionMaskInterface.register(NAME, _no_mask)


def enable(model: torch.nn.Module) -> bool:
    """Switch an SDPA/eager transformers model to packed attention; False where it cannot be."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager") or not hasattr(
        model, "set_attn_implementation"
    ):
        return False
    register()
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def disable(model: torch.nn.Module) -> None:
    if getattr(getattr(model, "config", None), "_attn_implementation", None) == NAME:
        model.set_attn_implementation("sdpa")
