"""Chat targets: the LLM under test, one conversation in, one reply out, with the project's query counter.

Every chat target counts requests (one conversation = one query) with a
:class:`~sparring.targets.base.QueryCounter` and, optionally, tokens (prompt + completion) with a second one; a
batch that would cross either budget is refused whole, before anything is sent, with
:class:`~sparring.errors.QueryBudgetExceeded`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from sparring.errors import ParameterError, QueryBudgetExceeded
from sparring.targets.base import QueryCounter

__all__ = ["ChatReply", "ChatTarget", "LocalChatModel", "Message", "check_messages"]

Role = Literal["system", "user", "assistant"]


class Message(TypedDict):
    role: Role
    content: str


@dataclass(frozen=True)
class ChatReply:
    """One reply. ``error`` is set (and ``text`` empty) when this one request could not be answered (e.g. its
    context is longer than the model's window); the run records that attempt as ``error``, never as a verdict."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    error: str | None = None


def check_messages(conversation: Sequence[Message]) -> list[Message]:
    """Validate one conversation: a non-empty list of ``{"role", "content"}`` with known roles and str content."""
    if not isinstance(conversation, Sequence) or isinstance(conversation, str) or not conversation:
        raise ParameterError(f"a conversation must be a non-empty list of messages; got {conversation!r:.80}.")
    out: list[Message] = []
    for m in conversation:
        if not isinstance(m, dict) or set(m) != {"role", "content"} or m["role"] not in ("system", "user",
                                                                                        "assistant"):
            raise ParameterError(f"each message must be {{'role': 'system'|'user'|'assistant', 'content': str}}; "
                                 f"got {m!r:.80}.")
        if not isinstance(m["content"], str):
            raise ParameterError(f"message content must be a str; got {type(m['content']).__name__}.")
        out.append({"role": m["role"], "content": m["content"]})
    return out


class ChatTarget(ABC):
    """A chat model under test. Subclasses implement :meth:`_chat_batch`; :meth:`chat` validates, batches and
    counts.

    Args:
        request_budget: most conversations the target will answer (``None``: no limit).
        token_budget: most prompt + completion tokens (``None``: no limit). The worst case of a batch (its prompt
            tokens, where known, plus ``max_new_tokens`` per request) must fit before it is sent; what it used is
            charged after.
        batch_size: conversations per model call.
    """

    name: str = "chat"

    def __init__(self, *, request_budget: int | None = None, token_budget: int | None = None,
                 batch_size: int = 8) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ParameterError(f"batch_size must be a positive integer; got {batch_size!r}.")
        self.counter = QueryCounter(request_budget)
        self.tokens = QueryCounter(token_budget)
        self.batch_size = batch_size

    @abstractmethod
    def _chat_batch(self, conversations: list[list[Message]]) -> list[ChatReply]:
        """Replies for one validated batch (same length and order)."""

    def _worst_case_tokens(self, conversations: list[list[Message]]) -> int:
        return 0

    def chat(self, conversations: Sequence[Sequence[Message]]) -> list[ChatReply]:
        """One reply per conversation, in order."""
        convs = [check_messages(c) for c in conversations]
        replies: list[ChatReply] = []
        for i in range(0, len(convs), self.batch_size):
            batch = convs[i:i + self.batch_size]
            t = self.tokens
            need = self._worst_case_tokens(batch) if t.budget is not None else 0
            if t.budget is not None and t.used + need > t.budget:
                raise QueryBudgetExceeded(
                    f"token budget exhausted: {t.used} of {t.budget} tokens used, the next batch may need {need}. "
                    "Raise token_budget=... or lower max_new_tokens.", used=t.used, budget=t.budget, requested=need)
            self.counter.charge(len(batch))
            out = self._chat_batch(batch)
            self.tokens.charge(sum(r.prompt_tokens + r.completion_tokens for r in out))
            replies.extend(out)
        return replies

    def describe(self) -> dict[str, Any]:
        """What the run manifest records about this target (never credentials)."""
        return {"kind": type(self).__name__, "name": self.name, "requests_used": self.counter.used,
                "tokens_used": self.tokens.used}


class LocalChatModel(ChatTarget):
    """A local causal LM through Hugging Face ``transformers`` (files only, see
    :func:`sparring.llm.model_files.load_local_model`), prompted with its own chat template.

    Decoding is greedy (``temperature=0``) or sampled with ``temperature``/``top_p``; sampled batches are seeded
    from ``seed`` and the batch's first prompt, so a batch gives the same replies in any run (RNG state is forked,
    the caller's global RNG is untouched). Batches are left-padded. A conversation whose prompt plus
    ``max_new_tokens`` exceeds the model's window is answered with an ``error`` reply, not sent.

    Build it with :meth:`from_files` (``LocalChatModel.from_files("smollm2-135m")``) or from a loaded
    ``(model, tokenizer)``.
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "local", max_new_tokens: int = 64,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, batch_size: int = 8,
                 request_budget: int | None = None, token_budget: int | None = None,
                 source: dict[str, Any] | None = None) -> None:
        super().__init__(request_budget=request_budget, token_budget=token_budget, batch_size=batch_size)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ParameterError(f"max_new_tokens must be a positive integer; got {max_new_tokens!r}.")
        if not isinstance(temperature, int | float) or temperature < 0:
            raise ParameterError(f"temperature must be >= 0 (0 is greedy); got {temperature!r}.")
        if not isinstance(top_p, int | float) or not 0 < top_p <= 1:
            raise ParameterError(f"top_p must be in (0, 1]; got {top_p!r}.")
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.max_new_tokens, self.temperature, self.top_p, self.seed = max_new_tokens, float(temperature), \
            float(top_p), int(seed)
        self.source = dict(source or {})
        self.window = int(getattr(model.config, "max_position_embeddings", 2048))
        eos = model.generation_config.eos_token_id
        self._eos = sorted({*(eos if isinstance(eos, list) else [eos] if eos is not None else [])})
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self._eos or [0])[0]

    @classmethod
    def from_files(cls, model: str = "smollm2-135m", *, device: str = "cpu", **kwargs: Any) -> LocalChatModel:
        """Load a bundled name, a ``.gguf`` file or a transformers folder (local files only) as a chat target."""
        from sparring.llm.model_files import load_local_model

        lm, tok, files = load_local_model(model, device=device)
        source = {"model": files.name, "weights_sha256": files.sha256, "gguf_file": files.gguf_file}
        return cls(lm, tok, name=files.name, source=source, **kwargs)

    @property
    def chat_template_sha256(self) -> str:
        return hashlib.sha256(str(self.tokenizer.chat_template).encode()).hexdigest()

    def _encode(self, conv: list[Message]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=True,
                                                 return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    def _worst_case_tokens(self, conversations: list[list[Message]]) -> int:
        return sum(len(self._encode(c)) + self.max_new_tokens for c in conversations)

    def _chat_batch(self, conversations: list[list[Message]]) -> list[ChatReply]:
        import torch

        encoded = [self._encode(c) for c in conversations]
        fits = [i for i, e in enumerate(encoded) if len(e) + self.max_new_tokens <= self.window]
        replies: list[ChatReply | None] = [None] * len(encoded)
        for i, e in enumerate(encoded):
            if i not in fits:
                replies[i] = ChatReply("", prompt_tokens=0, finish_reason="error", error=(
                    f"context too long: {len(e)} prompt tokens + max_new_tokens {self.max_new_tokens} exceed the "
                    f"model's window of {self.window}; shorten the documents or the prompt"))
        if fits:
            width = max(len(encoded[i]) for i in fits)
            device = next(self.model.parameters()).device
            ids = torch.full((len(fits), width), self._pad, dtype=torch.long)
            mask = torch.zeros((len(fits), width), dtype=torch.long)
            for row, i in enumerate(fits):
                ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]):] = 1
            kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "pad_token_id": self._pad,
                                  "eos_token_id": self._eos or None}
            if self.temperature > 0:
                kw.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=0)
            else:
                kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(self._batch_seed(encoded[fits[0]]))
                out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kw)
            for row, i in enumerate(fits):
                gen = out[row, width:].tolist()
                stop = next((k for k, t in enumerate(gen) if t in self._eos), None)
                toks = gen if stop is None else gen[:stop]
                text = self.tokenizer.decode(toks, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                replies[i] = ChatReply(text, prompt_tokens=len(encoded[i]), completion_tokens=len(toks) + (
                    stop is not None), finish_reason="length" if stop is None else "stop")
        return [r for r in replies if r is not None]

    def _batch_seed(self, first_prompt: list[int]) -> int:
        digest = hashlib.sha256(f"{self.seed}:{first_prompt}".encode()).digest()
        return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)

    def decoding(self) -> dict[str, Any]:
        """The decoding parameters, as the run manifest records them."""
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "seed": self.seed, "batch_size": self.batch_size, "do_sample": self.temperature > 0}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(self.source, decoding=self.decoding(), chat_template_sha256=self.chat_template_sha256,
                 window=self.window)
        return d
