"""Replies mended to follow their instructions: the repair arm of learning verifiable instructions.

A 135M model's reply to an instruction item (data/instructions.py) often says something sensible and breaks a
form: capitals where lowercase was asked, no title, no postscript, no quotes around it. Rejection sampling
keeps only the replies that happen to follow everything, and those are mostly the ones whose instructions
are easy (no forbidden word, fewer than N sentences). `repair(reply, item)` mends the forms instead: each
kind with a mechanical edit that keeps the reply's words gets it, in an order where a later edit cannot
undo an earlier one (the reply's shape, then what goes at its start and end, then its characters, then
what wraps it all), and the result is returned only when it earns the top instruction reward
(rewards.instruction_reward: every instruction followed, by the IFEval checker, strict). Kinds with no
such edit (words to add to reach a count, keywords to weave in, letters to count) must already hold, or
the reply is not mended.

    repair("The sea is calm. Boats rest.", {"instruction_id_list": ["change_case:english_lowercase",
           "detectable_format:title"], "kwargs": [{}, {}]})
    -> "<<the sea is calm>>\n\nthe sea is calm. boats rest."
"""
from __future__ import annotations

import json
import re

from ..eval.ifeval import split_sentences
from .rewards import instruction_reward


def _sentences_kept(text: str, n: int) -> str | None:
    """The first n sentences (None when there are fewer)."""
    sentences = split_sentences(text)
    return " ".join(sentences[:n]) if len(sentences) >= n else None


def _fewer_sentences(text: str, kw: dict) -> str | None:
    if kw["relation"] != "less than":
        return text  # "at least" has no edit: it must hold already
    return _sentences_kept(text, max(1, kw["num_sentences"] - 1))


def _fewer_words(text: str, kw: dict) -> str | None:
    if kw["relation"] != "less than":
        return text
    kept = []
    for sentence in split_sentences(text):
        if len(re.findall(r"\w+", " ".join(kept + [sentence]))) >= kw["num_words"]:
            break
        kept.append(sentence)
    return " ".join(kept) or None


def _bullets(text: str, kw: dict) -> str | None:
    sentences = split_sentences(text)
    n = kw["num_bullets"]
    if len(sentences) < n:
        return None
    return "\n".join(f"* {s.lstrip('*- ')}" for s in sentences[:n])


def _sections(text: str, kw: dict) -> str | None:
    sentences, n, word = split_sentences(text), kw["num_sections"], kw["section_spliter"]
    if len(sentences) < n:
        return None
    parts = [sentences[i * len(sentences) // n:(i + 1) * len(sentences) // n] for i in range(n)]
    return "\n\n".join(f"{word} {i + 1}\n" + " ".join(p) for i, p in enumerate(parts))


def _highlights(text: str, kw: dict) -> str | None:
    """The first num_highlights sentences (those without asterisks) in *...*."""
    sentences = split_sentences(text)
    plain = [i for i, s in enumerate(sentences) if "*" not in s and "\n" not in s][:kw["num_highlights"]]
    if len(plain) < kw["num_highlights"]:
        return None
    return " ".join(f"*{s}*" if i in plain else s for i, s in enumerate(sentences))


def _title(text: str, kw: dict) -> str | None:
    words = re.findall(r"[\w'-]+", text)[:4]
    return f"<<{' '.join(words)}>>\n\n{text}" if words else None


def _postscript(text: str, kw: dict) -> str:
    return f"{text}\n\n{kw['postscript_marker']} I hope this helps."


def _end_phrase(text: str, kw: dict) -> str:
    return f"{text}\n\n{kw['end_phrase']}"


def _no_comma(text: str, kw: dict) -> str:
    return re.sub(r"\s*,\s*", " ", text).replace(",", "")


def _as_json(text: str, kw: dict) -> str:
    return json.dumps({"response": text}, ensure_ascii=False)


def _quoted(text: str, kw: dict) -> str:
    return '"' + text.strip().strip('"') + '"'


# kind -> edit (text, kwargs) -> text or None (cannot mend), in the order they are made
EDITS = {
    "length_constraints:number_sentences": _fewer_sentences,
    "length_constraints:number_words": _fewer_words,
    "detectable_format:number_bullet_lists": _bullets,
    "detectable_format:multiple_sections": _sections,
    "detectable_format:number_highlighted_sections": _highlights,
    "detectable_format:title": _title,
    "detectable_content:postscript": _postscript,
    "startend:end_checker": _end_phrase,
    "punctuation:no_comma": _no_comma,
    "change_case:english_lowercase": lambda text, kw: text.lower(),
    "change_case:english_capital": lambda text, kw: text.upper(),
    "detectable_format:json_format": _as_json,
    "startend:quotation": _quoted,
}


def repair(reply: str, item: dict, other: str | None = None) -> str | None:
    """The reply with the edits of its item's instructions made (two responses: `other`, a different
    reply to the same prompt, after six asterisks) -> the mended reply if it now follows every
    instruction, else None."""
    wanted = dict(zip(item["instruction_id_list"], item["kwargs"]))
    text = reply.strip()
    if "combination:two_responses" in wanted:
        if other is None or other.strip() == text:
            return None
        text = f"{text}\n******\n{other.strip()}"
    for kind, edit in EDITS.items():
        if kind in wanted and text is not None:
            text = edit(text, wanted[kind] or {})
    return text if text and instruction_reward(text, "stop", item).correct == 1.0 else None  # the top reward


__all__ = ["repair", "EDITS"]
