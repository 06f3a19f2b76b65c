"""Display order of a string under the Unicode Bidirectional Algorithm (UAX #9), for the text defences.

A message can store its characters in one order and show them in another: bidi overrides (RLO/LRO … PDF),
embeddings (RLE/LRE … PDF) and isolates (RLI/LRI/FSI … PDI) rearrange what a reader sees. Boucher, Shumailov,
Anderson and Papernot (2022, "Bad Characters", Sec. III-C) use this to write a spam message in an order no
classifier recognises while every screen shows it intact. :func:`display_order` returns what the screen shows, so a
defence can classify that instead.

Implemented: paragraphs (P1), the paragraph level from the first strong character (P2–P3), explicit levels with the
directional status stack, overflow counters and isolates (X1–X8), removal of the explicit controls (X9), weak types
(W1–W7), neutrals (N1–N2), implicit levels (I1–I2), trailing-whitespace reset (L1), reordering (L2) and mirroring
of paired brackets at odd levels (L4, for the pairs in :data:`MIRRORS`). Simplified, with the effect noted: weak and
neutral types are resolved per level run, not per isolating run sequence (X10), so text *around* an isolate can
resolve neutrals differently from a full implementation; bracket pairs (N0) are not matched, which changes the side
a bracket or the text between brackets lands on only in mixed left-to-right/right-to-left text. For Latin text
reordered by overrides — the attack — the result is exact (the tests compare with python-bidi).
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

__all__ = ["BIDI_CONTROLS", "MIRRORS", "display_order", "is_plain_ltr"]

_LRE, _RLE, _PDF, _LRO, _RLO = "\u202a", "\u202b", "\u202c", "\u202d", "\u202e"
_LRI, _RLI, _FSI, _PDI = "\u2066", "\u2067", "\u2068", "\u2069"
BIDI_CONTROLS = frozenset((_LRE, _RLE, _PDF, _LRO, _RLO, _LRI, _RLI, _FSI, _PDI))
MIRRORS = dict(zip("()[]{}<>«»‹›⁅⁆⁽⁾₍₎≤≥", ")(][}{><»«›‹⁆⁅⁾⁽₎₍≥≤", strict=True))
_MAX_DEPTH = 125
_PARAGRAPH = re.compile(r"(\r\n|[\n\r\x1c\x1d\x1e\x85\u2029])")
_ISOLATE_OPEN = ("LRI", "RLI", "FSI")
_NEUTRAL = frozenset(("B", "S", "WS", "ON", "LRI", "RLI", "FSI", "PDI"))
_REMOVED = frozenset(("LRE", "RLE", "LRO", "RLO", "PDF", "BN"))


def display_order(text: str) -> str:
    """``text`` as it is displayed, left to right, one line per paragraph; the explicit bidi controls
    (embeddings, overrides, isolates, PDF) are removed, every other character is kept (in its displayed place).

    Example:
        >>> display_order("call \\u202ewon\\u202c")  # RLO "won" PDF shows "now"
        'call now'
    """
    if is_plain_ltr(text):  # every level is 0
        return text
    parts = _PARAGRAPH.split(text)
    return "".join(p if i % 2 else _paragraph(p) for i, p in enumerate(parts))


def is_plain_ltr(text: str) -> bool:
    """No right-to-left letter, Arabic-Indic digit or explicit bidi control: displayed exactly as stored."""
    return not any(_may_reorder(c) for c in text)


@cache
def _may_reorder(c: str) -> bool:
    return unicodedata.bidirectional(c) in ("R", "AL", "AN", "LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI",
                                           "PDI")


def _types(text: str) -> list[str]:
    return [unicodedata.bidirectional(c) or "L" for c in text]


def _first_strong(types: list[str], start: int = 0, stop_at_pdi: bool = False) -> int | None:
    """P2: 0 for L, 1 for R/AL, None when there is no strong character (skipping isolates' contents)."""
    depth = 0
    for t in types[start:]:
        if t in _ISOLATE_OPEN:
            depth += 1
        elif t == "PDI":
            if depth == 0 and stop_at_pdi:
                return None
            depth = max(0, depth - 1)
        elif depth == 0 and t in ("L", "R", "AL"):
            return 0 if t == "L" else 1
    return None


def _explicit(types: list[str], base: int) -> tuple[list[int], list[str]]:
    """X1–X8: each character's embedding level and its type after overrides."""
    stack: list[tuple[int, str | None, bool]] = [(base, None, False)]
    over_iso = over_emb = valid_iso = 0
    levels, out = [base] * len(types), list(types)
    for i, t in enumerate(types):
        level, override, _ = stack[-1]
        if t in ("RLE", "LRE", "RLO", "LRO"):
            new = (level + 1) | 1 if t[0] == "R" else (level + 2) & ~1
            levels[i] = level
            if new <= _MAX_DEPTH and over_iso == 0 and over_emb == 0:
                stack.append((new, {"RLO": "R", "LRO": "L"}.get(t), False))
            elif over_iso == 0:
                over_emb += 1
        elif t in _ISOLATE_OPEN:
            levels[i] = level
            if override is not None:
                out[i] = override
            rtl = t == "RLI" or (t == "FSI" and _first_strong(types, i + 1, stop_at_pdi=True) == 1)
            new = (level + 1) | 1 if rtl else (level + 2) & ~1
            if new <= _MAX_DEPTH and over_iso == 0 and over_emb == 0:
                valid_iso += 1
                stack.append((new, None, True))
            else:
                over_iso += 1
        elif t == "PDI":
            if over_iso > 0:
                over_iso -= 1
            elif valid_iso > 0:
                over_emb = 0
                while not stack[-1][2]:
                    stack.pop()
                stack.pop()
                valid_iso -= 1
            level, override, _ = stack[-1]
            levels[i] = level
            if override is not None:
                out[i] = override
        elif t == "PDF":
            levels[i] = level
            if over_iso == 0:
                if over_emb > 0:
                    over_emb -= 1
                elif not stack[-1][2] and len(stack) >= 2:
                    stack.pop()
        elif t == "B":
            levels[i] = base
        else:
            levels[i] = level
            if override is not None and t != "BN":
                out[i] = override
    return levels, out


def _resolve_run(types: list[str], sos: str, eos: str) -> list[str]:
    """W1–W7 and N1–N2 on one level run (``sos``/``eos``: "L" or "R")."""
    t = list(types)
    n = len(t)
    for i in range(n):  # W1
        if t[i] == "NSM":
            t[i] = sos if i == 0 else ("ON" if t[i - 1] in ("LRI", "RLI", "FSI", "PDI") else t[i - 1])
    strong = sos
    for i in range(n):  # W2, W3
        if t[i] in ("L", "R", "AL"):
            strong = t[i]
        elif t[i] == "EN" and strong == "AL":
            t[i] = "AN"
    t = ["R" if x == "AL" else x for x in t]
    for i in range(1, n - 1):  # W4
        if t[i] == "ES" and t[i - 1] == t[i + 1] == "EN":
            t[i] = "EN"
        elif t[i] == "CS" and t[i - 1] == t[i + 1] and t[i - 1] in ("EN", "AN"):
            t[i] = t[i - 1]
    for i, j in _spans([x == "ET" for x in t]):  # W5
        if (i > 0 and t[i - 1] == "EN") or (j < n and t[j] == "EN"):
            t[i:j] = ["EN"] * (j - i)
    t = ["ON" if x in ("ES", "ET", "CS") else x for x in t]  # W6
    strong = sos
    for i in range(n):  # W7
        if t[i] in ("L", "R"):
            strong = t[i]
        elif t[i] == "EN" and strong == "L":
            t[i] = "L"
    for i, j in _spans([x in _NEUTRAL for x in t]):  # N1 (N2, for what stays neutral, is the caller's)
        before = sos if i == 0 else ("R" if t[i - 1] in ("R", "EN", "AN") else "L")
        after = eos if j == n else ("R" if t[j] in ("R", "EN", "AN") else "L")
        if before == after:
            t[i:j] = [before] * (j - i)
    return t


def _spans(flags: list[bool]) -> list[tuple[int, int]]:
    """``(start, stop)`` of every maximal run of True in ``flags``."""
    out, start = [], None
    for k, f in enumerate([*flags, False]):
        if f and start is None:
            start = k
        elif not f and start is not None:
            out.append((start, k))
            start = None
    return out


def _sequences(runs: list[list[int]], types: list[str]) -> list[list[int]]:
    """X10 / BD13: level runs chained into isolating run sequences (a run ending in an isolate initiator goes on
    with the run that starts at its matching PDI)."""
    match: dict[int, int] = {}
    opened: list[int] = []
    for run in runs:
        for i in run:
            if types[i] in _ISOLATE_OPEN:
                opened.append(i)
            elif types[i] == "PDI" and opened:
                match[opened.pop()] = i
    starts = {run[0]: run for run in runs}
    matched = set(match.values())
    out: list[list[int]] = []
    for run in runs:
        if run[0] in matched:
            continue
        seq, cur = list(run), run
        while cur[-1] in match and match[cur[-1]] in starts:
            cur = starts[match[cur[-1]]]
            seq += cur
        out.append(seq)
    seen = {i for seq in out for i in seq}
    out += [run for run in runs if run[0] not in seen]  # a PDI run no initiator's run leads to stands alone
    return out


def _paragraph(text: str) -> str:
    if not text:
        return text
    types = _types(text)
    base = _first_strong(types) or 0
    levels, resolved = _explicit(types, base)
    keep = [i for i, t in enumerate(types) if t not in _REMOVED]
    if not keep:
        return "".join(c for c in text if c not in BIDI_CONTROLS)
    # level runs of the characters that survive X9
    runs: list[list[int]] = [[keep[0]]]
    for i in keep[1:]:
        if levels[i] == levels[runs[-1][-1]]:
            runs[-1].append(i)
        else:
            runs.append([i])
    final = dict.fromkeys(keep, 0)
    pos = {i: n for n, i in enumerate(keep)}
    for seq in _sequences(runs, types):
        lv = levels[seq[0]]
        before, after = pos[seq[0]] - 1, pos[seq[-1]] + 1
        prev_lv = levels[keep[before]] if before >= 0 else base
        next_lv = levels[keep[after]] if after < len(keep) and types[seq[-1]] not in _ISOLATE_OPEN else base
        sos = "R" if max(lv, prev_lv) % 2 else "L"
        eos = "R" if max(lv, next_lv) % 2 else "L"
        ts = _resolve_run([resolved[i] for i in seq], sos, eos)
        for i, tt in zip(seq, ts, strict=True):
            if tt in _NEUTRAL:  # N2
                tt = "R" if lv % 2 else "L"
            if lv % 2 == 0:  # I1
                final[i] = lv + (1 if tt == "R" else 2 if tt in ("AN", "EN") else 0)
            else:  # I2
                final[i] = lv + (1 if tt in ("L", "EN", "AN") else 0)
    # L1: segment separators, and whitespace/isolate controls before them or at the end, go to the paragraph level
    trailing = True
    for i in reversed(keep):
        t = types[i]
        if t in ("S", "B"):
            final[i], trailing = base, True
        elif trailing and t in ("WS", "LRI", "RLI", "FSI", "PDI"):
            final[i] = base
        else:
            trailing = False
    # BN characters (zero-width space, soft hyphen, ...) stay beside the character they followed
    chars: list[tuple[str, int]] = []
    last = base
    for i, c in enumerate(text):
        if i in final:
            last = final[i]
            chars.append((c, last))
        elif types[i] == "BN":
            chars.append((c, last))
    return _reorder(chars)


def _reorder(chars: list[tuple[str, int]]) -> str:
    """L2 (reverse runs from the highest level down to the lowest odd one), then L4 (mirror at odd levels)."""
    if not chars:
        return ""
    seq = [(MIRRORS.get(c, c) if lv % 2 else c, lv) for c, lv in chars]
    top = max(lv for _, lv in seq)
    low_odd = min((lv for _, lv in seq if lv % 2), default=top + 1)
    for level in range(top, low_odd - 1, -1):
        for i, j in _spans([lv >= level for _, lv in seq]):
            seq[i:j] = seq[i:j][::-1]
    return "".join(c for c, _ in seq if c not in BIDI_CONTROLS)
