"""Verifiable-instruction prompts for training: a task followed by 1-3 constraints that code can check.

Each item has IFEval's form, {"key", "prompt", "instruction_id_list", "kwargs"}, with the instruction
ids and arguments of the project's IFEval checker (eval/ifeval.py), so a reply to it is scored the way
the evaluation scores one (rewards.instruction_reward). The tasks come from sources that are not
evaluation sets:

    writing         short writing tasks written here (WRITING_TASKS)
    gsm8k           GSM8K *train* questions (the data folder's gsm8k/train.jsonl)
    tool requests   the first user turn of Seal-Tools, ToolRL and HammerBench single-call rows, one line
                    of 15-400 characters (the offered tools are not shown: the reply is plain text)

The constraints are 21 of the checker's kinds that are simple to state (CONSTRAINTS), each drawn with
its arguments and one of several English phrasings; two kinds that cannot both hold, or that would read
as contradicting each other (all lowercase and all capitals, JSON and bullet points, a quoted reply and
an end phrase, ...), never go into one prompt (NEVER_WITH). IFEval's and IFBench's prompts are for
evaluation only: a task or prompt that equals one of the blocked prompts (`benchmarks.eval_prompts`,
compared normalized) is dropped and counted. The same seed gives the same items.

    python -m nanoagent.data instructions --n 500 --out instructions.jsonl
    python -m nanoagent.rl --task instructions --data instructions.jsonl ...                # GRPO
    python -m nanoagent.rl --task instructions --rejection 8 --data instructions.jsonl ...  # rejection sampling
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .clean import normalize_text
from .common import Drop
from .io import DataError, iter_file
from .toolsets import read_toolset

WRITING_TASKS = (
    "Describe a lighthouse at night.",
    "Write a note to a neighbour about a lost cat.",
    "Explain how the gears of a bicycle work to a ten-year-old.",
    "Write a short story about a robot that learns to garden.",
    "Give advice to someone starting their first job.",
    "Describe the smell of a bakery early in the morning.",
    "Write a thank-you message to a retiring teacher.",
    "Explain why the sky looks blue during the day.",
    "Write a product description for a reusable water bottle.",
    "Describe a walk through a pine forest after rain.",
    "Write a letter inviting friends to a picnic by the lake.",
    "Explain how to brew a good cup of tea.",
    "Write a short poem about the tide going out.",
    "Give tips for keeping houseplants alive through the winter.",
    "Describe a perfect lazy Sunday.",
    "Write a review of an imaginary noodle restaurant.",
    "Explain what a library card lets you do.",
    "Write an announcement for a community bake sale.",
    "Describe a busy train station at rush hour.",
    "Write a story about a dragon who is afraid of the dark.",
    "Explain how clouds turn into rain.",
    "Write an apology to a friend for missing their birthday party.",
    "Suggest a plan for a rainy afternoon indoors with two children.",
    "Describe an old clock tower in a small town.",
    "Write a short speech for the opening of a school sports day.",
    "Explain why a good night's sleep matters.",
    "Write a postcard from a village high in the mountains.",
    "Describe the first snowfall of the winter.",
    "Give step-by-step instructions for planting a young apple tree.",
    "Write a message welcoming a new member to a chess club.",
    "Explain how a magnetic compass finds north.",
    "Write a diary entry of a sailor on a calm day at sea.",
    "Describe a farmers' market on a Saturday morning.",
    "Write a fable about a tortoise who wants to fly a kite.",
    "Suggest three names for a new bakery and say why each fits.",
    "Explain the water cycle to a child.",
    "Write a job advertisement for a park ranger.",
    "Describe a thunderstorm heard from inside a tent.",
    "Write a reminder to a team about the meeting on Friday.",
    "Explain how to fold a paper boat.",
    "Write a short biography of an imaginary inventor of umbrellas.",
    "Describe the view from a hilltop at sunrise.",
)

TOOLSET_NAMES = ("seal-tools", "toolrl", "hammer-single")


# ---- the tasks --------------------------------------------------------------------------------------

def gsm8k_questions(data_dir: Path) -> list[str]:
    """The questions of the data folder's GSM8K train split (never its test split)."""
    path = Path(data_dir) / "gsm8k" / "train.jsonl"
    if not path.is_file():
        raise DataError(f"{path} is missing; the instruction prompts read GSM8K train from the data folder")
    return [" ".join(row["question"].split()) for row in iter_file(path)]


def tool_requests(data_dir: Path, seed: int) -> list[str]:
    """The first user turn of each row of the tool-calling sets, when it is one line of 15-400 characters."""
    out = []
    for k, name in enumerate(TOOLSET_NAMES):
        for chat in read_toolset(name, data_dir, np.random.default_rng([seed, k])):
            if isinstance(chat, Drop):
                continue
            text = (next((m["content"] for m in chat["messages"] if m["role"] == "user"), None) or "").strip()
            if 15 <= len(text) <= 400 and "\n" not in text:
                out.append(" ".join(text.split()))
    return list(dict.fromkeys(out))  # each request once (HammerBench repeats them), in the order read


def task_pools(data_dir: Path | None, seed: int) -> dict[str, list[str]]:
    """Each source's tasks; with no data folder, the writing tasks alone."""
    pools = {"writing": list(WRITING_TASKS)}
    if data_dir is not None:
        pools["gsm8k"] = gsm8k_questions(data_dir)
        pools["tool requests"] = tool_requests(data_dir, seed)
    return pools


# ---- the constraints: each kind draws its checker arguments and a sentence stating them ----------------

def pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def quoted(words: list[str], last: str = "and") -> str:
    """['a', 'b', 'c'] -> "'a', 'b' and 'c'"."""
    q = [f"'{w}'" for w in words]
    return q[0] if len(q) == 1 else ", ".join(q[:-1]) + f" {last} " + q[-1]


KEYWORDS = ("river", "window", "garden", "morning", "silver", "teacup", "bread", "candle", "harbor", "mountain",
            "lantern", "whistle", "orange", "pocket", "meadow", "thunder", "blanket", "compass", "ribbon", "pebble")
FORBIDDEN = ("very", "really", "just", "thing", "things", "stuff", "basically", "actually", "simply", "totally",
             "literally", "quite", "extremely", "honestly")  # none is a keyword or a word of an end phrase
END_PHRASES = ("Thank you for reading.", "That is all for today.", "Let me know if you need anything else.",
               "Hope this helps.", "Have a great day!", "Any other questions?")  # no comma, no lone "I"
SPLITTERS = ("SECTION", "Section", "PART", "Part")


def lowercase(rng):
    return {}, pick(rng, ("Your entire response should be in English and in lowercase letters only.",
                          "Write everything in lowercase; do not use a single capital letter.",
                          "Use only lowercase letters in your answer, no capitals at all."))


def capital(rng):
    return {}, pick(rng, ("Your entire response should be in English and in capital letters only.",
                          "Write your whole answer in uppercase letters.",
                          "Use capital letters for every word of your reply."))


def capital_words(rng):
    if rng.random() < 0.5:
        n = int(rng.integers(2, 6))
        return {"capital_relation": "at least", "capital_frequency": n}, pick(rng, (
            f"Write at least {n} words in all capital letters for emphasis.",
            f"Use no fewer than {n} words that are written entirely in capitals.",
            f"Stress at least {n} words by writing them in ALL CAPS."))
    n = int(rng.integers(3, 7))
    return {"capital_relation": "less than", "capital_frequency": n}, pick(rng, (
        f"Use fewer than {n} words written entirely in capital letters.",
        f"Words in all capitals should appear less than {n} times."))


def number_words(rng):
    if rng.random() < 0.5:
        n = int(pick(rng, (30, 50, 80, 100)))
        return {"relation": "at least", "num_words": n}, pick(rng, (
            f"Answer with at least {n} words.", f"Your reply should be {n} words or longer.",
            f"Write no fewer than {n} words."))
    n = int(pick(rng, (50, 80, 100, 150)))
    return {"relation": "less than", "num_words": n}, pick(rng, (
        f"Answer in fewer than {n} words.", f"Keep your reply under {n} words.", f"Use less than {n} words in total."))


def number_sentences(rng):
    if rng.random() < 0.5:
        n = int(rng.integers(3, 6))
        return {"relation": "at least", "num_sentences": n}, pick(rng, (
            f"Write at least {n} sentences.", f"Your answer must contain no fewer than {n} sentences."))
    n = int(rng.integers(3, 7))
    return {"relation": "less than", "num_sentences": n}, pick(rng, (
        f"Answer in fewer than {n} sentences.", f"Use less than {n} sentences in your response."))


def number_paragraphs(rng):
    n = int(rng.integers(2, 5))
    return {"num_paragraphs": n}, pick(rng, (
        f"Write exactly {n} paragraphs, separated from each other by the markdown divider ***.",
        f"Your reply must have {n} paragraphs. Separate them with a line holding only ***.",
        f"Split your answer into {n} paragraphs and put *** between each two of them."))


def keywords_existence(rng):
    words = [str(w) for w in rng.choice(KEYWORDS, size=int(rng.integers(1, 3)), replace=False)]
    noun = "word" if len(words) == 1 else "words"
    return {"keywords": words}, pick(rng, (
        f"Include the {noun} {quoted(words)} in your response.", f"Make sure the {noun} {quoted(words)} appear in "
        "your answer.", f"Mention {quoted(words)} somewhere in your reply."))


def forbidden_words(rng):
    words = [str(w) for w in rng.choice(FORBIDDEN, size=int(rng.integers(1, 4)), replace=False)]
    return {"forbidden_words": words}, pick(rng, (
        f"Do not use the {'word' if len(words) == 1 else 'words'} {quoted(words, 'or')} in your response.",
        f"Avoid the {'word' if len(words) == 1 else 'words'} {quoted(words, 'and')} entirely.",
        f"Never write {quoted(words, 'or')} in your answer."))


def keyword_frequency(rng):
    word = str(pick(rng, KEYWORDS))
    if rng.random() < 0.75:
        n = int(rng.integers(2, 5))
        return {"keyword": word, "relation": "at least", "frequency": n}, pick(rng, (
            f"Use the word '{word}' at least {n} times.", f"The word '{word}' should appear {n} times or more."))
    n = int(rng.integers(2, 4))
    return {"keyword": word, "relation": "less than", "frequency": n}, pick(rng, (
        f"Use the word '{word}' fewer than {n} times.", f"The word '{word}' may appear less than {n} times."))


def letter_frequency(rng):
    if rng.random() < 0.6:
        letter, n = str(pick(rng, "abcdeghilmnoprstuwy")), int(rng.integers(5, 16))
        return {"letter": letter, "let_relation": "at least", "let_frequency": n}, pick(rng, (
            f"In your response, the letter '{letter}' should appear at least {n} times.",
            f"Use the letter '{letter}' {n} times or more."))
    letter, n = str(pick(rng, "jqxz")), int(rng.integers(2, 6))  # in no keyword, end phrase or marker
    return {"letter": letter, "let_relation": "less than", "let_frequency": n}, pick(rng, (
        f"In your response, the letter '{letter}' should appear fewer than {n} times.",
        f"Use the letter '{letter}' less than {n} times."))


def json_format(rng):
    return {}, pick(rng, ("Wrap your entire output in JSON format.",
                          "Give your whole answer as valid JSON (markdown ticks such as ``` are allowed).",
                          "Format the entire reply as one JSON object."))


def bullet_lists(rng):
    n = int(rng.integers(2, 6))
    return {"num_bullets": n}, pick(rng, (
        f"Your answer must contain exactly {n} bullet points in markdown, such as: * This is a point.",
        f"Use exactly {n} bullet points, each a line starting with '* '.",
        f"Give exactly {n} markdown bullet points and no other list items."))


def title(rng):
    return {}, pick(rng, ("Give your answer a title wrapped in double angular brackets, such as <<a quiet evening>>.",
                          "Start with a title in double angle brackets, like <<my title>>.",
                          "Include a title inside << and >>."))


def highlighted_sections(rng):
    n = int(rng.integers(1, 5))
    return {"num_highlights": n}, pick(rng, (
        f"Highlight at least {n} parts of your answer with markdown, i.e. *highlighted section*.",
        f"Mark at least {n} passages with single asterisks, like *this one*.",
        f"Use markdown to highlight at least {n} sections, for example *key idea*."))


def multiple_sections(rng):
    s, n = str(pick(rng, SPLITTERS)), int(rng.integers(2, 5))
    return {"section_spliter": s, "num_sections": n}, pick(rng, (
        f"Your response must have {n} sections. Mark the beginning of each section with {s} X, such as: {s} 1.",
        f"Split your answer into {n} sections, each starting with '{s}' and its number ({s} 1, {s} 2, ...)."))


def postscript(rng):
    m = str(pick(rng, ("P.S.", "P.P.S")))
    return {"postscript_marker": m}, pick(rng, (
        f"At the end of your response, please add a postscript starting with {m}",
        f"Finish with a postscript that begins with {m}", f"Add a short note at the end, starting with {m}"))


def end_phrase(rng):
    p = str(pick(rng, END_PHRASES))
    return {"end_phrase": p}, pick(rng, (
        f"Finish your response with the exact phrase '{p}' No other words should follow it.",
        f"End your reply with this exact sentence: {p}", f"Your answer must end with '{p}' and nothing after it."))


def quotation(rng):
    return {}, pick(rng, ("Wrap your entire response with double quotation marks.",
                          "Put your whole answer inside double quotes.",
                          "Enclose the entire reply in double quotation marks."))


def no_comma(rng):
    return {}, pick(rng, ("Do not use any commas in your response.", "Avoid commas entirely.",
                          "Your answer must not contain a single comma."))


def two_responses(rng):
    return {}, pick(rng, ("Give two different responses, separated by six asterisk symbols: ******.",
                          "Write two different answers and separate them with six asterisks (******).",
                          "Provide two alternative responses with ****** between them."))


def placeholders(rng):
    n = int(rng.integers(1, 4))
    return {"num_placeholders": n}, pick(rng, (
        f"Include at least {n} placeholders in square brackets, such as [name].",
        f"Leave at least {n} blanks for the reader to fill in, written in square brackets like [address]."))


CONSTRAINTS = {  # instruction id (the checker's) -> rng -> (kwargs, sentence)
    "change_case:english_lowercase": lowercase,
    "change_case:english_capital": capital,
    "change_case:capital_word_frequency": capital_words,
    "length_constraints:number_words": number_words,
    "length_constraints:number_sentences": number_sentences,
    "length_constraints:number_paragraphs": number_paragraphs,
    "keywords:existence": keywords_existence,
    "keywords:forbidden_words": forbidden_words,
    "keywords:frequency": keyword_frequency,
    "keywords:letter_frequency": letter_frequency,
    "detectable_format:json_format": json_format,
    "detectable_format:number_bullet_lists": bullet_lists,
    "detectable_format:title": title,
    "detectable_format:number_highlighted_sections": highlighted_sections,
    "detectable_format:multiple_sections": multiple_sections,
    "detectable_content:postscript": postscript,
    "detectable_content:number_placeholders": placeholders,
    "startend:end_checker": end_phrase,
    "startend:quotation": quotation,
    "punctuation:no_comma": no_comma,
    "combination:two_responses": two_responses,
}

# kinds that never share a prompt (read both ways): they cannot both hold, or would read as a contradiction
NEVER_WITH = {
    "change_case:english_lowercase": {"change_case:english_capital", "change_case:capital_word_frequency",
                                      "detectable_format:multiple_sections", "startend:end_checker",
                                      "detectable_content:postscript"},
    "change_case:english_capital": {"change_case:capital_word_frequency", "detectable_format:multiple_sections",
                                    "startend:end_checker", "detectable_content:postscript"},
    "change_case:capital_word_frequency": {"detectable_format:multiple_sections", "detectable_content:postscript"},
    "length_constraints:number_words": {"length_constraints:number_sentences", "length_constraints:number_paragraphs"},
    "length_constraints:number_sentences": {"length_constraints:number_paragraphs", "detectable_content:postscript"},
    "length_constraints:number_paragraphs": {"detectable_format:multiple_sections"},
    "detectable_format:json_format": {
        "detectable_format:number_bullet_lists", "detectable_format:title", "detectable_format:multiple_sections",
        "detectable_format:number_highlighted_sections", "detectable_content:postscript", "startend:end_checker",
        "startend:quotation", "punctuation:no_comma", "combination:two_responses",
        "length_constraints:number_sentences", "length_constraints:number_paragraphs",
        "detectable_content:number_placeholders"},
    "combination:two_responses": {
        "detectable_format:number_bullet_lists", "detectable_format:multiple_sections", "startend:quotation",
        "startend:end_checker", "detectable_content:postscript", "length_constraints:number_words",
        "length_constraints:number_sentences", "length_constraints:number_paragraphs"},
    "startend:quotation": {"startend:end_checker", "detectable_format:number_bullet_lists",
                           "detectable_content:postscript"},
    "startend:end_checker": {"detectable_content:postscript"},
}


def clash(a: str, b: str) -> bool:
    """Whether two instruction kinds may not share a prompt (the same kind twice clashes too)."""
    return a == b or b in NEVER_WITH.get(a, ()) or a in NEVER_WITH.get(b, ())


def draw_constraints(rng: np.random.Generator) -> tuple[list[str], list[dict], list[str]]:
    """1-3 kinds that do not clash -> (their ids, their checker kwargs, their sentences)."""
    k = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    ids = []
    for kind in rng.permutation(list(CONSTRAINTS)):
        if len(ids) < k and not any(clash(str(kind), other) for other in ids):
            ids.append(str(kind))
    kwargs, sentences = zip(*(CONSTRAINTS[i](rng) for i in ids))
    return ids, list(kwargs), list(sentences)


# ---- the items ---------------------------------------------------------------------------------------

def with_stop(text: str) -> str:
    """A task or constraint as a sentence: a full stop added when it ends without one."""
    return text if text[-1] in ".?!" else text + "."


def instruction_items(data_dir: Path | None, n: int, seed: int = 0,
                      blocked: set[str] | frozenset = frozenset()) -> tuple[list[dict], Counter]:
    """n prompts with 1-3 verifiable constraints, IFEval's form -> (items, counts: items per source, and
    "blocked": tasks and prompts dropped because they equal an evaluation prompt).

    The sources take turns (writing, gsm8k, tool requests, ...), each walking its tasks in a seeded order and
    starting over when they run out (a task then comes back with other constraints). `blocked` holds
    normalized evaluation prompts (`benchmarks.eval_prompts`); with no data folder only the writing tasks are
    used."""
    if n < 1:
        raise DataError(f"{n} prompts asked for: ask for at least one")
    rng = np.random.default_rng(seed)
    counts = Counter()
    pools = {}
    for source, tasks in task_pools(data_dir, seed).items():
        kept = [t for t in tasks if normalize_text(t) not in blocked]
        counts["blocked"] += len(tasks) - len(kept)
        if kept:
            pools[source] = [kept[int(i)] for i in rng.permutation(len(kept))]
    names = list(pools)
    items = []
    for k in range(n):
        source = names[k % len(names)]
        tasks = pools[source]
        task = tasks[(k // len(names)) % len(tasks)]
        ids, kwargs, sentences = draw_constraints(rng)
        prompt = " ".join(with_stop(s) for s in [task, *sentences])
        if normalize_text(prompt) in blocked:
            counts["blocked"] += 1
            continue
        items.append({"key": k, "prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs})
        counts[source] += 1
    return items, counts


__all__ = ["WRITING_TASKS", "CONSTRAINTS", "NEVER_WITH", "clash", "draw_constraints", "instruction_items",
           "task_pools", "gsm8k_questions", "tool_requests"]
