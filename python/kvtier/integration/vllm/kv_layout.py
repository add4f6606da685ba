"""How a vLLM paged KV cache maps onto kvtier blocks, shards and segments.

A kvtier block is one vLLM block (``block_size`` tokens) of every attention
layer of one rank. The store copies bytes by address, so all this module does
is describe, per layer, where block ``b`` lives: ``base + b * stride`` for
``page_bytes`` bytes. Nothing here touches the KV bytes themselves.

The layouts understood (checked in ``describe_layer``):
  * block-outermost per-layer views ``[num_blocks, ...]`` whose block is one
    contiguous page: vLLM >= 0.3x views every layer as ``[B, H, N, C]`` and
    the CPU backend's layout (LBHNC) stores each layer's block as one page.
    A manager block split into ``r`` kernel blocks (``B = r * num_blocks``)
    is ``r`` adjacent kernel pages, still one run.
  * the older K/V-first ``[2, num_blocks, ...]`` tensors: two segments (K, V).
Anything else (e.g. head-outermost layouts, where a block is scattered)
fails with a message naming the layer, its shape and strides.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LayerSegments:
    """Where block b of one layer lives: seg j is at bases[j] + b*strides[j]."""

    name: str
    bases: tuple[int, ...]
    strides: tuple[int, ...]
    seg_bytes: tuple[int, ...]

    @property
    def page_bytes(self) -> int:
        return sum(self.seg_bytes)


class UnsupportedKVLayout(ValueError):
    """The KV cache tensors cannot be addressed block by block."""


def _run_bytes(t: torch.Tensor) -> int | None:
    """Bytes of `t` if it is one contiguous run of memory, else None."""
    return t.numel() * t.element_size() if t.is_contiguous() else None


def describe_layer(name: str, t: torch.Tensor, num_blocks: int) -> LayerSegments:
    if t.device.type != "cpu":
        raise UnsupportedKVLayout(
            f"kvtier: layer {name}: KV cache on {t.device}; kvtier copies KV by host "
            "address, so only host-resident (CPU) KV caches are supported"
        )
    elt = t.element_size()
    shape, strides = tuple(t.shape), tuple(t.stride())
    # [B, ...] with each block (or group of kernel blocks) one contiguous page.
    if t.dim() >= 2 and shape[0] % num_blocks == 0:
        ratio = shape[0] // num_blocks
        kernel_page = _run_bytes(t[0])
        if kernel_page is not None and (ratio == 1 or strides[0] * elt == kernel_page):
            return LayerSegments(name, (t.data_ptr(),), (ratio * strides[0] * elt,),
                                 (ratio * kernel_page,))
    # [2, B, ...]: K and V halves of a block are two runs.
    if t.dim() >= 3 and shape[0] == 2 and shape[1] == num_blocks:
        page = _run_bytes(t[0, 0])
        if page is not None:
            k, v = t[0], t[1]
            return LayerSegments(name, (k.data_ptr(), v.data_ptr()),
                                 (strides[1] * elt, strides[1] * elt), (page, page))
    raise UnsupportedKVLayout(
        f"kvtier: layer {name}: unsupported KV cache layout shape={shape} strides={strides} "
        f"dtype={t.dtype} for {num_blocks} blocks; kvtier needs each block of a layer to be "
        "one contiguous page ([num_blocks, ...], e.g. the CPU backend's LBHNC layout) or "
        "K/V-first [2, num_blocks, ...]"
    )


def describe_kv_caches(kv_caches: dict[str, torch.Tensor], layer_order: list[str],
                       num_blocks: int) -> list[LayerSegments]:
    """Segments of every layer that owns KV memory, in model layer order.

    Layers that share another layer's KV cache (cross-layer KV sharing) point
    at the same memory; they are stored once.
    """
    seen: set[int] = set()
    layers = []
    for name in layer_order:
        t = kv_caches.get(name)
        if t is None:
            continue
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        layers.append(describe_layer(name, t, num_blocks))
    missing = [n for n in kv_caches if n not in layer_order]
    if missing:
        raise UnsupportedKVLayout(
            f"kvtier: KV caches of layers {missing[:4]} are outside the (single) full-attention "
            "KV cache group; hybrid models (sliding window, Mamba) are not supported"
        )
    if not layers:
        raise UnsupportedKVLayout("kvtier: no KV cache tensors registered")
    return layers
