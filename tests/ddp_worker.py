"""Run by tests/test_distributed.py under torchrun: one DDP optimizer step on a fixed global batch."""

import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from model.discrepancy import minimax_losses
from model.transformer import AnomalyTransformer, ModelConfig
from runtime.distributed import init_distributed

CONFIG = ModelConfig(n_channels=4, win_size=12, d_model=16, n_heads=4, e_layers=2, d_ff=32)


def global_batch() -> torch.Tensor:
    return torch.randn(8, 12, 4, generator=torch.Generator().manual_seed(1))


def main(output: str) -> None:
    context = init_distributed("cpu")
    torch.manual_seed(0)
    model = AnomalyTransformer(CONFIG)
    trained = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    local = global_batch()[context.rank :: context.world_size]  # this rank's share, as epoch_batches deals it
    minimax_losses(local, *trained(local), k=3.0).total.backward()
    optimizer.step()
    if context.is_main:
        torch.save(model.state_dict(), output)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
