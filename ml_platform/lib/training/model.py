"""The tabular delay network: embeddings for carrier, origin, dest and hour, plus numeric features.

It has two outputs: the standardized arrival delay (regression) and the logit of ``is_delayed``
(classification). With ``separate_heads=False`` (the default) both heads share one trunk; with
``separate_heads=True`` each target gets its own trunk, which makes it two independent models
trained side by side (docs/architecture.md explains the choice).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _trunk(in_features: int, hidden: int, layers: int, dropout: float) -> nn.Sequential:
    blocks: list[nn.Module] = []
    width = in_features
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    return nn.Sequential(*blocks)


class DelayNet(nn.Module):
    """Embeddings + MLP trunk(s) + two heads."""

    def __init__(
        self,
        cardinalities: Sequence[int],
        n_numeric: int,
        *,
        embedding_dim: int = 8,
        hidden: int = 64,
        layers: int = 2,
        dropout: float = 0.1,
        separate_heads: bool = False,
    ) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(n, min(embedding_dim, n)) for n in cardinalities)
        width = sum(min(embedding_dim, n) for n in cardinalities) + n_numeric
        self.separate_heads = separate_heads
        self.trunk = _trunk(width, hidden, layers, dropout)
        self.class_trunk = _trunk(width, hidden, layers, dropout) if separate_heads else None
        self.delay_head = nn.Linear(hidden, 1)
        self.class_head = nn.Linear(hidden, 1)

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(standardized delay, is_delayed logit)``, each of shape ``[n]``."""
        parts = [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        x = torch.cat([*parts, numeric], dim=1)
        shared = self.trunk(x)
        class_hidden = self.class_trunk(x) if self.class_trunk is not None else shared
        return self.delay_head(shared).squeeze(1), self.class_head(class_hidden).squeeze(1)
