"""Where a training step and a scoring pass spend their time: torch.profiler, grouped by kind of work.

    python bench/profile_step.py                         # paper config, batch 32, this code and the code before
    python bench/profile_step.py --config fleet --batch 32 --threads 1

For each code (this tree, and with --before the pinned commit of bench/before.py, each in its own
process), one untimed warm-up, then --steps profiled training steps (forward, both minimax losses,
one backward, one Adam step) and as many scoring passes (no_grad forward and the paper score) on
seeded windows of 55 channels. Prints the milliseconds per step by kind of work (matrix products,
element-wise and reductions, copies, the optimizer, the rest) and the ten costliest operators.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIGS = {
    "paper": {"d_model": 512, "n_heads": 8, "e_layers": 3, "d_ff": 512},
    "fleet": {"d_model": 64, "n_heads": 4, "e_layers": 2, "d_ff": 64},
}
KINDS = {  # operator name -> kind of work; the rest is "other"
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::mkldnn_convolution",
                        "aten::convolution_backward", "aten::linear_backward"),
    "copies and layout": ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat", "aten::_to_copy"),
    "optimizer": ("Optimizer.step#Adam.step", "aten::lerp_", "aten::addcdiv_", "aten::sqrt", "aten::_foreach"),
}  # fmt: skip
ELEMENTWISE = ("softmax", "log", "exp", "mul", "add", "sub", "div", "neg", "pow", "sum", "mean", "gelu", "layer_norm",
               "sigmoid", "square", "reciprocal", "where", "fill", "zero")  # fmt: skip

CHILD = """
import json, sys, torch
sys.path.insert(0, {root!r})
from torch.profiler import ProfilerActivity, profile
from model import SCORES, AnomalyTransformer, DetectorConfig, minimax_losses
from model.scores import WindowOutputs
torch.set_num_threads({threads}); torch.manual_seed(0)
try:
    from runtime.allocator import keep_freed_memory
    keep_freed_memory()
except ImportError:
    pass
model = AnomalyTransformer(DetectorConfig(win_size=100, **{config}).model_config(55))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
x = torch.randn({batch}, 100, 55)
def train():
    optimizer.zero_grad(set_to_none=True)
    minimax_losses(x, *model(x), 3.0).total.backward()
    optimizer.step()
@torch.no_grad()
def score():
    SCORES["paper"].compute(WindowOutputs(x, *model(x)), None, 50.0)
found = {{}}
for name, step in (("training step", train), ("scoring pass", score)):
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range({steps}):
            step()
    found[name] = [(e.key, e.self_cpu_time_total / {steps} / 1000) for e in prof.key_averages()]
print(json.dumps(found))
"""


def kind_of(operator: str) -> str:
    for kind, names in KINDS.items():
        if operator in names or (kind == "optimizer" and operator.startswith("aten::_foreach")):
            return kind
    if operator.startswith("aten::") and any(word in operator for word in ELEMENTWISE):
        return "element-wise and reductions"
    return "other"


def profile_tree(root: Path, args: argparse.Namespace) -> dict:
    code = CHILD.format(root=str(root), threads=args.threads, config=CONFIGS[args.config], batch=args.batch,
                        steps=args.steps)  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(label: str, found: dict) -> list[str]:
    lines = []
    for part, operators in found.items():
        total = sum(ms for _, ms in operators)
        by_kind: dict[str, float] = {}
        for name, ms in operators:
            by_kind[kind_of(name)] = by_kind.get(kind_of(name), 0.0) + ms
        lines += [f"\n{label}, {part}: {total:.0f} ms", "", "| kind of work | ms | share |", "|---|---|---|"]
        ranked = sorted(by_kind.items(), key=lambda item: -item[1])
        lines += [f"| {kind} | {ms:.0f} | {ms / total:.0%} |" for kind, ms in ranked]
        top = sorted(operators, key=lambda item: -item[1])[:10]
        lines += ["", "top operators: " + ", ".join(f"{name.removeprefix('aten::')} {ms:.0f}" for name, ms in top)]
    return lines


def main(argv: list[str] | None = None) -> int:
    from bench.before import before_tree

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="paper")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-before", action="store_true", help="profile this code only")
    args = parser.parse_args(argv)
    print(f"{args.config} config, batch {args.batch}, {args.threads} thread(s), {args.steps} profiled steps each; "
          "milliseconds per step (self CPU time)")  # fmt: skip
    with before_tree() as (tree, note):
        if not args.no_before:
            print(note)
            if tree is not None:
                print("\n".join(report("before", profile_tree(tree, args))))
        print("\n".join(report("ours", profile_tree(ROOT, args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
