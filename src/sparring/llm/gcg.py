"""White-box GCG: an adversarial suffix for the user turn, found by gradients over one-hot tokens.

Zou, Wang, Carlini, Nasr, Kolter and Fredrikson 2023, "Universal and Transferable Adversarial Attacks on Aligned
Language Models", Algorithm 1 (Greedy Coordinate Gradient). The suffix ``x`` (``n_tokens`` tokens) is appended to
the last user message; the loss is the cross-entropy of a target reply start ``y`` ("The secret password is",
"Sure, here is") given the whole chat prompt. Each step:

1. one forward/backward pass gives the gradient of the loss with respect to the one-hot encoding of every suffix
   token, ``∇_{e_{x_i}} L`` (the embeddings are ``one_hot @ W_E``, the model's weights are frozen);
2. the ``top_k`` tokens with the most negative gradient per position are the candidate substitutions;
3. ``batch_size`` candidates, each the current suffix with one random position swapped for a random one of its
   top-k tokens, are evaluated by their exact loss (forward passes only, on the model's device);
4. the best candidate becomes the current suffix (as in the paper, even when it is worse; the best suffix seen is
   kept separately, so ``losses`` — best-so-far — never increases).

Every ``check_every`` steps (and at the end) the chat target answers the prompt with the best suffix (greedy,
through :meth:`~sparring.llm.chat.ChatTarget.chat`, so it is counted like any query); the attack stops at the first
reply that ``success`` accepts (default: the reply contains the target string). Candidates whose text does not
re-tokenise to the same ids are dropped, so the returned suffix *text* is the attack that was optimised.

Threat model: white-box (gradients of a local model), one user turn, targeted at a reply prefix. Only a
:class:`~sparring.llm.chat.LocalChatModel` gives gradients; an API target raises
:class:`~sparring.errors.AccessError` (optimise on a local model and send the suffix to the API: the paper's
transfer setting). Forward-pass tokens are charged to the target's token counter: a ``token_budget`` bounds the
compute; a budget that cannot pay for one step raises :class:`~sparring.errors.QueryBudgetExceeded`, one that runs
out later stops the attack with ``stopped="budget"`` and the best suffix so far.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sparring.errors import AccessError, ParameterError, QueryBudgetExceeded
from sparring.llm.chat import ChatTarget, LocalChatModel, Message, check_messages

__all__ = ["GCG", "GCGResult"]

_SENTINEL = "\x00GCG-SUFFIX\x00"


@dataclass(frozen=True)
class GCGResult:
    """What GCG found. ``losses[0]`` is the initial suffix's loss, ``losses[t]`` the best loss after step ``t``
    (non-increasing); ``step_losses[t-1]`` the loss of the candidate chosen at step ``t``. ``messages`` is the
    conversation with the suffix, ready for ``target.chat([messages])``; ``reply`` the last greedy reply checked and
    ``success`` whether ``success`` accepted it (``success_step``: the step of that check). ``stopped`` is
    ``"success"``, ``"steps"`` or ``"budget"``."""

    suffix: str
    suffix_ids: tuple[int, ...]
    target: str
    messages: tuple[Message, ...]
    loss: float
    losses: tuple[float, ...]
    step_losses: tuple[float, ...]
    success: bool
    reply: str
    success_step: int | None
    steps: int
    stopped: str
    gradient_calls: int
    candidates_evaluated: int
    forward_tokens: int
    queries: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"suffix": self.suffix, "suffix_ids": list(self.suffix_ids), "target": self.target,
                "messages": [dict(m) for m in self.messages], "loss": self.loss, "losses": list(self.losses),
                "step_losses": list(self.step_losses), "success": self.success, "reply": self.reply,
                "success_step": self.success_step, "steps": self.steps, "stopped": self.stopped,
                "gradient_calls": self.gradient_calls, "candidates_evaluated": self.candidates_evaluated,
                "forward_tokens": self.forward_tokens, "queries": self.queries, "seconds": self.seconds,
                "params": dict(self.params)}


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"GCG {name} must be a positive integer; got {value!r}.")
    return value


class GCG:
    """Greedy Coordinate Gradient suffix attack (Zou et al. 2023, Algorithm 1); see the module docstring.

    Args:
        target: the reply start to make likely, e.g. ``"The secret password is"`` or ``"Sure, here is"``.
        steps: most optimisation steps (the paper: 500; a 135M model on CPU: tens).
        n_tokens: suffix length in tokens (the paper: 20).
        top_k: candidate tokens per position (the paper: 256).
        batch_size: candidates evaluated per step (the paper: 512).
        eval_batch: candidates per forward pass (memory bound).
        check_every: greedy-generate and test ``success`` every this many steps (0: only at the end).
        init: the initial suffix text (the paper: ``"! ! ! ..."``); re-tokenised and cut or padded to ``n_tokens``.
        ascii_only: restrict substitutions to printable ASCII tokens (as the reference code does).
        seed: seeds the candidate sampling (a private ``torch.Generator``; the global RNG is untouched).
    """

    def __init__(self, *, target: str = "The secret password is", steps: int = 20, n_tokens: int = 20,
                 top_k: int = 64, batch_size: int = 32, eval_batch: int = 32, check_every: int = 5,
                 init: str = "! ! ! ! ! ! ! ! ! ! ! ! ! ! ! ! ! ! ! !", ascii_only: bool = True,
                 seed: int = 0) -> None:
        self.target, self.steps, self.n_tokens, self.top_k = target, steps, n_tokens, top_k
        self.batch_size, self.eval_batch, self.check_every, self.init = batch_size, eval_batch, check_every, init
        self.ascii_only, self.seed = ascii_only, seed

    def get_params(self) -> dict[str, Any]:
        return {"target": self.target, "steps": self.steps, "n_tokens": self.n_tokens, "top_k": self.top_k,
                "batch_size": self.batch_size, "eval_batch": self.eval_batch, "check_every": self.check_every,
                "init": self.init, "ascii_only": self.ascii_only, "seed": self.seed}

    def _validate(self) -> None:
        if not isinstance(self.target, str) or not self.target.strip():
            raise ParameterError(f"GCG target must be a non-empty string (a reply start); got {self.target!r}.")
        for name in ("steps", "n_tokens", "top_k", "batch_size", "eval_batch"):
            _positive_int(name, getattr(self, name))
        if isinstance(self.check_every, bool) or not isinstance(self.check_every, int) or self.check_every < 0:
            raise ParameterError(f"GCG check_every must be an integer >= 0; got {self.check_every!r}.")
        if not isinstance(self.init, str) or not self.init.strip():
            raise ParameterError(f"GCG init must be a non-empty string; got {self.init!r}.")

    def __call__(self, chat: ChatTarget, messages: Sequence[Message],
                 success: Callable[[str], Any] | None = None) -> GCGResult:
        """Optimise a suffix for the last user message of ``messages`` against ``chat``.

        ``success`` takes a reply and returns a bool or a detector verdict (anything with ``.hit``, e.g.
        ``SecretLeakDetector(secret)``); the default is "the reply contains ``target``" (case-insensitive).

        Raises:
            AccessError: ``chat`` is not a local model (no gradients).
            ParameterError: invalid parameters, or ``messages`` does not end with a user turn.
            QueryBudgetExceeded: the target's token budget cannot pay for one step.
        """
        self._validate()
        if not isinstance(chat, LocalChatModel):
            raise AccessError(
                f"GCG needs gradients of the model's loss over its input tokens (white-box), but "
                f"{type(chat).__name__} gives only replies. Optimise the suffix on a local model "
                "(LocalChatModel.from_files(...)) and send result.messages to this target (transfer, Zou et al. "
                "2023 Sec. 4).")
        conv = check_messages(messages)
        if conv[-1]["role"] != "user":
            raise ParameterError("GCG appends its suffix to the last message, which must be a user turn; got "
                                 f"role {conv[-1]['role']!r}.")
        judge = success if success is not None else (lambda r: self.target.casefold() in r.casefold())
        return _Run(self, chat, conv, judge).run()


class _Run:
    """One optimisation: the tokenised prompt pieces, the frozen model and the loop."""

    def __init__(self, cfg: GCG, chat: LocalChatModel, conv: list[Message], judge: Callable[[str], Any]) -> None:
        import torch

        self.cfg, self.chat, self.conv, self.judge = cfg, chat, conv, judge
        self.lm, self.tok = chat.model, chat.tokenizer
        self.device = next(self.lm.parameters()).device
        self.embed = self.lm.get_input_embeddings()
        self.user = conv[-1]["content"]
        text = self.tok.apply_chat_template([*conv[:-1], {"role": "user", "content": self.user + _SENTINEL}],
                                            add_generation_prompt=True, tokenize=False)
        self.before, _, self.after = str(text).partition(_SENTINEL)
        self.before_ids = self._encode(self.before)
        self.after_ids = self._encode(self.after)
        self.target_ids = self._encode(cfg.target)
        init = self._encode(cfg.init if cfg.init.startswith(" ") else " " + cfg.init)
        while len(init) < cfg.n_tokens:
            init = init + init
        suffix = init[:cfg.n_tokens]
        if not self._round_trips(suffix):
            raise ParameterError(f"the initial suffix {cfg.init!r} does not re-tokenise to the same {cfg.n_tokens} "
                                 "tokens in this chat template; use space-separated single-token words (the "
                                 "default '! ! !').")

        def t(ids: list[int]) -> Any:
            return torch.tensor(ids, dtype=torch.long, device=self.device)

        self.suffix = t(suffix)
        self.tail = t(self.after_ids + self.target_ids)  # after the suffix: end of turn, reply header, target
        self.target = t(self.target_ids)
        self.allowed = self._allowed_mask()
        self.gen = torch.Generator(device=self.device).manual_seed(int(cfg.seed))
        self.candidates = self.gradient_calls = self.queries = 0

    def _encode(self, text: str) -> list[int]:
        return [int(i) for i in self.tok(text, add_special_tokens=False)["input_ids"]]

    def _text(self, ids: Sequence[int]) -> str:
        return str(self.tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False))

    def _round_trips(self, ids: Sequence[int]) -> bool:
        full = self._encode(self.before + self._text(ids) + self.after)
        return full == self.before_ids + list(ids) + self.after_ids

    def _allowed_mask(self) -> Any:
        import torch

        vocab = int(self.embed.weight.shape[0])
        special = set(getattr(self.tok, "all_special_ids", []) or [])
        n = min(vocab, len(self.tok))
        texts = self.tok.batch_decode([[i] for i in range(n)], skip_special_tokens=False,
                                      clean_up_tokenization_spaces=False)
        flags = [i not in special and bool(s) and (s.isascii() and s.isprintable() if self.cfg.ascii_only
                                                   else s.strip() != "") for i, s in enumerate(texts)]
        return torch.tensor(flags + [False] * (vocab - n), dtype=torch.bool, device=self.device)

    def _charge(self, n: int) -> None:
        budget = self.chat.tokens
        if budget.budget is not None and budget.used + n > budget.budget:
            raise QueryBudgetExceeded(
                f"GCG token budget exhausted: {budget.used} of {budget.budget} tokens used, the next step needs {n}. "
                "Raise token_budget=..., or lower batch_size or n_tokens.", used=budget.used, budget=budget.budget,
                requested=n)
        budget.charge(n)

    def _prefix_cache(self) -> Any:
        import torch

        with torch.no_grad():
            out = self.lm(input_ids=torch.tensor([self.before_ids], device=self.device), use_cache=True)
        return out.past_key_values

    def _losses(self, cache: Any, suffixes: Any) -> Any:
        """Exact loss of each candidate suffix (rows of ``suffixes``), no gradients, in chunks."""
        import torch
        import torch.nn.functional as F

        out = []
        n_t = len(self.target_ids)
        with torch.no_grad():
            for chunk in torch.split(suffixes, self.cfg.eval_batch):
                b = chunk.shape[0]
                ids = torch.cat([chunk, self.tail.expand(b, -1)], dim=1)
                past = copy.deepcopy(cache)
                past.batch_repeat_interleave(b)
                logits = self.lm(input_ids=ids, past_key_values=past, use_cache=True,
                                 logits_to_keep=n_t + 1).logits[:, :-1]
                out.append(F.cross_entropy(logits.transpose(1, 2), self.target.expand(b, -1),
                                           reduction="none").mean(dim=1))
        return torch.cat(out)

    def _gradient(self, cache: Any) -> Any:
        """∇ of the loss w.r.t. the one-hot suffix (n_tokens x vocab), disallowed tokens set to +inf."""
        import torch
        import torch.nn.functional as F

        w = self.embed.weight
        one_hot = F.one_hot(self.suffix, w.shape[0]).to(w.dtype).requires_grad_(True)
        embeds = torch.cat([one_hot @ w, self.embed(self.tail)], dim=0).unsqueeze(0)
        n_t = len(self.target_ids)
        logits = self.lm(inputs_embeds=embeds, past_key_values=copy.deepcopy(cache), use_cache=True,
                         logits_to_keep=n_t + 1).logits[0, :-1]
        loss = F.cross_entropy(logits, self.target)
        (grad,) = torch.autograd.grad(loss, one_hot)
        return grad.masked_fill(~self.allowed, float("inf"))

    def _sample(self, grad: Any) -> Any:
        """``batch_size`` copies of the suffix, each with one random position set to one of its top-k tokens."""
        import torch

        cfg = self.cfg
        top = (-grad).topk(min(cfg.top_k, int(self.allowed.sum())), dim=1).indices
        pos = torch.randint(0, self.suffix.shape[0], (cfg.batch_size,), generator=self.gen, device=self.device)
        pick = torch.randint(0, top.shape[1], (cfg.batch_size,), generator=self.gen, device=self.device)
        cand = self.suffix.unsqueeze(0).repeat(cfg.batch_size, 1)
        cand[torch.arange(cfg.batch_size, device=self.device), pos] = top[pos, pick]
        return cand

    def _filter(self, cand: Any) -> Any:
        """Candidates whose text re-tokenises to themselves (one host copy of the ids per step)."""
        import torch

        rows = cand.tolist()
        keep = [i for i, r in enumerate(rows) if self._round_trips(r)]
        return cand[torch.tensor(keep, dtype=torch.long, device=self.device)] if keep else cand[:0]

    def _messages(self, ids: Sequence[int]) -> tuple[Message, ...]:
        last: Message = {"role": "user", "content": self.user + self._text(ids)}
        return (*self.conv[:-1], last)

    def _check(self, ids: Sequence[int]) -> tuple[bool, str]:
        reply = self.chat.chat([list(self._messages(ids))])[0]
        self.queries += 1
        verdict = self.judge(reply.text)
        return bool(getattr(verdict, "hit", verdict)), reply.text

    def run(self) -> GCGResult:
        start = time.perf_counter()
        frozen = [(p, p.requires_grad) for p in self.lm.parameters()]
        for p, _ in frozen:
            p.requires_grad_(False)
        try:
            return self._loop(start)
        finally:
            for p, flag in frozen:
                p.requires_grad_(flag)

    def _loop(self, start: float) -> GCGResult:
        cfg = self.cfg
        seq = self.suffix.shape[0] + self.tail.shape[0]
        self._charge(len(self.before_ids) + seq)
        cache = self._prefix_cache()
        best_ids = self.suffix.clone()
        best = float(self._losses(cache, best_ids.unsqueeze(0))[0])
        losses, step_losses = [best], []
        ok, reply, ok_step, stopped, step = False, "", None, "steps", 0
        for step in range(1, cfg.steps + 1):
            try:
                self._charge(seq * (1 + cfg.batch_size))
            except QueryBudgetExceeded:
                if step == 1:
                    raise
                stopped, step = "budget", step - 1
                break
            grad = self._gradient(cache)
            self.gradient_calls += 1
            cand = self._filter(self._sample(grad))
            if cand.shape[0]:
                cl = self._losses(cache, cand)
                self.candidates += int(cand.shape[0])
                i = int(cl.argmin())
                self.suffix = cand[i].clone()
                step_losses.append(float(cl[i]))
                if step_losses[-1] < best:
                    best, best_ids = step_losses[-1], self.suffix.clone()
            else:
                step_losses.append(float("nan"))
            losses.append(best)
            if cfg.check_every and step % cfg.check_every == 0 and step < cfg.steps:
                try:
                    ok, reply = self._check(best_ids.tolist())
                except QueryBudgetExceeded:
                    stopped = "budget"
                    break
                if ok:
                    ok_step, stopped = step, "success"
                    break
        if not ok and stopped != "budget":
            try:
                ok, reply = self._check(best_ids.tolist())
                if ok:
                    ok_step, stopped = step, "success"
            except QueryBudgetExceeded:
                stopped = "budget"
        ids = tuple(int(i) for i in best_ids.tolist())
        return GCGResult(self._text(ids), ids, cfg.target, self._messages(ids), best, tuple(losses),
                         tuple(step_losses), ok, reply, ok_step, step, stopped, self.gradient_calls, self.candidates,
                         self._tokens_charged(seq, step), self.queries, time.perf_counter() - start,
                         cfg.get_params())

    def _tokens_charged(self, seq: int, steps: int) -> int:
        return len(self.before_ids) + seq + steps * seq * (1 + self.cfg.batch_size)
