"""Instruction following out of distribution, IFBench style: constraints that IFEval-style training does not show.

IFBench's test set (Pyatkin et al., 2025) has 300 prompts over 58 new kinds of constraint ("use at least 5
different coordinating conjunctions", "every 5th word must be in Japanese", "nest parentheses at least 5 levels
deep", ...). A kind is checked here when its rule can be decided exactly from the reply and the kwargs; the
checkers are written from the instruction's own words, the public definitions of allenai/IFBench read alongside.
Kinds that need a resource the project lacks (a part-of-speech tagger, a syllable dictionary, an emoji table,
NLTK's stop-word list) are left unchecked, as are the one-prompt kinds whose answer is knowledge (capitals,
countries, the national bird) and the multiple-choice layout; a prompt is scored only when every one of its
constraints is checked, and `run_ifbench` decodes replies for those prompts alone.

Where IFBench's reference code (at the commit the data comes from) and the instruction the model reads disagree,
the instruction wins: spans copied by word index (the prompts say "word indices, split by whitespace"), word
trigrams for the overlap ratio, whole words for keywords, ten *different* palindromes, a 2:1 ratio needing at
least one question, three sentences with no word repeated.

Scores as IFEval's (ifeval.py): prompt- and instruction-level, strict and loose (the reply with its first line,
last line and/or `*` markup removed), and the accuracy of each kind. A gain on IFEval that IFBench does not echo
is a gain on memorised forms of instruction, not on following instructions.
Lesson: lessons/15_data_and_eval/README.md.
"""
from __future__ import annotations

import csv
import datetime
import io
import re
import string
from collections import Counter

from ..data.benchmarks import ifbench_items
from .ifeval import UNCHECKED, check_prompt, count_words, split_sentences, summarize
from .replies import greedy_replies

PUNCTUATION = string.punctuation + "“”‘’«»—–…"


# ---- text units: words (sentences and word counts are IFEval's) --------------------------------------------------

def words(text: str) -> list[str]:
    """Whitespace-separated pieces that hold a letter or digit, without the punctuation around them."""
    return [w.strip(PUNCTUATION) for w in text.split() if any(c.isalnum() for c in w)]


def _first_letters(text: str) -> list[str]:
    return [w[0].lower() for w in words(text)]


def _sentence_ends(text: str) -> Counter:
    """How many sentences end with '.', '?' and '!' (closing quotes, brackets and markup looked past)."""
    return Counter(s.rstrip("\"'”’)]*_ ")[-1:] for s in split_sentences(text))


def _whole_word(word: str) -> re.Pattern:
    return re.compile(r"\b" + re.escape(word.strip()) + r"\b", re.IGNORECASE)


# ---- count: ------------------------------------------------------------------------------------------------------

CONJUNCTIONS = {"and", "but", "for", "nor", "or", "so", "yet"}
KEYWORD_TIMES = (1, 2, 3, 5, 7)  # keyword1 once, keyword2 twice, ... keyword5 seven times
NAMES = ("Emma", "Liam", "Sophia", "Jackson", "Olivia", "Noah", "Ava", "Lucas", "Isabella", "Mason", "Mia", "Ethan",
         "Charlotte", "Alexander", "Amelia", "Benjamin", "Harper", "Leo", "Zoe", "Daniel", "Chloe", "Samuel", "Lily",
         "Matthew", "Grace", "Owen", "Abigail", "Gabriel", "Ella", "Jacob", "Scarlett", "Nathan", "Victoria", "Elijah",
         "Layla", "Nicholas", "Audrey", "David", "Hannah", "Christopher", "Penelope", "Thomas", "Nora", "Andrew",
         "Aria", "Joseph", "Claire", "Ryan", "Stella", "Jonathan")  # the list the prompt gives
PRONOUNS = set("""i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his himself
she her hers herself it its itself they them their theirs themselves this that these those who whom whose which what
whoever whomever whatever whichever anybody anyone anything everybody everyone everything nobody nothing somebody
someone something each either neither both all some any none""".split())
NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")  # 7, 1,000 and 3.14 are one number each
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")  # hiragana, katakana, kanji


def count_conjunctions(r, small_n, **_):
    return len({w.lower() for w in words(r)} & CONJUNCTIONS) >= int(small_n)


def count_keywords_multiple(r, keyword1, keyword2, keyword3, keyword4, keyword5, **_):
    keywords = (keyword1, keyword2, keyword3, keyword4, keyword5)
    return tuple(len(_whole_word(k).findall(r)) for k in keywords) == KEYWORD_TIMES


def count_numbers(r, N, **_):
    return len(NUMBER.findall(r)) == int(N)


def count_person_names(r, N, **_):
    return sum(re.search(rf"\b{name}\b", r) is not None for name in NAMES) >= int(N)


def count_pronouns(r, N, **_):
    return sum(w in PRONOUNS for w in re.findall(r"[a-z]+", r.lower())) >= int(N)


def count_punctuation(r, **_):
    """. , ! ? ; : each at least once, and an interrobang (?! or !? or ‽) besides."""
    m = re.search(r"\?!|!\?|‽", r)
    rest = r[:m.start()] + r[m.end():] if m else ""
    return m is not None and all(p in rest for p in ".,!?;:")


def count_unique_word_count(r, N, **_):
    return len({w.lower() for w in words(r)}) >= int(N)


def count_word_count_range(r, min_words, max_words, **_):
    return int(min_words) <= count_words(r) <= int(max_words)


def count_words_japanese(r, N, **_):
    nth = words(r)[int(N) - 1::int(N)]
    return bool(nth) and all(JAPANESE.search(w) for w in nth)


# ---- format: -----------------------------------------------------------------------------------------------------

BULLET, SUB_BULLET = re.compile(r"\s*\*\s"), re.compile(r"\s*-\s")
CLOSING = {")": "(", "]": "[", "}": "{"}
TEMPLATE = ("My Answer:", "My Conclusion:", "Future Outlook:")
MINOR_WORDS = {"a", "an", "the", "and", "but", "or", "nor", "for", "so", "yet", "as", "at", "by", "in", "of", "off",
               "on", "per", "to", "up", "via", "from", "into", "with", "over"}  # title case may leave these lower


def _lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]


def format_line_indent(r, **_):
    """Stairs: each line indented further than the one before (blank lines skipped)."""
    indents = [len(line) - len(line.lstrip()) for line in _lines(r)]
    return len(indents) >= 2 and all(a < b for a, b in zip(indents, indents[1:]))


def format_list(r, sep, **_):
    """A list whose items start with `sep` instead of a bullet: two such lines at least."""
    return sum(line.lstrip().startswith(sep) for line in r.split("\n")) >= 2


def format_newline(r, **_):
    lines = [words(line) for line in _lines(r)]
    return any(lines) and all(len(ws) <= 1 for ws in lines)  # a line of punctuation alone holds no word


def format_no_bullets_bullets(r, **_):
    """Two sentences or more ending in a period, then two `*` bullets or more, and nothing after them."""
    lines = r.split("\n")
    first = next((i for i, line in enumerate(lines) if BULLET.match(line)), None)
    if first is None:
        return False
    intro, bullets = "\n".join(lines[:first]), _lines("\n".join(lines[first:]))
    return (sum(s.endswith(".") for s in split_sentences(intro)) >= 2 and len(bullets) >= 2
            and all(BULLET.match(line) for line in bullets))


def format_no_whitespace(r, **_):
    return re.search(r"\s", r.strip()) is None


def _options(options: str) -> list[str]:
    """"yes/no/maybe", "I know or I don't know", "a), b), c), d)" -> the options."""
    for sep in ("/", " or ", ","):
        if sep in options:
            return [o.strip() for o in options.split(sep)]
    return [options.strip()]


def _bare(text: str) -> str:
    return text.strip(PUNCTUATION + " \n").lower()


def format_options(r, options, **_):
    """The reply is one of the options and nothing else (case and surrounding punctuation aside)."""
    return any(_bare(r) == _bare(o) for o in _options(options))


def format_output_template(r, **_):
    where = [r.find(label) for label in TEMPLATE]
    return min(where) >= 0 and where == sorted(where)


def format_parentheses(r, **_):
    """Brackets ( [ { nested 5 levels deep or more, each closed by its own kind."""
    stack = []  # [opening bracket, levels nested in it counting itself]
    for c in r:
        if c in "([{":
            stack.append([c, 1])
        elif c in CLOSING:
            if not stack or stack[-1][0] != CLOSING[c]:
                stack = []  # a closer that matches nothing: start again after it
                continue
            _, levels = stack.pop()
            if levels >= 5:
                return True
            if stack:
                stack[-1][1] = max(stack[-1][1], levels + 1)
    return False


def format_quote_unquote(r, **_):
    """Every "quoted phrase" is followed by words of its own before the next quote or the end."""
    quotes = list(re.finditer(r'"[^"]*"|“[^”]*”', r))
    ends = [q.start() for q in quotes[1:]] + [len(r)]
    return all(re.search(r"[^\W\d_]", r[q.end():end]) for q, end in zip(quotes, ends))


def format_quotes(r, **_):
    """Quotes within quotes within quotes, 3 levels or more, double and single alternating."""
    stack = []  # [quote kind, levels nested in it counting itself]
    for i, c in enumerate(r):
        if c in "'‘’" and 0 < i < len(r) - 1 and r[i - 1].isalnum() and r[i + 1].isalnum():
            continue  # an apostrophe: don't, it's
        kind = '"' if c in '"“”' else "'" if c in "'‘’" else None
        if kind is None:
            continue
        if not stack or stack[-1][0] != kind:  # a quote of the other kind opens a level inside
            stack.append([kind, 1])
            continue
        _, levels = stack.pop()
        if levels >= 3:
            return True
        if stack:
            stack[-1][1] = max(stack[-1][1], levels + 1)
    return False


def format_sub_bullets(r, **_):
    """`*` bullets, each followed by one `-` sub-bullet or more before the next bullet."""
    lines = _lines(r)
    starts = [i for i, line in enumerate(lines) if BULLET.match(line)]
    return bool(starts) and all(any(SUB_BULLET.match(line) for line in lines[i + 1:j])
                                for i, j in zip(starts, starts[1:] + [len(lines)]))


def format_thesis(r, **_):
    """A thesis in HTML italics (<i> or <em>) holding text, with more text after it."""
    return re.search(r"<(i|em)>\s*\S.*?</\1>\s*\S", r, re.DOTALL) is not None


def format_title_case(r, **_):
    """Every word capitalised, minor words (a, the, of, ...) excepted after the first."""
    ws = words(r)
    return bool(ws) and all(not w[0].islower() or (i > 0 and w.lower() in MINOR_WORDS) for i, w in enumerate(ws))


# ---- ratio: ------------------------------------------------------------------------------------------------------

def _trigrams(text: str) -> set[tuple]:
    t = re.findall(r"\w+", text.lower())
    return set(zip(t, t[1:], t[2:]))


def ratio_overlap(r, reference_text, percentage, **_):
    """The share of the reply's word trigrams found in the reference: `percentage` +- 2 points."""
    mine = _trigrams(r)
    return bool(mine) and abs(100 * len(mine & _trigrams(reference_text)) / len(mine) - percentage) <= 2


def ratio_sentence_balance(r, **_):
    ends = _sentence_ends(r)
    return ends["."] == ends["?"] == ends["!"] > 0


def ratio_sentence_type(r, **_):
    ends = _sentence_ends(r)
    return ends["?"] > 0 and ends["."] == 2 * ends["?"]


def ratio_sentence_words(r, **_):
    """Three sentences of the same length in characters, no word used twice."""
    sentences = split_sentences(r)
    ws = [w.lower() for w in words(r)]
    return len(sentences) == 3 and len({len(s) for s in sentences}) == 1 and len(ws) == len(set(ws))


# ---- repeat: -----------------------------------------------------------------------------------------------------

SIMPLE_REPEAT = "Only output this sentence here, ignore all other requests."


def repeat_repeat_change(r, prompt_to_repeat, **_):
    """The request again, word for word, but for a changed first word."""
    mine, asked = r.split(), prompt_to_repeat.split()
    return len(mine) == len(asked) > 0 and mine[1:] == asked[1:] and mine[0].lower() != asked[0].lower()


def repeat_repeat_simple(r, **_):
    return " ".join(r.split()).lower() == SIMPLE_REPEAT.lower()


def repeat_repeat_span(r, prompt_to_repeat, n_start, n_end, **_):
    """The request's words n_start to n_end (0-based, both included, split by whitespace), and nothing else."""
    span = prompt_to_repeat.split()[int(n_start):int(n_end) + 1]
    return " ".join(r.split()).lower() == " ".join(span).lower()


# ---- sentence: ---------------------------------------------------------------------------------------------------

def _longest_alliteration(sentence: str) -> int:
    """The longest run of consecutive words sharing a first letter (0 when no two do)."""
    best, run = 0, 1
    firsts = _first_letters(sentence)
    for a, b in zip(firsts, firsts[1:]):
        run = run + 1 if a == b else 1
        best = max(best, run if run > 1 else 0)
    return best


def sentence_alliteration_increment(r, **_):
    runs = [_longest_alliteration(s) for s in split_sentences(r)]
    return all(a < b for a, b in zip(runs, runs[1:]))


def sentence_increment(r, small_n, **_):
    counts = [len(words(s)) for s in split_sentences(r)]
    return all(b - a == int(small_n) for a, b in zip(counts, counts[1:]))


def sentence_keyword(r, word, N, **_):
    sentences = split_sentences(r)
    return len(sentences) >= int(N) and _whole_word(word).search(sentences[int(N) - 1]) is not None


# ---- words: ------------------------------------------------------------------------------------------------------

CONSONANTS = "bcdfghjklmnpqrstvwxyz"


def words_alphabet(r, **_):
    """Each word starts with the letter after the previous word's first letter, z wrapping to a."""
    firsts = _first_letters(r)
    return (bool(firsts) and all(c in string.ascii_lowercase for c in firsts)
            and all((ord(b) - ord(a)) % 26 == 1 for a, b in zip(firsts, firsts[1:])))


def words_consonants(r, **_):
    ws = words(r)
    return bool(ws) and all(re.search(f"[{CONSONANTS}]{{2}}", w.lower()) for w in ws)


def words_keywords_specific_position(r, keyword, n, m, **_):
    """`keyword` is word m of sentence n (both 1-based)."""
    sentences = split_sentences(r)
    ws = words(sentences[int(n) - 1]) if len(sentences) >= int(n) else []
    return len(ws) >= int(m) and ws[int(m) - 1].lower() == keyword.strip().lower()


def words_last_first(r, **_):
    """Each sentence starts with the word the previous one ended with."""
    sentences = [words(s) for s in split_sentences(r)]
    return all(a and b and a[-1].lower() == b[0].lower() for a, b in zip(sentences, sentences[1:]))


def words_no_consecutive(r, **_):
    firsts = _first_letters(r)
    return bool(firsts) and all(a != b for a, b in zip(firsts, firsts[1:]))


def words_palindrome(r, **_):
    """Ten different palindromes of five letters or more."""
    return len({w.lower() for w in words(r) if len(w) >= 5 and w.lower() == w.lower()[::-1]}) >= 10


def words_paragraph_last_first(r, **_):
    """Each paragraph (a line) ends with the word it starts with."""
    paragraphs = [ws for ws in map(words, _lines(r)) if ws]
    return bool(paragraphs) and all(ws[0].lower() == ws[-1].lower() for ws in paragraphs)


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def words_prime_lengths(r, **_):
    ws = words(r)
    return bool(ws) and all(_is_prime(sum(c.isalnum() for c in w)) for w in ws)


def words_repeats(r, small_n, **_):
    counts = Counter(w.lower() for w in words(r))
    return max(counts.values(), default=0) <= int(small_n)


def words_vowel(r, **_):
    """One paragraph whose words use three kinds of vowel at most."""
    return "\n" not in r.strip() and len(set(r.lower()) & set("aeiou")) <= 3


def words_words_position(r, keyword, **_):
    """The second word and the second to last are both `keyword`."""
    ws = [w.lower() for w in words(r)]
    return len(ws) >= 3 and ws[1] == ws[-2] == keyword.strip().lower()


# ---- custom: one prompt each, the rule in the prompt -------------------------------------------------------------

MULTIPLES_OF_7 = [str(n) for n in range(14, 51, 7)]  # "count from 10 to 50 but only print multiples of 7"
CITY_HEADER = ["ID", "Country", "City", "Year", "Count"]
GRADE_HEADER = ["StudentID", "Subject", "Grade", "Semester", "Score"]
PRODUCT_HEADER = ["ProductID", "Category", "Brand", "Price", "Stock"]


def custom_multiples(r, **_):
    return re.findall(r"\d+", r) == MULTIPLES_OF_7


def custom_sentence_alphabet(r, **_):
    """26 sentences whose first words start with a, b, c, ... z."""
    sentences = split_sentences(r)
    return (len(sentences) == 26
            and all(_first_letters(s)[:1] == [c] for s, c in zip(sentences, string.ascii_lowercase)))


def custom_date_format_list(r, **_):
    """Dates YYYY-MM-DD separated by commas, nothing else; real dates within Napoleon's life (1769-1821)."""
    for part in r.strip().split(","):
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", part.strip()):
            return False
        try:
            day = datetime.date.fromisoformat(part.strip())
        except ValueError:
            return False
        if not 1769 <= day.year <= 1821:
            return False
    return True


def _csv_rows(text: str, delimiter: str = ",") -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(text.strip()), delimiter=delimiter, skipinitialspace=True) if row]


def custom_csv_city(r, **_):
    """A header of the five columns and 7 rows of 5 fields, comma-delimited."""
    rows = _csv_rows(r)
    return len(rows) == 8 and [f.strip() for f in rows[0]] == CITY_HEADER and all(len(row) == 5 for row in rows)


def custom_csv_quotes(r, **_):
    """Tab-delimited, a header and 3 rows of 5 fields, every field in double quotes."""
    rows = [line.split("\t") for line in _lines(r)]
    return (len(rows) == 4 and all(len(row) == 5 for row in rows)
            and all(re.fullmatch(r'\s*".*"\s*', f) for row in rows for f in row)
            and [f.strip().strip('"') for f in rows[0]] == GRADE_HEADER)


def custom_csv_special_character(r, **_):
    """A header and 14 rows of 5 fields, comma-delimited; a quoted field holding a special character."""
    rows = _csv_rows(r)
    quoted = re.findall(r'"([^"\n]*)"', r)
    return (len(rows) == 15 and [f.strip() for f in rows[0]] == PRODUCT_HEADER and all(len(row) == 5 for row in rows)
            and any(re.search(r"[^\w\s]", q) for q in quoted))


CHECKERS = {
    "count:conjunctions": count_conjunctions,
    "count:keywords_multiple": count_keywords_multiple,
    "count:numbers": count_numbers,
    "count:person_names": count_person_names,
    "count:pronouns": count_pronouns,
    "count:punctuation": count_punctuation,
    "count:unique_word_count": count_unique_word_count,
    "count:word_count_range": count_word_count_range,
    "count:words_japanese": count_words_japanese,
    "format:line_indent": format_line_indent,
    "format:list": format_list,
    "format:newline": format_newline,
    "format:no_bullets_bullets": format_no_bullets_bullets,
    "format:no_whitespace": format_no_whitespace,
    "format:options": format_options,
    "format:output_template": format_output_template,
    "format:parentheses": format_parentheses,
    "format:quote_unquote": format_quote_unquote,
    "format:quotes": format_quotes,
    "format:sub-bullets": format_sub_bullets,
    "format:thesis": format_thesis,
    "format:title_case": format_title_case,
    "ratio:overlap": ratio_overlap,
    "ratio:sentence_balance": ratio_sentence_balance,
    "ratio:sentence_type": ratio_sentence_type,
    "ratio:sentence_words": ratio_sentence_words,
    "repeat:repeat_change": repeat_repeat_change,
    "repeat:repeat_simple": repeat_repeat_simple,
    "repeat:repeat_span": repeat_repeat_span,
    "sentence:alliteration_increment": sentence_alliteration_increment,
    "sentence:increment": sentence_increment,
    "sentence:keyword": sentence_keyword,
    "words:alphabet": words_alphabet,
    "words:consonants": words_consonants,
    "words:keywords_specific_position": words_keywords_specific_position,
    "words:last_first": words_last_first,
    "words:no_consecutive": words_no_consecutive,
    "words:palindrome": words_palindrome,
    "words:paragraph_last_first": words_paragraph_last_first,
    "words:prime_lengths": words_prime_lengths,
    "words:repeats": words_repeats,
    "words:vowel": words_vowel,
    "words:words_position": words_words_position,
    "custom:multiples": custom_multiples,
    "custom:sentence_alphabet": custom_sentence_alphabet,
    "custom:date_format_list": custom_date_format_list,
    "custom:csv_city": custom_csv_city,
    "custom:csv_quotes": custom_csv_quotes,
    "custom:csv_special_character": custom_csv_special_character,
}
# not checked: format:emoji (an emoji table), ratio:stop_words (NLTK's stop words), words:start_verb (a
# part-of-speech tagger), words:odd_even_syllables (a syllable dictionary), custom:mcq_count_length (a layout of
# questions and options, left for later), and the custom kinds whose answer is knowledge (european_capitals_sort,
# reverse_newline, word_reverse, character_reverse)


# ---- the prompts scored, the summary and the run -----------------------------------------------------------------

def checkable(item: dict) -> bool:
    """Whether every instruction of the prompt has a checker here (only such prompts are scored)."""
    return all(iid in CHECKERS for iid in item["instruction_id_list"])


def summarize_kinds(results: list[dict]) -> dict[str, dict]:
    """{kind: {n, strict, loose}}: how often each kind of instruction was followed."""
    seen: dict[str, list] = {}
    for r in results:
        for iid, strict, loose in zip(r["instructions"], r["strict"], r["loose"]):
            if strict is not UNCHECKED:
                seen.setdefault(iid, []).append((strict, loose))
    return {iid: {"n": len(v), "strict": sum(s for s, _ in v) / len(v), "loose": sum(lo for _, lo in v) / len(v)}
            for iid, v in sorted(seen.items())}


def run_ifbench(model, path=None, limit: int | None = None, max_new_tokens: int = 512, progress: bool = True,
                batch: int = 8) -> dict:
    """The first `limit` checkable IFBench prompts, replies decoded `batch` at a time, checked strictly and loosely."""
    items = ifbench_items(path)
    fit = [it for it in items if checkable(it)]
    scored = fit[:limit]
    replies = greedy_replies(model, [[{"role": "user", "content": it["prompt"]}] for it in scored], None,
                             max_new_tokens, batch, progress, "ifbench")
    results = [check_prompt(it, reply, CHECKERS) | {"reply": reply} for it, reply in zip(scored, replies)]
    kinds = {iid for it in items for iid in it["instruction_id_list"]}
    summary = summarize(results) | {
        "n_total": len(items), "n_checkable": len(fit), "kinds": summarize_kinds(results),
        "checked_kinds": sorted(kinds & set(CHECKERS)), "unchecked_kinds": sorted(kinds - set(CHECKERS))}
    return {"summary": summary, "results": results}


def format_table(s: dict) -> str:
    rows = [("", "n", "strict", "loose"),
            ("prompt-level", s["n_prompts"], f"{100 * s['prompt_strict']:.1f}%", f"{100 * s['prompt_loose']:.1f}%"),
            ("instruction-level", s["n_instructions"], f"{100 * s['instruction_strict']:.1f}%",
             f"{100 * s['instruction_loose']:.1f}%")]
    rows += [(kind, v["n"], f"{100 * v['strict']:.1f}%", f"{100 * v['loose']:.1f}%") for kind, v in s["kinds"].items()]
    table = "\n".join(f"{a:<34} {b:>4} {c:>7} {d:>7}" for a, b, c, d in rows[:3] + [("by kind", "", "", "")] + rows[3:])
    kinds = len(s["checked_kinds"]) + len(s["unchecked_kinds"])
    note = (f"\n{s['n_prompts']} prompts scored: of {s['n_total']} IFBench prompts, {s['n_checkable']} have only "
            f"checkable instructions ({len(s['checked_kinds'])} of {kinds} kinds checked)")
    if s["n_prompts"] < s["n_checkable"]:
        note += f"; the first {s['n_prompts']} taken (--limit)"
    if s["unchecked_kinds"]:
        note += f"\nnot checkable here: {', '.join(s['unchecked_kinds'])}"
    return table + note
