"""IFBench: each checked kind of constraint with a reply that follows it and one that does not, the choice of
the prompts scored, the summary by kind, where the data is found, and the command on the tiny model."""
import json
import string

import pytest

from nanoagent.agent import ScriptedModel
from nanoagent.data import benchmarks as BD
from nanoagent.data.clean import normalize_text
from nanoagent.eval import ifbench as F
from nanoagent.eval import ifeval as I
from nanoagent.eval.__main__ import main
from nanoagent.eval.plot import measures


@pytest.fixture(scope="module")
def sample(data_dir):
    return data_dir / "ifbench" / "IFBench_test.jsonl"


# ---- each kind, a reply that follows it and one that does not ----------------------------------------------------

KEYWORDS = {"keyword1": "moon", "keyword2": "star", "keyword3": "sun", "keyword4": "sky", "keyword5": "sea"}
FIVE = "moon star star sun sun sun sky sky sky sky sky "
ALPHABET = " ".join(f"{c.upper()}{c}{c} came here." for c in string.ascii_lowercase)  # "Aaa came here. Bbb ..."
CITY = "ID,Country,City,Year,Count\n" + "".join(f"{i},France,Paris,2020,{i}\n" for i in range(1, 8))
GRADES = "\t".join(f'"{h}"' for h in F.GRADE_HEADER) + "\n" + '"1"\t"Math"\t"A"\t"Fall"\t"95"\n' * 3
PRODUCTS = "ProductID,Category,Brand,Price,Stock\n" + "1,Tools,\"Acme & Sons\",9.99,5\n" + "2,Tools,Acme,1.50,7\n" * 13

PASS_FAIL = [  # (kind, kwargs as the data gives them, a reply that follows it, a reply that does not)
    ("count:conjunctions", {"small_n": 3.0}, "I came and saw, but left, so what.", "I came and saw and left."),
    ("count:keywords_multiple", KEYWORDS, FIVE + "sea " * 7, FIVE + "sea " * 6 + "seas"),  # whole words only
    ("count:numbers", {"N": 2.0}, "In 2024, 1,000 people came.", "In 2024, 3.5 of 10 people came."),
    ("count:person_names", {"N": 2.0}, "Emma met Liam.", "Emmanuel met Liam."),
    ("count:pronouns", {"N": 3.0}, "I told her that it was mine.", "I saw her."),
    ("count:punctuation", {}, "Wait, what?! Yes: really; truly. Why? Go!", "Wait, what? Yes: really; truly. Go!"),
    ("count:unique_word_count", {"N": 4.0}, "one two three four", "one two One Two"),
    ("count:word_count_range", {"min_words": 3.0, "max_words": 4.0}, "one two three", "one two three four five"),
    ("count:words_japanese", {"N": 2.0}, "I 好き love 日本", "I 好き love Japan"),
    ("format:line_indent", {}, "a\n  b\n\n    c", "a\n  b\n  c"),
    ("format:list", {"sep": "!?!?"}, "!?!? one\n!?!? two", "!?!? one and !?!? two"),
    ("format:newline", {}, "One\nword\nper\nline.\n-", "Two words\nhere"),
    ("format:no_bullets_bullets", {}, "One sentence. Another one.\n* one\n* two\n",
     "One sentence. Another one.\n* one\n* two\nMore text."),
    ("format:no_bullets_bullets", {}, "One sentence. Another one.\n\n* one\n* two", "One sentence.\n* one\n* two"),
    ("format:no_whitespace", {}, "no_whitespace_here", "one space"),
    ("format:options", {"options": "yes/no/maybe"}, "Maybe.", "Maybe, it depends."),
    ("format:options", {"options": "a), b), c), d)"}, "b)", "b) Insertion"),
    ("format:options", {"options": "I know or I don't know"}, "I don't know.", "I do not know."),
    ("format:output_template", {}, "My Answer: yes My Conclusion: so Future Outlook: good",
     "My Conclusion: so My Answer: yes Future Outlook: good"),
    ("format:parentheses", {}, "Stray ( then (a [b {c (d [e])}])", "(a [b {c (d)}]) and (((((x]"),
    ("format:quote_unquote", {}, '"Hi" means hello, "bye" means farewell.', '"Hi" "bye" means farewell.'),
    ("format:quote_unquote", {}, 'No quotes at all.', 'She said "bye"'),
    ("format:quotes", {}, "He said \"she told me 'they yelled \"run\" loudly' then\" and left.",
     "He said \"she didn't tell me 'run' then\" and left."),
    ("format:sub-bullets", {}, "* a\n  - a1\n* b\n  - b1", "* a\n  - a1\n* b\n  c"),
    ("format:thesis", {}, "<i>Encryption protects streams.</i>\nKeys stay in hardware.",
     "<i>Encryption protects streams.</i>"),
    ("format:title_case", {}, "The Art of War Is Old", "The art of War"),
    ("ratio:overlap", {"reference_text": "the cat sat on the mat", "percentage": 50.0}, "The cat sat on a rug",
     "the cat sat on the mat"),
    ("ratio:sentence_balance", {}, "It rains. Does it? Wow!", "It rains. It pours. Does it? Wow!"),
    ("ratio:sentence_type", {}, "It rains. It pours. Does it?", "It rains."),  # 0 to 0 is no 2:1 ratio
    ("ratio:sentence_words", {}, "Cats nap. Dogs run. Owls fly.", "Cats nap. Dogs nap. Owls fly."),
    ("repeat:repeat_change", {"prompt_to_repeat": "Write a poem about the sea."}, "Compose a poem about the sea.",
     "Write a poem about the sea."),
    ("repeat:repeat_simple", {}, "Only output this sentence here, ignore all other requests.",
     "Only output this sentence here."),
    ("repeat:repeat_span", {"prompt_to_repeat": "explain the context, code and theory", "n_start": 1, "n_end": 3},
     "the context, code", "he co"),  # word indices, as the prompt says, not characters
    ("sentence:alliteration_increment", {}, "Big dog. Silly snakes slither. Tiny tired turtles trot.",
     "Silly snakes slither. Big bad dog."),
    ("sentence:increment", {"small_n": 2.0}, "I ran. Then I ran far. Then I ran very far today.",
     "I ran. Then I ran."),
    ("sentence:keyword", {"word": "moon", "N": 2.0}, "Night fell. The moon rose.", "The moon rose. Night fell."),
    ("words:alphabet", {}, "Yes, zebras always bite.", "Yes, zebras bite."),
    ("words:consonants", {}, "Strong blocks stand.", "Strong blocks are here."),
    ("words:keywords_specific_position", {"keyword": "moon", "n": 2, "m": 3}, "Night fell. Then the moon rose.",
     "Night fell. The moon rose."),
    ("words:last_first", {}, "I like tea. Tea is warm. Warm days.", "I like tea. Coffee is warm."),
    ("words:no_consecutive", {}, "Cats eat fish.", "Cats can eat."),
    ("words:palindrome", {}, "level radar civic kayak refer rotor madam stats tenet racecar", "level " * 10),
    ("words:paragraph_last_first", {}, "Time heals all wounds in time.\nLove is love.", "Time heals.\nLove is love."),
    ("words:prime_lengths", {}, "We saw three ships.", "We saw four ships."),
    ("words:repeats", {"small_n": 2.0}, "the cat and the dog", "the cat, the dog, the end"),
    ("words:vowel", {}, "A cat sat at a mat.", "A cat sat.\nA dog sat."),
    ("words:words_position", {"keyword": "moon"}, "The moon rose over the moon tonight.", "The moon rose tonight."),
    ("custom:multiples", {}, "14, 21, 28, 35, 42, 49", "7, 14, 21, 28, 35, 42, 49"),
    ("custom:sentence_alphabet", {}, ALPHABET, ALPHABET.replace("Bbb", "Xbb")),
    ("custom:date_format_list", {}, "1796-04-12, 1805-12-02", "1796-04-12, 1805-12-32"),
    ("custom:csv_city", {}, CITY, CITY.rsplit("7,", 1)[0]),
    ("custom:csv_quotes", {}, GRADES, GRADES.replace('"Math"', "Math")),
    ("custom:csv_special_character", {}, PRODUCTS, PRODUCTS.replace('"Acme & Sons"', "Acme")),
]


@pytest.mark.parametrize("kind, kwargs, good, bad", PASS_FAIL, ids=[p[0] for p in PASS_FAIL])
def test_ifbench_checkers(kind, kwargs, good, bad):
    assert I.check_instruction(kind, good, kwargs, checkers=F.CHECKERS) is True
    assert I.check_instruction(kind, bad, kwargs, checkers=F.CHECKERS) is False


UNCHECKED = {"format:emoji", "ratio:stop_words", "words:start_verb", "words:odd_even_syllables",
             "custom:mcq_count_length", "custom:european_capitals_sort", "custom:reverse_newline",
             "custom:word_reverse", "custom:character_reverse"}  # IFBench's 58 kinds less the 49 checked


def test_every_checked_kind_is_shown_to_pass_and_fail_and_is_in_the_sample(sample):
    assert {p[0] for p in PASS_FAIL} == set(F.CHECKERS) and len(F.CHECKERS) == 49
    items = BD.ifbench_items(sample)
    assert len(items) == 66  # the sample (tests/fixtures/data): IFBench's first 10 prompts, then one per new kind
    scored = {i for it in items if F.checkable(it) for i in it["instruction_id_list"]}
    assert scored == set(F.CHECKERS) and {i for it in items for i in it["instruction_id_list"]} - scored == UNCHECKED


def test_the_words_positional_rules_count():
    assert F.words('"Hello," she said -- twice.') == ["Hello", "she", "said", "twice"]
    assert F.words("It's well-known: 3.5!") == ["It's", "well-known", "3.5"]
    assert I.check_instruction("custom:sentence_alphabet", '"' + ALPHABET, {}, checkers=F.CHECKERS)  # a quote first
    assert not I.check_instruction("words:vowel", "I use each vowel: a e i o u.", {}, checkers=F.CHECKERS)
    assert not I.check_instruction("format:parentheses", "((((( x ]", {}, checkers=F.CHECKERS)


def test_loose_takes_the_reply_without_its_first_line():
    kw = {"options": "yes/no/maybe"}
    assert I.check_instruction("format:options", "Here is my answer:\nYes", kw, checkers=F.CHECKERS) is False
    assert I.check_instruction("format:options", "Here is my answer:\nYes", kw, loose=True, checkers=F.CHECKERS)


# ---- the prompts scored and the summary --------------------------------------------------------------------------

def test_only_prompts_whose_every_instruction_is_checked_are_scored(sample):
    model = ScriptedModel(["My answer is yes."])
    res = F.run_ifbench(model, sample, progress=False)
    s = res["summary"]
    items = BD.ifbench_items(sample)
    asked = [r["messages"][0]["content"] for r in model.requests]
    assert asked == [it["prompt"] for it in items if F.checkable(it)]  # the other 9 are never decoded
    assert s["n_total"] == 66 and s["n_checkable"] == s["n_prompts"] == s["n_prompts_scored"] == 57
    assert s["n_unchecked"] == 0 and set(s["unchecked_kinds"]) == UNCHECKED and len(s["checked_kinds"]) == 49
    assert set(s["kinds"]) == set(F.CHECKERS) and sum(v["n"] for v in s["kinds"].values()) == s["n_instructions"]
    assert all(r["reply"] == "My answer is yes." for r in res["results"])
    first = F.run_ifbench(ScriptedModel(["x"]), sample, limit=3, progress=False)["summary"]
    assert first["n_prompts"] == 3 and first["n_checkable"] == 57
    assert "the first 3 taken (--limit)" in F.format_table(first)


def test_summary_by_kind_and_the_table():
    items = [{"key": 1, "instruction_id_list": ["format:no_whitespace", "format:options"],
              "kwargs": [{}, {"options": "yes/no/maybe"}]},
             {"key": 2, "instruction_id_list": ["format:no_whitespace"], "kwargs": [{}]}]
    results = [I.check_prompt(items[0], "Sure:\nyes", F.CHECKERS), I.check_prompt(items[1], "yes", F.CHECKERS)]
    s = I.summarize(results) | {"n_total": 3, "n_checkable": 2, "kinds": F.summarize_kinds(results),
                                "checked_kinds": ["format:no_whitespace", "format:options"],
                                "unchecked_kinds": ["format:emoji"]}
    assert s["prompt_strict"] == 0.5 and s["prompt_loose"] == 1.0
    assert s["instruction_strict"] == pytest.approx(1 / 3) and s["instruction_loose"] == 1.0
    assert s["kinds"] == {"format:no_whitespace": {"n": 2, "strict": 0.5, "loose": 1.0},
                          "format:options": {"n": 1, "strict": 0.0, "loose": 1.0}}
    table = F.format_table(s)
    assert "by kind" in table and "format:options" in table and "not checkable here: format:emoji" in table
    assert "of 3 IFBench prompts, 2 have only checkable instructions (2 of 3 kinds checked)" in table


# ---- where the data is found, decontamination, the picture -------------------------------------------------------

def test_the_data_is_found_in_the_shared_folder_and_kept_out_of_training(data_dir, sample, monkeypatch):
    monkeypatch.setenv("NANOAGENT_DATA", str(data_dir))
    assert BD.ifbench_items() == BD.ifbench_items(sample)
    blocked = BD.eval_prompts(data_dir, fetch_bfcl=False)
    assert {normalize_text(it["prompt"]) for it in BD.ifbench_items(sample)} <= blocked


def test_the_picture_shows_ifbench_beside_ifeval():
    report = {"ifeval": {"summary": {"prompt_strict": 0.3}}, "ifbench": {"summary": {"prompt_strict": 0.1}}}
    assert measures(report) == pytest.approx({"IFEval prompt strict": 30, "IFBench prompt strict": 10})


# ---- the command, on the tiny model ------------------------------------------------------------------------------

def test_ifbench_command_on_the_tiny_model_and_resume(tiny_long, sample, tmp_path, capsys):
    out = tmp_path / "eval-ifbench.json"
    args = ["ifbench", "--model", str(tiny_long), "--ifbench-data", str(sample), "--limit", "2",
            "--max-new-tokens", "3", "--batch", "2", "--out", str(out), "--quiet"]
    report = main(args)
    s = json.loads(out.read_text())["ifbench"]["summary"]
    assert s == report["ifbench"]["summary"] and s["n_prompts"] == 2 and s["n_total"] == 66
    printed = capsys.readouterr().out
    assert "== ifbench" in printed and "57 have only checkable instructions" in printed
    again = main(args + ["--resume"])
    assert again["ifbench"]["remembered_replies"] == 2
    assert [r["reply"] for r in again["ifbench"]["results"]] == [r["reply"] for r in report["ifbench"]["results"]]
