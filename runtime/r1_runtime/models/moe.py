"""DeepSeek-V3's mixture of experts: the router's grouped top-k choice and the routed
experts, computed expert by expert over the tokens sorted by expert (one pair of matmuls per
expert that any token chose, never a loop over tokens).

Under tensor parallelism each rank owns `1/T` of the routed experts (expert parallelism):
the hidden states are the same on every rank, so each computes its own experts' share for
every token and the block's one all-reduce combines them with the shared expert's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from r1_runtime.models.fp8 import Block, dequantize_blocks, scale_shape


@dataclass(frozen=True)
class Routing:
    top_k: int
    n_group: int
    topk_group: int
    norm_topk_prob: bool
    routed_scaling_factor: float
    scoring_func: str = "sigmoid"


def route(
    logits: torch.Tensor, correction_bias: torch.Tensor | None, routing: Routing
) -> tuple[torch.Tensor, torch.Tensor]:
    """`logits` `[tokens, experts]` (fp32) -> (weights, expert ids), each `[tokens, top_k]`.

    Scores are the logits' sigmoid; the choice reads them plus `correction_bias` (noaux_tc),
    the weights read them without it. Experts come in `n_group` groups: a group's score is
    the sum of its best two, the best `topk_group` groups stay in the running, and the top
    `top_k` experts among them are chosen. Weights are normalised to sum to 1 (when
    `norm_topk_prob`), then scaled by `routed_scaling_factor`."""
    num_tokens = logits.shape[0]
    scores = logits.sigmoid() if routing.scoring_func == "sigmoid" else logits.softmax(dim=-1)
    choice = scores if correction_bias is None else scores + correction_bias
    if routing.n_group > 1:
        grouped = choice.view(num_tokens, routing.n_group, -1)
        group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)
        best = group_scores.topk(routing.topk_group, dim=-1, sorted=False).indices
        keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, best, True)
        choice = grouped.masked_fill(~keep.unsqueeze(-1), float("-inf")).view(num_tokens, -1)
    ids = choice.topk(routing.top_k, dim=-1, sorted=False).indices
    weights = scores.gather(1, ids)
    if routing.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * routing.routed_scaling_factor, ids


class Experts(nn.Module):
    """The routed experts this rank owns, `first_expert` onward, their weights stacked:
    gate and up fused `[experts, 2 * size, hidden]`, down `[experts, hidden, size]`; with
    `fp8_block`, in fp8 with their block scales (`<name>_scale_inv`), each expert's
    dequantized when it runs."""

    def __init__(
        self,
        num_local: int,
        first_expert: int,
        hidden_size: int,
        size: int,
        fp8_block: Block | None = None,
    ) -> None:
        super().__init__()
        self.num_local = num_local
        self.first_expert = first_expert
        self.fp8_block = fp8_block
        self.gate_up_proj = _stacked(num_local, 2 * size, hidden_size, fp8_block)
        self.down_proj = _stacked(num_local, hidden_size, size, fp8_block)
        self.gate_up_proj_scale_inv = _stacked_scales(num_local, 2 * size, hidden_size, fp8_block)
        self.down_proj_scale_inv = _stacked_scales(num_local, hidden_size, size, fp8_block)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """This rank's experts' weighted outputs for `x` `[tokens, hidden]` (zeros for the
        tokens that chose none of them)."""
        out: torch.Tensor = torch.ops.r1.moe_experts(
            x,
            weights,
            ids,
            self.gate_up_proj,
            self.down_proj,
            self.gate_up_proj_scale_inv,
            self.down_proj_scale_inv,
            self.first_expert,
            list(self.fp8_block or ()),
        )
        return out


# NOTE: an opaque op, as attention is: how many tokens each expert gets is known only once
# the router has run (a host sync), which torch.compile cannot trace into one graph.
@torch.library.custom_op("r1::moe_experts", mutates_args=())
def moe_experts(
    x: torch.Tensor,
    weights: torch.Tensor,
    ids: torch.Tensor,
    gate_up: torch.Tensor,
    down: torch.Tensor,
    gate_up_scale: torch.Tensor | None,
    down_scale: torch.Tensor | None,
    first_expert: int,
    fp8_block: list[int],
) -> torch.Tensor:
    """Experts `first_expert...` (stacked in `gate_up` and `down`) applied to the tokens that
    chose them, weighted and summed per token; each expert's weights dequantized first when
    in fp8 (`fp8_block` not empty)."""
    out = torch.zeros_like(x)
    num_local, top_k = len(down), ids.shape[1]
    local = ids.flatten() - first_expert
    bucket = torch.where((local >= 0) & (local < num_local), local, num_local)  # last: others'
    order = bucket.argsort(stable=True)
    ends = torch.bincount(bucket, minlength=num_local + 1).cumsum(0).tolist()  # one sync
    flat_weights = weights.flatten()
    block = (fp8_block[0], fp8_block[1]) if fp8_block else None
    for expert in range(num_local):
        start = ends[expert - 1] if expert else 0
        if start == ends[expert]:
            continue
        picks = order[start : ends[expert]]
        tokens = picks // top_k
        up_weight, down_weight = gate_up[expert], down[expert]
        if block is not None:
            assert gate_up_scale is not None and down_scale is not None
            up_weight = dequantize_blocks(up_weight, gate_up_scale[expert], block, x.dtype)
            down_weight = dequantize_blocks(down_weight, down_scale[expert], block, x.dtype)
        gate, up = F.linear(x[tokens], up_weight).chunk(2, dim=-1)
        hidden = F.linear(F.silu(gate) * up, down_weight)
        weighted = hidden * flat_weights[picks].unsqueeze(1)  # NOTE: in fp32, as transformers
        out.index_add_(0, tokens, weighted.to(x.dtype))
    return out


@moe_experts.register_fake
def _moe_experts_shape(x: torch.Tensor, *args: object) -> torch.Tensor:
    return torch.empty_like(x)


def _stacked(experts: int, rows: int, cols: int, fp8_block: Block | None) -> nn.Parameter:
    dtype = torch.float8_e4m3fn if fp8_block else None
    return nn.Parameter(torch.empty(experts, rows, cols, dtype=dtype), requires_grad=False)


def _stacked_scales(
    experts: int, rows: int, cols: int, fp8_block: Block | None
) -> nn.Parameter | None:
    if fp8_block is None:
        return None
    scales = torch.empty(experts, *scale_shape(rows, cols, fp8_block))
    return nn.Parameter(scales, requires_grad=False)
