"""The Anomaly Transformer: embedding, post-norm encoder of anomaly-attention layers, reconstruction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

from model.attention import AnomalyAttention, Associations


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters; the defaults are the original README's CLI defaults."""

    n_channels: int
    win_size: int = 100
    d_model: int = 256
    n_heads: int = 8
    e_layers: int = 3
    d_ff: int = 512
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})


class DataEmbedding(nn.Module):
    """Token embedding (circular conv over channels, kernel 3, no bias) plus a fixed sinusoidal table."""

    def __init__(self, n_channels: int, d_model: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.token = nn.Conv1d(n_channels, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.token.weight, mode="fan_in", nonlinearity="leaky_relu")
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)[:, : d_model // 2]
        self.register_buffer("position_table", table, persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.token(x.transpose(1, 2)).transpose(1, 2)  # (B, L, d_model)
        return self.dropout(tokens + self.position_table[: x.shape[1]])


class EncoderLayer(nn.Module):
    """Post-norm: anomaly-attention, residual, LayerNorm; kernel-1 conv feed-forward, residual, LayerNorm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attention = AnomalyAttention(config.d_model, config.n_heads, config.win_size, config.dropout)
        self.feed_forward = nn.Sequential(
            nn.Conv1d(config.d_model, config.d_ff, kernel_size=1),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Conv1d(config.d_ff, config.d_model, kernel_size=1),
            nn.Dropout(config.dropout),
        )
        self.norm_attention = nn.LayerNorm(config.d_model)
        self.norm_feed_forward = nn.LayerNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, associations: bool = True) -> tuple[torch.Tensor, Associations | None]:
        attended, found = self.attention(x, associations)
        x = self.norm_attention(x + self.dropout(attended))
        expand, activation, dropout, contract, last_dropout = self.feed_forward
        # The kernel-1 convolutions are position-wise linear maps: applied as such to (B, L, d), with no
        # transposes and a plain matrix product instead of a convolution kernel (the weights are the same).
        y = dropout(activation(F.linear(x, expand.weight.squeeze(-1), expand.bias)))
        y = last_dropout(F.linear(y, contract.weight.squeeze(-1), contract.bias))
        return self.norm_feed_forward(x + y), found


class AnomalyTransformer(nn.Module):
    """Reconstructs a window (B, L, C) and returns every layer's associations."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.d_model % config.n_heads:
            raise ValueError(f"d_model {config.d_model} is not divisible by n_heads {config.n_heads}")
        self.config = config
        self.embedding = DataEmbedding(config.n_channels, config.d_model, config.win_size, config.dropout)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.e_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.projection = nn.Linear(config.d_model, config.n_channels)

    def forward(self, x: torch.Tensor, associations: bool = True) -> tuple[torch.Tensor, list[Associations]]:
        """associations=False returns no associations (an empty list) and skips the work that only they need."""
        hidden = self.embedding(x)  # (B, L, d_model)
        per_layer = []
        for layer in self.layers:
            hidden, found = layer(hidden, associations)
            if found is not None:
                per_layer.append(found)
        reconstruction = self.projection(self.norm(hidden))  # (B, L, C)
        return reconstruction, per_layer
