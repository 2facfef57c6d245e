"""Requests to the agent's calculator and clock, with what answers them: the prompts from which
tuner/mend.py makes recovery rows out of the model's own failed calls.

The kinds are those of the in-use evaluation (eval/inuse.py), drawn afresh so that none is one of its
requests: sums written as people write them ("17 times 23", "2 to the power of 10", "15% of 80"), short
word problems of one or two steps, the time in a city (any `Region/City` zone but the evaluation's
cities, so most are places no training row names), and questions no tool fits. Each request is
{"id", "kind", "question", "gold"} as the evaluation's are, plus what a right reply holds: the
expression whose value is the gold (sums, word), the city (time), the answer sentence (direct).

    python -m nanoagent.tuner.mend --model runs/.../model --n 600 --out runs/mend/rows.jsonl
"""
from __future__ import annotations

import zoneinfo

import numpy as np

# The in-use evaluation's cities (eval/inuse.py, TIMES), kept out of the requests; tests/test_mend.py pins them.
EVAL_ZONES = ("Europe/Rome", "America/Vancouver", "Asia/Jakarta", "Africa/Lagos", "Europe/Helsinki",
              "America/Argentina/Buenos_Aires", "Asia/Manila", "America/Denver")
REGIONS = ("Africa", "America", "Asia", "Atlantic", "Australia", "Europe", "Indian", "Pacific")

ASK_TIME = ("What time is it in {c}?", "What's the time in {c} right now?", "Tell me the current time in {c}.",
            "Could you check the local time in {c}?", "I'd like to know the time in {c} now.")
SUM_ASKS = ("What is {e}?", "Calculate {e}.", "How much is {e}?", "Can you work out {e}?", "What's {e}?",
            "Please compute {e}.", "What does {e} come to?")
# (question with {a} {b} {c}, expression, numbers drawn: a, b, c as (low, high))
WORD_PROBLEMS = (
    ("A crate holds {a} oranges. How many oranges are in {b} crates?", "{a}*{b}", (6, 48), (3, 25), None),
    ("Concert tickets cost {a} dollars each. What do {b} tickets cost?", "{a}*{b}", (15, 90), (2, 9), None),
    ("A cyclist rides at {a} km per hour. How far does she ride in {b} hours?", "{a}*{b}", (12, 30), (2, 7), None),
    ("{c} marbles are shared equally among {b} children. How many marbles does each child get?", "{c}/{b}",
     (2, 20), (2, 9), None),
    ("Tom had {a} dollars and spent {b} dollars on lunch. How much money does he have left?", "{a}-{b}",
     (40, 200), (5, 39), None),
    ("A library has {a} novels and {b} comic books. How many books is that in all?", "{a}+{b}", (120, 900),
     (30, 400), None),
    ("A bag of flour weighs {a} kg. How much do {b} bags weigh?", "{a}*{b}", (2, 25), (3, 12), None),
    ("A runner does {b} laps of a {a} meter track. How many meters does she run?", "{a}*{b}", (200, 400), (3, 15),
     None),
    ("Each shelf holds {a} books. There are {b} shelves and {c} more books on a table. How many books are there?",
     "{a}*{b}+{c}", (12, 40), (3, 9), (2, 15)),
    ("A farmer plants {b} rows of {a} trees and then {c} trees die. How many trees are left?", "{a}*{b}-{c}",
     (8, 30), (4, 12), (1, 9)),
    ("A phone plan costs {a} dollars a month. How much is that for a year?", "{a}*12", (15, 70), None, None),
    ("A recipe needs {a} grams of sugar for one cake. How much sugar do {b} cakes need?", "{a}*{b}", (80, 250),
     (2, 8), None),
)
DIRECT = (("What is the capital of Japan?", "tokyo", "The capital of Japan is Tokyo."),
          ("What is the capital of Canada?", "ottawa", "The capital of Canada is Ottawa."),
          ("What is the capital of Egypt?", "cairo", "The capital of Egypt is Cairo."),
          ("Who painted the Mona Lisa?", "leonardo", "The Mona Lisa was painted by Leonardo da Vinci."),
          ("Who wrote Pride and Prejudice?", "austen", "Pride and Prejudice was written by Jane Austen."),
          ("What is the largest planet in our solar system?", "jupiter", "Jupiter is the largest planet."),
          ("What gas do plants take in from the air?", "carbon dioxide", "Plants take in carbon dioxide."),
          ("What is the opposite of 'early'?", "late", "The opposite of 'early' is 'late'."),
          ("What is the opposite of 'up'?", "down", "The opposite of 'up' is 'down'."),
          ("Translate 'hello' into Spanish.", "hola", "'Hello' in Spanish is 'hola'."),
          ("Translate 'good night' into German.", "gute nacht", "'Good night' in German is 'Gute Nacht'."),
          ("What color do you get when you mix red and white?", "pink", "Red and white make pink."),
          ("What color do you get when you mix red and yellow?", "orange", "Red and yellow make orange."),
          ("What is the plural of 'mouse'?", "mice", "The plural of 'mouse' is 'mice'."),
          ("Which animal is known as the king of the jungle?", "lion", "The lion is called the king of the jungle."),
          ("How many legs does a spider have?", "eight", "A spider has eight legs."),
          ("What is frozen water called?", "ice", "Frozen water is called ice."),
          ("Which ocean lies between Europe and North America?", "atlantic", "The Atlantic Ocean does."),
          ("Give me a synonym for 'happy'.", "glad", "A synonym for 'happy' is 'glad'."),
          ("Spell the word 'necessary' backwards.", "yrassecen", "'necessary' backwards is 'yrassecen'."),
          ("What language is spoken in Brazil?", "portuguese", "In Brazil people speak Portuguese."),
          ("Who wrote the play Hamlet?", "shakespeare", "Hamlet was written by William Shakespeare."),
          ("What is the chemical symbol for water?", "h2o", "The chemical formula of water is H2O."),
          ("Name the season after winter.", "spring", "Spring comes after winter."))


def time_cities() -> list[tuple[str, str]]:
    """(city, zone) for every `Region/City` zone but the evaluation's: "Kuala Lumpur", "Asia/Kuala_Lumpur"."""
    out = []
    for zone in sorted(zoneinfo.available_timezones()):
        parts = zone.split("/")
        if len(parts) == 2 and parts[0] in REGIONS and zone not in EVAL_ZONES and not parts[1].startswith("GMT"):
            city = parts[1].replace("_", " ")
            if not any(city == z.rsplit("/", 1)[-1].replace("_", " ") for z in EVAL_ZONES):
                out.append((city, zone))
    return out


def a_sum(rng: np.random.Generator) -> tuple[str, str, float]:
    """An expression as people write it, in words or signs -> (as asked, as the calculator reads it, its value)."""
    a, b, c = int(rng.integers(3, 99)), int(rng.integers(2, 40)), int(rng.integers(2, 20))
    form = int(rng.integers(7))
    if form == 3:
        base, power = int(rng.integers(2, 10)), int(rng.integers(2, 6))
        return f"{base} to the power of {power}", f"{base}**{power}", base ** power
    if form == 4:
        p, whole = int(rng.choice([5, 10, 12, 20, 25, 30, 40, 50, 75])), 20 * int(rng.integers(2, 60))
        return f"{p}% of {whole}", f"{p}/100*{whole}", p * whole / 100
    return {0: (f"{a} times {b}", f"{a}*{b}", a * b), 1: (f"{a} x {b}", f"{a}*{b}", a * b),
            2: (f"{a * b} divided by {b}", f"{a * b}/{b}", a), 5: (f"{a} * {b} - {c}", f"{a} * {b} - {c}", a * b - c),
            6: (f"({a} + {b}) * {c}", f"({a} + {b}) * {c}", (a + b) * c)}[form]


def a_word_problem(rng: np.random.Generator) -> tuple[str, str, float]:
    """-> (question, the expression that answers it, its value)."""
    question, expression, *spans = WORD_PROBLEMS[int(rng.integers(len(WORD_PROBLEMS)))]
    a, b, c = (None if span is None else int(rng.integers(span[0], span[1] + 1)) for span in spans)
    if "{c}/{b}" in expression:
        c = a * b  # shared equally: a whole number each
    values = {"a": a, "b": b, "c": c}
    expression = expression.format(**values)
    value = float(eval(expression, {"__builtins__": {}}))  # the template's own digits and + - * /
    return question.format(**values), expression, value


def agent_requests(n: int, seed: int = 0) -> list[dict]:
    """n requests, the four kinds in turn (sums, word, time, direct), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    cities = time_cities()
    out = []
    for i in range(n):
        kind = ("sums", "word", "time", "direct")[i % 4]
        if kind == "sums":
            asked, e, value = a_sum(rng)
            item = {"question": SUM_ASKS[int(rng.integers(len(SUM_ASKS)))].format(e=asked), "gold": value,
                    "expression": e}
        elif kind == "word":
            question, e, value = a_word_problem(rng)
            item = {"question": question, "gold": value, "expression": e}
        elif kind == "time":
            city, zone = cities[int(rng.integers(len(cities)))]
            item = {"question": ASK_TIME[int(rng.integers(len(ASK_TIME)))].format(c=city), "gold": zone, "city": city}
        else:
            question, word, sentence = DIRECT[int(rng.integers(len(DIRECT)))]
            item = {"question": question, "gold": word, "answer": sentence}
        out.append({"id": f"{kind}-{seed}-{i}", "kind": kind} | item)
    return out
