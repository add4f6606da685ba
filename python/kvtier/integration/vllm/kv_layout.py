"""How a vLLM paged KV cache maps onto kvtier blocks, shards and segments.

A kvtier block is one *head unit* of one vLLM block (``block_size`` tokens):
``heads_per_unit`` consecutive KV heads of every attention layer of one
pipeline stage (common.py names it). The store copies bytes by address, so
all this module does is describe, per layer, where heads ``[h, h + g)`` of
block ``b`` live: segment ``j`` at ``bases[j] + b * strides[j]``,
``seg_bytes[j]`` long. Nothing here touches the KV bytes themselves.

A unit's bytes are its elements in one canonical order, whatever the TP size
that wrote them: per layer ``[g, N, C]`` (heads, tokens, content: vLLM's
logical per-layer view ``[B, H, N, C]`` sliced to the unit's heads, a
manager block's kernel blocks in token order), or ``[2, g, N, C]`` for the
K/V-first tensors. A rank holding H/2 heads and one holding all H store and
read the same bytes for a head; only the segments differ.

The layouts understood (checked in ``describe_layer``):
  * block-outermost per-layer views ``[B, H, N, C]`` with ``H`` this rank's
    KV heads, any strides: vLLM >= 0.3x views every layer so (the CPU
    backend's LBHNC layout makes a head's ``[N, C]`` one run). A manager
    block split into ``r`` kernel blocks (``B = r * num_blocks``) is ``r``
    kernel pages ``stride[0]`` apart.
  * the older K/V-first ``[2, num_blocks, H, N, C]`` tensors: K and V parts.
Anything else (no head axis of this rank's size, e.g. a packed page, or a
unit scattered into more than MAX_SEGMENTS pieces) fails with a message
naming the layer, its shape and strides.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

# A unit of one layer split into more pieces than this is refused: the store
# would copy it a few bytes at a time (element-strided layouts).
MAX_SEGMENTS = 4096


@dataclass(frozen=True)
class LayerSegments:
    """Where block b of one layer's unit lives: seg j is at bases[j] + b*strides[j]."""

    name: str
    bases: tuple[int, ...]
    strides: tuple[int, ...]
    seg_bytes: tuple[int, ...]

    @property
    def page_bytes(self) -> int:
        return sum(self.seg_bytes)


class UnsupportedKVLayout(ValueError):
    """The KV cache tensors cannot be addressed block by block and head by head."""


@dataclass(frozen=True)
class LayerKV:
    """One layer's paged KV tensor with its head axis located."""

    name: str
    tensor: torch.Tensor
    num_blocks: int
    num_heads: int  # this rank's KV heads (head slots) in the tensor
    kv_first: bool  # [2, num_blocks, H, N, C] rather than [B, H, N, C]

    def _unit_view(self, first: int, count: int) -> tuple[torch.Tensor, int]:
        """Heads [first, first + count) of block 0 in the canonical element
        order, and the byte stride from one block to the next."""
        t, elt = self.tensor, self.tensor.element_size()
        if self.kv_first:
            return t[:, 0, first:first + count], t.stride(1) * elt
        ratio = t.shape[0] // self.num_blocks
        # [r, g, N', C] -> [g, r, N', C]: a head's tokens in order.
        return t[0:ratio, first:first + count].transpose(0, 1), ratio * t.stride(0) * elt

    def heads(self, first: int, count: int) -> LayerSegments:
        """The segments of heads [first, first + count) (this rank's indices)."""
        if not (0 <= first and count > 0 and first + count <= self.num_heads):
            raise ValueError(f"kvtier: layer {self.name}: heads [{first}, {first + count}) "
                             f"outside the {self.num_heads} this rank holds")
        view, block_stride = self._unit_view(first, count)
        runs = _runs(view, self.tensor.data_ptr())
        if runs is None:
            raise UnsupportedKVLayout(
                f"kvtier: layer {self.name}: KV cache layout shape={tuple(self.tensor.shape)} "
                f"strides={tuple(self.tensor.stride())} is not head-sliceable: heads "
                f"[{first}, {first + count}) of a block are more than {MAX_SEGMENTS} pieces")
        base = self.tensor.data_ptr()
        return LayerSegments(self.name, tuple(base + off for off, _ in runs),
                             (block_stride,) * len(runs), tuple(n for _, n in runs))


def _runs(view: torch.Tensor, base: int) -> list[tuple[int, int]] | None:
    """(byte offset from `base`, bytes) of the contiguous runs of `view`, in
    its element order; None if there are more than MAX_SEGMENTS."""
    elt = view.element_size()
    dims = [(n, s) for n, s in zip(view.shape, view.stride()) if n != 1]
    run = 1  # elements: the trailing dims that are one contiguous run
    while dims and dims[-1][1] == run:
        run *= dims.pop()[0]
    if math.prod(n for n, _ in dims) > MAX_SEGMENTS:
        return None
    start = view.data_ptr() - base
    runs: list[list[int]] = []
    for idx in itertools.product(*(range(n) for n, _ in dims)):
        off = start + sum(i * s for i, (_, s) in zip(idx, dims)) * elt
        if runs and runs[-1][0] + runs[-1][1] == off:
            runs[-1][1] += run * elt  # physically adjacent: one segment
        else:
            runs.append([off, run * elt])
    return [(off, n) for off, n in runs]


def describe_layer(name: str, t: torch.Tensor, num_blocks: int, num_heads: int) -> LayerKV:
    if t.device.type != "cpu":
        raise UnsupportedKVLayout(
            f"kvtier: layer {name}: KV cache on {t.device}; kvtier copies KV by host "
            "address, so only host-resident (CPU) KV caches are supported"
        )
    shape = tuple(t.shape)
    # [B, H, N, C]: vLLM's per-layer view (B may count kernel blocks).
    if t.dim() == 4 and shape[0] % num_blocks == 0 and shape[1] == num_heads:
        return LayerKV(name, t, num_blocks, num_heads, kv_first=False)
    # [2, B, H, N, C]: K and V halves.
    if t.dim() == 5 and shape[:3] == (2, num_blocks, num_heads):
        return LayerKV(name, t, num_blocks, num_heads, kv_first=True)
    raise UnsupportedKVLayout(
        f"kvtier: layer {name}: unsupported KV cache layout shape={shape} "
        f"strides={tuple(t.stride())} dtype={t.dtype} for {num_blocks} blocks and "
        f"{num_heads} KV heads on this rank; kvtier needs a head axis to store heads "
        "apart: [num_blocks, H, N, C] (vLLM's per-layer view, e.g. the CPU backend's "
        "LBHNC layout) or K/V-first [2, num_blocks, H, N, C]"
    )


def describe_kv_caches(kv_caches: dict[str, torch.Tensor], layer_order: list[str],
                       num_blocks: int, num_heads: int) -> list[LayerKV]:
    """Every layer that owns KV memory, in model layer order.

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
        layers.append(describe_layer(name, t, num_blocks, num_heads))
    missing = [n for n in kv_caches if n not in layer_order]
    if missing:
        raise UnsupportedKVLayout(
            f"kvtier: KV caches of layers {missing[:4]} are outside the (single) full-attention "
            "KV cache group; hybrid models (sliding window, Mamba) are not supported"
        )
    if not layers:
        raise UnsupportedKVLayout("kvtier: no KV cache tensors registered")
    return layers
