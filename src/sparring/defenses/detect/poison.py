"""Scans of a training set for poisoned examples, and a shift test for new training data.

* :class:`SpectralSignatures` (Tran, Li, Madry 2018, "Spectral Signatures in Backdoor Attacks"): per class, the
  outlier score of an example is its squared projection on the top singular vector of the centred representations.
* :class:`ActivationClustering` (Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy, Srivastava 2018,
  "Detecting Backdoor Attacks on Deep Neural Networks by Activation Clustering"): per class, ICA to ~10 dimensions,
  2-means, and a class is poisoned when one cluster is small and well separated (silhouette).
* :func:`shift_test`: is a new training batch drawn like a trusted reference? Kernel MMD with a permutation p-value
  (Gretton, Borgwardt, Rasch, Schölkopf, Smola 2012) or a classifier two-sample test (Lopez-Paz, Oquab 2017).

Scans read representations of a model trained on the (possibly poisoned) data: :func:`representations` takes the
input of the model's last linear layer (the last hidden layer, Chen et al.'s choice) by default, and the flattened
deepest convolutional map with ``layer="last-conv"``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from sparring.data.datasets import Dataset
from sparring.errors import InputSpecError, ParameterError
from sparring.targets.torch import TorchTarget

__all__ = ["ActivationClustering", "DataScanResult", "ShiftResult", "SpectralSignatures", "representations",
           "separation", "shift_test"]


def representations(target: TorchTarget, x: Any,
                    layer: nn.Module | Literal["last-hidden", "last-conv"] | None = None) -> torch.Tensor:
    """Flattened inputs of a layer of ``target``'s model for every example, ``(N, d)``.

    Args:
        target: the model trained on the (possibly poisoned) data.
        x: the training inputs.
        layer: whose input to read:

            * ``None`` or ``"last-hidden"`` (default): the input of the model's final ``nn.Linear`` (the last one
              registered), i.e. the last hidden layer's activations. This is the layer Chen et al. (2018) cluster
              for activation clustering.
            * ``"last-conv"``: for a network with convolutions, the input of the first ``nn.Linear`` after the last
              convolution, i.e. the flattened deepest convolutional feature map (where a patch trigger's features
              and the source image's both survive); the last hidden layer for a network without convolutions. On
              the small digits CNNs measured in docs/poisoning.md both scans separate the poison better here.
            * a module of the model: its input.
    """
    if not isinstance(target, TorchTarget):
        raise ParameterError(f"representations need a TorchTarget (its layers); got {type(target).__name__}.")
    if layer is None or isinstance(layer, str):
        layer = _named_layer(target.model, layer or "last-hidden")
    elif not isinstance(layer, nn.Module) or not any(m is layer for m in target.model.modules()):
        raise ParameterError(f"layer must be 'last-hidden', 'last-conv' or a module of the target's model; got "
                             f"{type(layer).__name__}.")
    xt, _ = target.spec.validate(x)
    seen: list[torch.Tensor] = []

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        seen.append(inputs[0].detach().reshape(inputs[0].shape[0], -1))

    handle = layer.register_forward_pre_hook(hook)
    try:
        target.query_labels(xt)
    finally:
        handle.remove()
    if not seen:
        raise ParameterError(f"layer {type(layer).__name__} was not called in the model's forward pass; pass a "
                             "module that the forward pass uses.")
    return torch.cat(seen)


def _named_layer(model: nn.Module, which: str) -> nn.Module:
    if which not in ("last-hidden", "last-conv"):
        raise ParameterError(f"layer must be 'last-hidden', 'last-conv' or a module of the model; got {which!r}.")
    mods = list(model.modules())
    linears = [i for i, m in enumerate(mods) if isinstance(m, nn.Linear)]
    if not linears:
        raise ParameterError("the model has no nn.Linear layer; pass layer= (the module whose input to read).")
    convs = [i for i, m in enumerate(mods) if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)]
    after = [i for i in linears if convs and i > convs[-1]]
    return mods[after[0] if which == "last-conv" and after else linears[-1]]


@dataclass
class DataScanResult:
    """What a training-set scan found.

    Attributes:
        method: the scan's name.
        scores: per-example suspicion score (higher is more suspicious), float tensor ``(N,)``.
        suspicious: sorted indices of the examples flagged for removal.
        classes: one verdict per class: ``{"class", "n", "flagged", "statistic", "removed"}`` (+ method extras).
        params: the scan's parameters.
    """

    method: str
    scores: torch.Tensor
    suspicious: torch.Tensor
    classes: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def keep(self) -> torch.Tensor:
        """Boolean mask of the examples kept."""
        m = torch.ones(self.scores.numel(), dtype=torch.bool)
        m[self.suspicious] = False
        return m

    @property
    def flagged_classes(self) -> list[int]:
        return [c["class"] for c in self.classes if c["flagged"]]

    def cleaned(self, x: Any, y: Any) -> tuple[Any, Any]:
        """``(x, y)`` without the suspicious examples (same kinds as given)."""
        keep = self.keep
        k: Any = keep.numpy() if isinstance(x, np.ndarray) else keep.to(torch.as_tensor(x).device)
        return x[k], y[k]

    def dataset(self, ds: Dataset) -> Dataset:
        """``ds`` with the suspicious training examples removed."""
        x, y = self.cleaned(ds.x_train, ds.y_train)
        return replace(ds, name=f"{ds.name}-cleaned", x_train=x, y_train=y)

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params, "n": int(self.scores.numel()),
                "n_suspicious": int(self.suspicious.numel()), "flagged_classes": self.flagged_classes,
                "classes": self.classes}


def _check_xy(feats: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    f = torch.as_tensor(feats).detach().float()
    yt = torch.as_tensor(y).detach().long().cpu()
    if f.ndim < 2 or f.shape[0] != yt.numel() or yt.ndim != 1:
        raise InputSpecError(
            f"features {tuple(f.shape)} and labels {tuple(yt.shape)} do not match: give (N, d) features (e.g. from "
            "representations()) and N labels."
        )
    return f.reshape(f.shape[0], -1).cpu(), yt


def separation(p: torch.Tensor) -> float:
    """Share of the variance of 1-d values explained by their best split in two groups (1-d 2-means, Otsu 1979).

    About 0.64 (2/π) for one Gaussian bump, near 1 for two well-separated groups: a poisoned class's projections
    on its top singular vector split into the clean and the poisoned examples.
    """
    v = p.double().sort().values
    n = v.numel()
    if n < 3:
        return 0.0
    total = ((v - v.mean()) ** 2).sum()
    if float(total) == 0.0:
        return 0.0
    k = torch.arange(1, n, dtype=torch.float64)
    left = torch.cumsum(v, 0)[:-1]
    right = v.sum() - left
    between = left**2 / k + right**2 / (n - k) - v.sum() ** 2 / n  # between-group sum of squares of each split
    return float(between.max() / total)


class SpectralSignatures:
    """Spectral-signature scan (Tran, Li, Madry 2018, Algorithm 1).

    Per class, representations are centred and the outlier score of each example is its squared projection on the
    top right singular vector. Algorithm 1 takes ``ε``, an upper bound on the *number* of poisoned examples, and
    removes the ``1.5 ε`` highest scores of *every* class (any class may hold all of the poison). Here
    ``ε = expected_share · N`` (``N``: the whole training set) and a per-class verdict comes first: a class is
    flagged when its projections split into two groups (:func:`separation` above ``min_separation``).

    * Some class flagged: the budget ``removal_factor · ε`` (or ``n_remove``) is removed from the flagged classes,
      split by class size.
    * No class flagged: the paper's rule, ``removal_factor · ε`` (or ``n_remove``) from every class, at most all
      but one example of a class. On a clean set with small classes this removes much of the data (that is the
      price of the paper's guarantee when the poison may sit in any class; ``classes[i]["removed"]`` says how much).

    Args:
        expected_share: upper bound on the poisoned share of the whole training set (``ε / N``).
        removal_factor: remove this many times the expected number of poisoned examples (1.5 in the paper).
        n_remove: the removal budget as a count (overrides the two above).
        min_separation: separation of a class's top-direction projections above which the class is flagged.
    """

    name = "spectral-signatures"

    def __init__(self, *, expected_share: float = 0.05, removal_factor: float = 1.5, n_remove: int | None = None,
                 min_separation: float = 0.9) -> None:
        self.expected_share = expected_share
        self.removal_factor = removal_factor
        self.n_remove = n_remove
        self.min_separation = min_separation

    def get_params(self) -> dict[str, Any]:
        return dict(vars(self))

    def __call__(self, features: Any, y: Any) -> DataScanResult:
        """Scan representations ``features`` ``(N, d)`` with training labels ``y``."""
        if not 0 < self.expected_share < 1:
            raise ParameterError(f"expected_share must be in (0, 1); got {self.expected_share!r}.")
        if self.removal_factor <= 0:
            raise ParameterError(f"removal_factor must be > 0; got {self.removal_factor!r}.")
        f, yt = _check_xy(features, y)
        n = yt.numel()
        budget = self.n_remove if self.n_remove is not None else round(self.removal_factor * self.expected_share * n)
        if not isinstance(budget, int) or not 0 <= budget < n:
            raise ParameterError(f"n_remove must be an integer in 0..{n - 1}; got {budget!r}.")
        scores = torch.zeros(n)
        classes: list[dict[str, Any]] = []
        for c in torch.unique(yt).tolist():
            idx = torch.nonzero(yt == c).reshape(-1)
            r = f[idx] - f[idx].mean(0)
            _, _, vh = torch.linalg.svd(r, full_matrices=False)
            proj = r @ vh[0]
            scores[idx] = proj**2
            sep = separation(proj)
            classes.append({"class": int(c), "n": int(idx.numel()), "flagged": sep > self.min_separation,
                            "statistic": round(sep, 4)})
        sizes = torch.tensor([c["n"] for c in classes], dtype=torch.float64)
        flags = torch.tensor([c["flagged"] for c in classes], dtype=torch.float64)
        if bool(flags.any()):
            quota = (budget * sizes * flags / (sizes * flags).sum()).round().long()
        else:  # Tran et al.'s rule: the whole budget from every class (the poison may all sit in any one)
            quota = torch.full_like(sizes, float(budget)).long()
        removed = []
        for info, q in zip(classes, quota.tolist(), strict=True):
            idx = torch.nonzero(yt == info["class"]).reshape(-1)
            q = min(q, idx.numel() - 1)
            removed.append(idx[scores[idx].argsort(descending=True)[:q]])
            info["removed"] = q
        sus = torch.cat(removed).sort().values if removed else torch.zeros(0, dtype=torch.long)
        return DataScanResult(self.name, scores, sus, classes, {**self.get_params(), "budget": budget})


class ActivationClustering:
    """Activation clustering (Chen et al. 2018, section 4).

    Per class: reduce the representations to ``n_components`` with ICA (or PCA), split them with 2-means, and flag
    the class when the smaller cluster holds at most ``max_relative_size`` of the class and the clustering is well
    separated (silhouette score at least ``min_silhouette``). The smaller cluster of a flagged class is suspicious.
    Chen et al. cluster the activations of the last hidden layer (:func:`representations`' default); on the small
    digits CNNs of docs/poisoning.md the poison separates there far less than in the last convolutional map
    (``layer="last-conv"``), which the audit and ``sparring scan-data`` use.

    Args:
        n_components: dimensions after reduction (10 in the paper).
        reduce: ``"pca"`` (default: deterministic and ~10× faster here) or ``"ica"`` (the paper's choice).
        max_relative_size: a smaller cluster larger than this is a natural split, not poison (paper: ~0.35).
        min_silhouette: least silhouette score of a poisoned class's 2-means split.
        seed: seed of ICA and k-means.
    """

    name = "activation-clustering"

    def __init__(self, *, n_components: int = 10, reduce: Literal["ica", "pca"] = "pca",
                 max_relative_size: float = 0.35, min_silhouette: float = 0.4, seed: int = 0) -> None:
        self.n_components = n_components
        self.reduce = reduce
        self.max_relative_size = max_relative_size
        self.min_silhouette = min_silhouette
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return dict(vars(self))

    def __call__(self, features: Any, y: Any) -> DataScanResult:
        if self.reduce not in ("ica", "pca"):
            raise ParameterError(f"reduce must be 'ica' or 'pca'; got {self.reduce!r}.")
        if not isinstance(self.n_components, int) or self.n_components < 1:
            raise ParameterError(f"n_components must be a positive integer; got {self.n_components!r}.")
        f, yt = _check_xy(features, y)
        scores = torch.zeros(yt.numel())
        classes, sus = [], []
        for c in torch.unique(yt).tolist():
            idx = torch.nonzero(yt == c).reshape(-1)
            small, rel, sil = self._split(f[idx].numpy().astype(np.float64))
            flagged = rel <= self.max_relative_size and sil >= self.min_silhouette
            scores[idx[small]] = max(sil, 0.0)
            if flagged:
                sus.append(idx[small])
            classes.append({"class": int(c), "n": int(idx.numel()), "flagged": flagged, "statistic": round(sil, 4),
                            "relative_size": round(rel, 4), "removed": int(small.sum()) if flagged else 0})
        s = torch.cat(sus).sort().values if sus else torch.zeros(0, dtype=torch.long)
        return DataScanResult(self.name, scores, s, classes, self.get_params())

    def _split(self, a: np.ndarray) -> tuple[torch.Tensor, float, float]:
        """Mask of the smaller 2-means cluster, its relative size and the silhouette score."""
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA, FastICA
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.metrics import silhouette_score

        k = min(self.n_components, a.shape[1], a.shape[0] - 1)
        if k < 1 or a.shape[0] < 4:
            return torch.zeros(a.shape[0], dtype=torch.bool), 1.0, 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # FastICA on few samples; the split still stands
            red = (FastICA(n_components=k, random_state=self.seed, whiten="unit-variance", max_iter=400)
                   if self.reduce == "ica" else PCA(n_components=k, random_state=self.seed)).fit_transform(a)
        lab = KMeans(n_clusters=2, n_init=10, random_state=self.seed).fit_predict(red)
        if len(set(lab.tolist())) < 2:
            return torch.zeros(a.shape[0], dtype=torch.bool), 1.0, 0.0
        minority = int(np.argmin(np.bincount(lab, minlength=2)))
        small = torch.from_numpy(lab == minority)
        return small, float(small.float().mean()), float(silhouette_score(red, lab))


@dataclass(frozen=True)
class ShiftResult:
    """A two-sample test: ``statistic``, its ``p_value``, and ``shifted`` = p < alpha."""

    method: str
    statistic: float
    p_value: float
    alpha: float
    n_reference: int
    n_batch: int

    @property
    def shifted(self) -> bool:
        return self.p_value < self.alpha


def shift_test(
    reference: Any, batch: Any, *, y_reference: Any = None, y_batch: Any = None,
    method: Literal["mmd", "classifier"] = "mmd", n_permutations: int = 500, alpha: float = 0.05, seed: int = 0,
) -> ShiftResult:
    """Test whether ``batch`` (new training data) is drawn from the distribution of a trusted ``reference``.

    Inputs (or representations) are flattened; with labels, a one-hot label block is appended so a change in
    ``p(y | x)`` (label flipping) counts as a shift too.

    * ``"mmd"``: squared MMD with a Gaussian kernel, bandwidth the median pairwise distance (Gretton et
      al. 2012), self-similarity terms left out; p-value from ``n_permutations`` label permutations,
      ``(1 + #{perm >= obs}) / (1 + P)``.
    * ``"classifier"``: a logistic regression learns to tell the two samples apart on half of the data; its
      held-out accuracy is compared with chance by a one-sided binomial test (Lopez-Paz, Oquab 2017).
    """
    if not 0 < alpha < 1:
        raise ParameterError(f"alpha must be in (0, 1); got {alpha!r}.")
    if (y_reference is None) != (y_batch is None):
        raise ParameterError("give labels for both samples (y_reference and y_batch) or for neither.")
    labels = [torch.as_tensor(v).reshape(-1) for v in (y_reference, y_batch) if v is not None]
    n_classes = 1 + max((int(v.max()) for v in labels if v.numel()), default=0)
    a, b = _joint(reference, y_reference, n_classes), _joint(batch, y_batch, n_classes)
    if a.shape[1] != b.shape[1]:
        raise InputSpecError(f"reference has {a.shape[1]} features per example and batch {b.shape[1]}; they must "
                             "match (same data, same labels given to both).")
    if min(a.shape[0], b.shape[0]) < 2:
        raise InputSpecError("both samples need at least 2 examples.")
    gen = torch.Generator().manual_seed(seed)
    if method == "mmd":
        if not isinstance(n_permutations, int) or n_permutations < 1:
            raise ParameterError(f"n_permutations must be a positive integer; got {n_permutations!r}.")
        stat, p = _mmd_permutation(a, b, n_permutations, gen)
    elif method == "classifier":
        stat, p = _c2st(a, b, gen, seed)
    else:
        raise ParameterError(f"method must be 'mmd' or 'classifier'; got {method!r}.")
    return ShiftResult(method, stat, p, alpha, a.shape[0], b.shape[0])


def _joint(x: Any, y: Any, n_classes: int) -> torch.Tensor:
    f = torch.as_tensor(x).detach().double().cpu()
    f = f.reshape(f.shape[0], -1)
    if y is None:
        return f
    yt = torch.as_tensor(y).long().reshape(-1).cpu()
    if yt.numel() != f.shape[0]:
        raise InputSpecError(f"got {yt.numel()} labels for {f.shape[0]} examples; give one label per example.")
    if yt.numel() and int(yt.min()) < 0:
        raise InputSpecError(f"labels must be class indices >= 0; got {int(yt.min())}.")
    onehot = torch.zeros(yt.numel(), n_classes, dtype=torch.float64)
    onehot[torch.arange(yt.numel()), yt] = 1.0
    sub = f[: min(f.shape[0], 500)]
    d = torch.cdist(sub, sub)
    # a label change moves an example by the median distance between examples: as much as a different input
    scale = float(d[d > 0].median()) / math.sqrt(2) if bool((d > 0).any()) else 1.0
    return torch.cat([f, onehot * scale], 1)


def _mmd_permutation(a: torch.Tensor, b: torch.Tensor, n_perm: int, gen: torch.Generator) -> tuple[float, float]:
    z = torch.cat([a, b])
    d2 = torch.cdist(z, z).pow(2)
    bw = d2[d2 > 0].median() if bool((d2 > 0).any()) else torch.tensor(1.0, dtype=d2.dtype)
    k = torch.exp(-d2 / bw)
    k.fill_diagonal_(0.0)
    n, m = a.shape[0], b.shape[0]
    base = torch.cat([torch.full((n,), 1.0 / n), torch.full((m,), -1.0 / m)]).double()
    perms = torch.stack([torch.randperm(n + m, generator=gen) for _ in range(n_perm)])
    w = torch.cat([base[None], base[perms]])  # (1 + P, n + m); row 0 is the observed split
    # squared MMD without the self-similarity terms k(z_i, z_i): sum over i != j of w_i w_j k_ij
    stats = ((w @ k) * w).sum(1)
    obs = float(stats[0])
    p = (1 + int((stats[1:] >= stats[0]).sum())) / (1 + n_perm)
    return obs, p


def _c2st(a: torch.Tensor, b: torch.Tensor, gen: torch.Generator, seed: int) -> tuple[float, float]:
    from scipy.stats import binom
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    z = torch.cat([a, b]).numpy()
    lab = np.r_[np.zeros(a.shape[0]), np.ones(b.shape[0])]
    order = torch.randperm(len(lab), generator=gen).numpy()
    half = len(lab) // 2
    tr, te = order[:half], order[half:]
    scaler = StandardScaler().fit(z[tr])
    clf = LogisticRegression(max_iter=2000, random_state=seed).fit(scaler.transform(z[tr]), lab[tr])
    correct = int((clf.predict(scaler.transform(z[te])) == lab[te]).sum())
    acc = correct / len(te)
    p_chance = max(float(lab[te].mean()), 1 - float(lab[te].mean()))  # majority-class rate of the held-out half
    return acc, float(binom.sf(correct - 1, len(te), p_chance)) if not math.isnan(acc) else 1.0
