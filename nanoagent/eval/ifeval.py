"""Instruction following, IFEval style: verifiable instructions checked by code, strict and loose.

Each prompt carries instructions such as "no commas", "at least 300 words", "end with
'Is there anything else I can help with?'". A checker per instruction type reads the
reply and says whether it complied. The checkers are written here from the rules of the
IFEval paper (Zhou et al., 2023) and its public instruction list.

Scores (the paper's four): prompt-level (all of a prompt's instructions followed) and
instruction-level (each instruction on its own), each strict (the reply as written) and
loose (the best of the reply with its first line, last line and/or `*` markup removed).
Language detection needs the `langdetect` package; without it `language:response_language`
is reported as unchecked (left out of the scores, and counted), and the two
`change_case:english_*` types check the case only.
Lesson: lessons/15_data_and_eval/README.md.
"""
from __future__ import annotations

import json
import re


from ..data.benchmarks import ifeval_items
from .replies import greedy_replies

UNCHECKED = None  # what a checker returns when it cannot decide here


# ---- language detection (optional) ---------------------------------------------------------

def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of `text`'s language, or None when `langdetect` is not installed."""
    try:
        import langdetect
    except ImportError:
        return None
    langdetect.DetectorFactory.seed = 0  # langdetect is random unless seeded
    try:
        return langdetect.detect(text)
    except Exception:  # LangDetectException on text without letters
        return ""


# ---- text units: words, sentences, paragraphs -------------------------------------------------

def count_words(text: str) -> int:
    return len(re.findall(r"\w+", text))


_ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "inc", "ltd", "co", "e.g", "i.e",
                  "no", "fig", "approx", "u.s", "a.m", "p.m")
_SENTENCE_END = re.compile(r"([.!?]+)(\s+|$)")


def split_sentences(text: str) -> list[str]:
    """Sentences: text up to . ! or ? followed by space or the end, skipping abbreviations and decimals."""
    sentences, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        before = text[start:m.start()].split()
        last = before[-1].lower().rstrip(".") if before else ""
        if m.group(1) == "." and last in _ABBREVIATIONS:
            continue
        if m.group(1) == "." and re.fullmatch(r"[a-z]", last):  # an initial: "J. Smith"
            continue
        sentence = text[start:m.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = m.end()
    if text[start:].strip():
        sentences.append(text[start:].strip())
    return sentences


def _compare(count: int, relation: str, n: int) -> bool:
    if relation == "less than":
        return count < n
    if relation == "at least":
        return count >= n
    raise ValueError(f"unknown relation {relation!r}; IFEval uses 'less than' and 'at least'")


# ---- the checkers: (reply, **kwargs) -> True / False / UNCHECKED --------------------------------

def keywords_existence(r, keywords, **_):
    return all(re.search(re.escape(k), r, re.IGNORECASE) for k in keywords)


def keywords_frequency(r, keyword, frequency, relation, **_):
    return _compare(len(re.findall(re.escape(keyword), r, re.IGNORECASE)), relation, frequency)


def keywords_forbidden_words(r, forbidden_words, **_):
    return not any(re.search(r"\b" + re.escape(w) + r"\b", r, re.IGNORECASE) for w in forbidden_words)


def keywords_letter_frequency(r, letter, let_frequency, let_relation, **_):
    return _compare(r.lower().count(letter.lower()), let_relation, let_frequency)


def language_response_language(r, language, **_):
    found = detect_language(r)
    return UNCHECKED if found is None else found == language or found == ""  # no letters: nothing to judge


def length_number_sentences(r, num_sentences, relation, **_):
    return _compare(len(split_sentences(r)), relation, num_sentences)


def length_number_paragraphs(r, num_paragraphs, **_):
    """Paragraphs are separated by the markdown divider `***`; an empty one inside fails."""
    parts = re.split(r"\s?\*\*\*\s?", r)
    inner = [p for i, p in enumerate(parts) if p.strip() or 0 < i < len(parts) - 1]
    if any(not p.strip() for p in inner):
        return False
    return len(inner) == num_paragraphs


def length_number_words(r, num_words, relation, **_):
    return _compare(count_words(r), relation, num_words)


def length_nth_paragraph_first_word(r, num_paragraphs, nth_paragraph, first_word, **_):
    """Paragraphs separated by a blank line: exactly `num_paragraphs`, the nth starting with `first_word`."""
    parts = [p for p in re.split(r"\n\s*\n", r) if p.strip()]
    if len(parts) != num_paragraphs or not 1 <= nth_paragraph <= len(parts):
        return False
    word = parts[nth_paragraph - 1].split()[0].lstrip("'\"*#")
    word = re.split(r"[.,?!'\"*:;]", word)[0].lower()
    return word == first_word.lower()


def content_number_placeholders(r, num_placeholders, **_):
    return len(re.findall(r"\[[^\]]*\]", r)) >= num_placeholders


def content_postscript(r, postscript_marker, **_):
    """A line starting with the marker (P.S. / P.P.S, spaces between letters allowed)."""
    letters = [c for c in postscript_marker.lower() if c.isalpha()]
    pattern = r"\.?\s?".join(map(re.escape, letters))
    return re.search(r"^\s*" + pattern + r"\.?", r.lower(), re.MULTILINE) is not None


def format_number_bullet_lists(r, num_bullets, **_):
    bullets = re.findall(r"^\s*(?:\*[^*]|-)", r, re.MULTILINE)
    return len(bullets) == num_bullets


CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def format_constrained_response(r, **_):
    return any(o in r.strip() for o in CONSTRAINED_OPTIONS)


def format_number_highlighted_sections(r, num_highlights, **_):
    """Markdown highlights *like this* or **like this**, each with some text inside."""
    found = [h for h in re.findall(r"\*\*[^\n*]+\*\*|\*[^\n*]+\*", r) if h.strip("*").strip()]
    return len(found) >= num_highlights


def format_multiple_sections(r, section_spliter, num_sections, **_):
    """Sections introduced by the splitter word and a number ("SECTION 1", "Section 2", ...)."""
    parts = re.split(r"\s?" + re.escape(section_spliter) + r"\s?\d+\s?", r)
    return len(parts) - 1 >= num_sections


def format_json_format(r, **_):
    s = r.strip()
    s = re.sub(r"^```(?:json)?", "", s, flags=re.IGNORECASE).removesuffix("```").strip()
    try:
        json.loads(s)
    except ValueError:
        return False
    return True


def format_title(r, **_):
    return any(t.strip() for t in re.findall(r"<<([^\n]+?)>>", r))


def combination_two_responses(r, **_):
    """Two different responses separated by six asterisks."""
    parts = r.split("******")
    kept = []
    for i, p in enumerate(parts):
        if not p.strip():
            if 0 < i < len(parts) - 1:
                return False
        else:
            kept.append(p.strip())
    return len(kept) == 2 and kept[0] != kept[1]


def combination_repeat_prompt(r, prompt_to_repeat, **_):
    return r.strip().lower().startswith(prompt_to_repeat.strip().lower())


def startend_end_checker(r, end_phrase, **_):
    return r.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def startend_quotation(r, **_):
    s = r.strip()
    return len(s) > 1 and s[0] == '"' and s[-1] == '"'


def case_capital_word_frequency(r, capital_frequency, capital_relation, **_):
    words = re.findall(r"\w+", r)
    return _compare(sum(w.isupper() for w in words), capital_relation, capital_frequency)


def case_english_capital(r, **_):
    lang = detect_language(r)
    return r.isupper() and lang in (None, "en")


def case_english_lowercase(r, **_):
    lang = detect_language(r)
    return r.islower() and lang in (None, "en")


def punctuation_no_comma(r, **_):
    return "," not in r


CHECKERS = {
    "keywords:existence": keywords_existence,
    "keywords:frequency": keywords_frequency,
    "keywords:forbidden_words": keywords_forbidden_words,
    "keywords:letter_frequency": keywords_letter_frequency,
    "language:response_language": language_response_language,
    "length_constraints:number_sentences": length_number_sentences,
    "length_constraints:number_paragraphs": length_number_paragraphs,
    "length_constraints:number_words": length_number_words,
    "length_constraints:nth_paragraph_first_word": length_nth_paragraph_first_word,
    "detectable_content:number_placeholders": content_number_placeholders,
    "detectable_content:postscript": content_postscript,
    "detectable_format:number_bullet_lists": format_number_bullet_lists,
    "detectable_format:constrained_response": format_constrained_response,
    "detectable_format:number_highlighted_sections": format_number_highlighted_sections,
    "detectable_format:multiple_sections": format_multiple_sections,
    "detectable_format:json_format": format_json_format,
    "detectable_format:title": format_title,
    "combination:two_responses": combination_two_responses,
    "combination:repeat_prompt": combination_repeat_prompt,
    "startend:end_checker": startend_end_checker,
    "startend:quotation": startend_quotation,
    "change_case:capital_word_frequency": case_capital_word_frequency,
    "change_case:english_capital": case_english_capital,
    "change_case:english_lowercase": case_english_lowercase,
    "punctuation:no_comma": punctuation_no_comma,
}


# ---- strict and loose ------------------------------------------------------------------------------

def loose_variants(r: str) -> list[str]:
    """The reply with its first line, last line, both, and/or every `*` removed (8 variants, the reply first)."""
    lines = r.split("\n")
    cut = [r, "\n".join(lines[1:]), "\n".join(lines[:-1]), "\n".join(lines[1:-1])]
    return cut + [c.replace("*", "") for c in cut]


def check_instruction(instruction_id: str, reply: str, kwargs: dict | None, loose: bool = False,
                      checkers: dict = CHECKERS):
    """True / False, or UNCHECKED when the type cannot be checked here (or is unknown); `checkers`: IFEval's, or
    another benchmark's table of the same form (ifbench.py)."""
    fn = checkers.get(instruction_id)
    if fn is None:
        return UNCHECKED
    kwargs = {k: v for k, v in (kwargs or {}).items() if v is not None}
    if not loose:
        return fn(reply, **kwargs) if reply.strip() else False
    verdicts = [fn(v, **kwargs) for v in loose_variants(reply) if v.strip()]
    if any(v is UNCHECKED for v in verdicts):
        return UNCHECKED
    return any(verdicts)


def check_prompt(item: dict, reply: str, checkers: dict = CHECKERS) -> dict:
    """All of one prompt's instructions, strict and loose."""
    out = {"key": item.get("key"), "instructions": item["instruction_id_list"], "strict": [], "loose": []}
    for iid, kw in zip(item["instruction_id_list"], item.get("kwargs") or [{}] * len(item["instruction_id_list"])):
        out["strict"].append(check_instruction(iid, reply, kw, checkers=checkers))
        out["loose"].append(check_instruction(iid, reply, kw, loose=True, checkers=checkers))
    return out


def summarize(results: list[dict]) -> dict:
    """Prompt- and instruction-level accuracy, strict and loose, over what could be checked here."""
    out = {}
    for mode in ("strict", "loose"):
        verdicts = [v for r in results for v in r[mode]]
        checked = [v for v in verdicts if v is not UNCHECKED]
        prompts = [r for r in results if all(v is not UNCHECKED for v in r[mode])]
        out[f"prompt_{mode}"] = sum(all(r[mode]) for r in prompts) / len(prompts) if prompts else 0.0
        out[f"instruction_{mode}"] = sum(checked) / len(checked) if checked else 0.0
    unchecked = sorted({iid for r in results for iid, v in zip(r["instructions"], r["strict"]) if v is UNCHECKED})
    out["n_prompts"] = len(results)
    out["n_instructions"] = sum(len(r["strict"]) for r in results)
    out["unchecked_types"] = unchecked
    out["n_unchecked"] = sum(v is UNCHECKED for r in results for v in r["strict"])
    out["n_prompts_scored"] = sum(all(v is not UNCHECKED for v in r["strict"]) for r in results)
    return out


# ---- data and the run ---------------------------------------------------------------------------------

def run_ifeval(model, path=None, limit: int | None = None, max_new_tokens: int = 512, progress: bool = True,
               batch: int = 8) -> dict:
    """The first `limit` IFEval prompts, replies decoded `batch` at a time, each checked strictly and loosely."""
    items = ifeval_items(path)[:limit]
    replies = greedy_replies(model, [[{"role": "user", "content": it["prompt"]}] for it in items], None,
                             max_new_tokens, batch, progress, "ifeval")
    results = [check_prompt(it, reply) | {"reply": reply} for it, reply in zip(items, replies)]
    return {"summary": summarize(results), "results": results}


def format_table(s: dict) -> str:
    rows = [("", "strict", "loose"),
            ("prompt-level", f"{100 * s['prompt_strict']:.1f}%", f"{100 * s['prompt_loose']:.1f}%"),
            ("instruction-level", f"{100 * s['instruction_strict']:.1f}%", f"{100 * s['instruction_loose']:.1f}%")]
    table = "\n".join(f"{a:<18} {b:>7} {c:>7}" for a, b, c in rows)
    note = f"\n{s['n_prompts']} prompts, {s['n_instructions']} instructions"
    if s["n_unchecked"]:
        note += (f"; {s['n_unchecked']} not checkable here ({', '.join(s['unchecked_types'])}), left out: "
                 f"{s['n_prompts_scored']} prompts scored")
    return table + note
