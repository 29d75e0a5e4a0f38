"""The smallest training run the tests use: a real model that trains in about a second on a CPU."""

TINY_TRAIN_FLAGS = ["--d-model", "16", "--n-heads", "2", "--e-layers", "1", "--d-ff", "32", "--win-size", "20",
                    "--epochs", "1", "--train-stride", "20", "--no-progress", "--device", "cpu"]  # fmt: skip
