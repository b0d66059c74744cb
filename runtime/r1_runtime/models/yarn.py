"""YaRN rotary scaling (DeepSeek-V3's `rope_type: yarn`), as transformers computes it: the
inverse frequencies blended between interpolated and extrapolated ones over a ramp of
dimensions, a factor on cos and sin, and one on the softmax scale (`mscale_all_dim`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Yarn:
    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None  # on cos and sin; None: from factor and mscales
    truncate: bool = True

    def cos_sin_factor(self) -> float:
        if self.attention_factor is not None:
            return self.attention_factor
        if self.mscale and self.mscale_all_dim:
            return _mscale(self.factor, self.mscale) / _mscale(self.factor, self.mscale_all_dim)
        return _mscale(self.factor)

    def softmax_factor(self) -> float:
        """What the attention's `1/sqrt(head_dim)` is multiplied by (`mscale_all_dim`)."""
        if not self.mscale_all_dim:
            return 1.0
        return _mscale(self.factor, self.mscale_all_dim) ** 2

    def inverse_frequencies(self, dim: int, theta: float) -> torch.Tensor:
        exponents = torch.arange(0, dim, 2, dtype=torch.float32) / dim
        pos_freqs = theta**exponents
        extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (self.factor * pos_freqs)
        low, high = self._correction_range(dim, theta)
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        keep = 1 - ramp  # the share of the extrapolated (unscaled) frequency
        return interpolation * (1 - keep) + extrapolation * keep

    def _correction_range(self, dim: int, theta: float) -> tuple[float, float]:
        def correction_dim(rotations: float) -> float:
            length = self.original_max_position_embeddings
            return dim * math.log(length / (rotations * 2 * math.pi)) / (2 * math.log(theta))

        low, high = correction_dim(self.beta_fast), correction_dim(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001  # NOTE: as transformers, against a division by zero
        return low, high


def _mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0
