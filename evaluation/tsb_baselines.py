"""TSB-AD 1.5's PCA and CNN (TheDatumOrg/TSB-AD, TSB_AD/models/{PCA,CNN}.py, run by model_wrapper.py) with
its multivariate leaderboard's hyper-parameters (TSB_AD/HP_list.py, Optimal_Multi_algo_HP_dict), written
against the baseline contract (evaluation/baseline_api.py). bench/reference_baselines_check.py compares
them with TSB-AD's own code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.spatial.distance import cdist
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from torch import nn

from evaluation.baseline_api import Baseline
from evaluation.windowing import centred_window_scores, flat_windows
from runtime.errors import UserInputError


class TsbPca(Baseline):
    """PyOD's PCA detector on windows, as TSB-AD 1.5 runs it.

    Every window of `window` steps (run_PCA's default slidingWindow: the leaderboard passes none) is
    flattened channel by channel; each column is z-scored with the fitted data's statistics
    (StandardScaler) and the columns that are then all zero dropped; a scikit-learn PCA keeps
    `n_components` of the variance. A window scores sum_j ||x - v_j|| / r_j over the kept components
    v_j and their explained-variance ratios r_j (PyOD's weighted distance to each eigenvector, not to
    the subspace); a point takes the score of the window centred on it. TSB-AD scores only the data it
    was fitted on; scoring other data here drops the same columns, which TSB-AD's decision_function
    forgets to do.
    """

    def __init__(self, window: int = 100, n_components: float = 0.25) -> None:  # 'PCA': {'n_components': 0.25}
        self.window, self.n_components = window, n_components

    def _fit(self, train: np.ndarray) -> np.ndarray:
        rows = flat_windows(train, self.window)  # (M, C * window)
        self.scaler_ = StandardScaler().fit(rows)
        standard = self.scaler_.transform(rows)
        self.kept_ = np.any(standard != 0, axis=0)
        # svd_solver 'auto' and random_state 0 are TSB-AD's: they decide which SVD scikit-learn runs.
        pca = PCA(n_components=self.n_components, svd_solver="auto", random_state=0).fit(standard[:, self.kept_])
        self.components_, self.weights_ = pca.components_, pca.explained_variance_ratio_
        return self._scores(standard[:, self.kept_])

    def _scores(self, standard: np.ndarray) -> np.ndarray:
        return centred_window_scores(np.sum(cdist(standard, self.components_) / self.weights_, axis=1), self.window)

    def _score(self, series: np.ndarray) -> np.ndarray:
        return self._scores(self.scaler_.transform(flat_windows(series, self.window))[:, self.kept_])


class ForecastingCnn(nn.Module):
    """TSB-AD's CNNModel: two 1-D convolutions (kernel 3, ReLU, max-pool 2), a mean pool and two linear layers
    that forecast the next step of every channel."""

    def __init__(self, n_features: int, num_channel: Sequence[int], dropout: float = 0.25) -> None:
        super().__init__()
        self.conv_layers = nn.Sequential()
        previous = n_features
        # TSB-AD's loop: layer i maps `previous` to num_channel[i + 1], then sets previous = num_channel[i]
        # (equal for the leaderboard's [32, 32, 40]); the same order keeps the same initial weights per seed.
        for index, out_channels in enumerate(num_channel[:-1]):
            self.conv_layers.add_module(f"conv{index}", nn.Conv1d(previous, num_channel[index + 1], 3, 1))
            self.conv_layers.add_module(f"relu{index}", nn.ReLU())
            self.conv_layers.add_module(f"pool{index}", nn.MaxPool1d(kernel_size=2))
            previous = out_channels
        self.pool = nn.AdaptiveAvgPool1d(1)  # TSB-AD concatenates this average with itself ("concat pool")
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(2 * num_channel[-1], num_channel[-1]), nn.ReLU(),
                                nn.Dropout(dropout), nn.Linear(num_channel[-1], n_features))  # fmt: skip

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        batch, length, channels = windows.shape
        # TSB-AD reinterprets the (B, L, C) memory as (B, C, L) with view, not a transpose: kept, so the
        # convolutions see what TSB-AD's see.
        features = self.conv_layers(windows.view(batch, channels, length))
        pooled = self.pool(features)
        return self.fc(torch.cat([pooled, pooled], dim=1))  # (B, C)


class TsbCnn(Baseline):
    """TSB-AD 1.5's CNN: forecast each step from the `window` steps before it; a point's score is the squared
    forecast error averaged over the channels, and the first `window` points take the first forecast's score.

    Trained on the first 80 % of TRAIN (shuffled batches of 128, Adam at lr, learning rate times 0.75 every 5
    epochs, at most epochs - 1 epochs) and stopped once the MSE on the last 20 % has not improved by 1e-4 for
    `patience` epochs, keeping the last weights, as TSB-AD does. The windows take the values as given: TSB-AD's
    ForecastDataset computes a normalisation that its multivariate branch never uses. torch's generator is
    seeded with `seed` for the weights, the batches and dropout, and restored afterwards.
    """

    def __init__(self, window: int = 50, num_channel: Sequence[int] = (32, 32, 40), lr: float = 0.0008,
                 batch_size: int = 128, epochs: int = 50, validation_size: float = 0.2, patience: int = 3,
                 seed: int = 0) -> None:  # fmt: skip  # 'CNN': {'window_size': 50, 'num_channel': [32, 32, 40]}
        self.window, self.num_channel, self.lr, self.batch_size = window, tuple(num_channel), lr, batch_size
        self.epochs, self.validation_size, self.patience, self.seed = epochs, validation_size, patience, seed

    def _windows(self, series: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, window, C) inputs and (M, C) next steps, float32 as TSB-AD's torch.zeros buffers."""
        # A copy: a read-only array (a DataFrame's values) would make torch warn that it cannot write to it.
        values = torch.from_numpy(np.array(series, dtype=np.float32))
        if len(values) <= self.window:
            raise UserInputError(f"the series has {len(values)} time steps; the CNN needs more than {self.window}")
        inputs = values.unfold(0, self.window, 1)[:-1].transpose(1, 2).contiguous()  # (M, window, C)
        return inputs, values[self.window :]

    def _fit(self, train: np.ndarray) -> np.ndarray:
        split = int((1 - self.validation_size) * len(train))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.network_ = ForecastingCnn(train.shape[1], self.num_channel)
            optimiser = torch.optim.Adam(self.network_.parameters(), lr=self.lr)
            schedule = torch.optim.lr_scheduler.StepLR(optimiser, step_size=5, gamma=0.75)
            batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*self._windows(train[:split])),
                                                  batch_size=self.batch_size, shuffle=True)  # fmt: skip
            # TSB-AD's loss over an empty validation set is 0: it never improves, and training stops early.
            validation = self._windows(train[split:]) if len(train) - split > self.window else None
            best, stale = None, 0
            for epoch in range(1, self.epochs + 1):
                self.network_.train()
                for inputs, targets in batches:
                    optimiser.zero_grad()
                    nn.functional.mse_loss(self.network_(inputs), targets).backward()
                    optimiser.step()
                loss = 0.0 if validation is None else self._validation_loss(*validation)
                schedule.step()
                if best is None or -loss >= best + 1e-4:  # EarlyStoppingTorch(patience=3, delta=1e-4)
                    best, stale = -loss, 0
                else:
                    stale += 1
                if stale >= self.patience or epoch == self.epochs - 1:
                    break
        return self.score(train)

    def _validation_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        """TSB-AD's: the mean over batches of 128 of each batch's MSE."""
        self.network_.eval()
        with torch.no_grad():
            losses = [nn.functional.mse_loss(self.network_(inputs[start : start + self.batch_size]),
                                             targets[start : start + self.batch_size]).item()
                      for start in range(0, len(inputs), self.batch_size)]  # fmt: skip
        return sum(losses) / max(len(losses), 1)

    def _score(self, series: np.ndarray) -> np.ndarray:
        inputs, targets = self._windows(series)
        self.network_.eval()
        with torch.no_grad():
            errors = torch.cat([(self.network_(inputs[start : start + self.batch_size])
                                 - targets[start : start + self.batch_size]).pow(2).mean(dim=1)
                                for start in range(0, len(inputs), self.batch_size)])  # fmt: skip
        errors = errors.numpy().astype(np.float64)
        return np.concatenate([np.full(self.window, errors[0]), errors])
