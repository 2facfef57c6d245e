"""Verifiable-instruction prompts (data/instructions.py), their reward (rewards.instruction_reward), GRPO on them
(`rl --task instructions`) and rejection sampling (`rl --task instructions --rejection N`), on the shipped data
samples and the tiny model."""
import inspect
import json
from itertools import combinations

import numpy as np
import pytest

from nanoagent import rl, train
from nanoagent.checkpoint import read_tokenizer
from nanoagent.data.benchmarks import eval_prompts, ifeval_items
from nanoagent.data.clean import normalize_text
from nanoagent.data.instructions import CONSTRAINTS, WRITING_TASKS, clash, gsm8k_questions, instruction_items
from nanoagent.eval.ifeval import CHECKERS, check_instruction
from nanoagent.tuner.prompts import instruction_prompts
from nanoagent.tuner.rejection import DECLINES, best_reply
from nanoagent.tuner.repair import repair
from nanoagent.tuner.rewards import instruction_problem, instruction_reward


# ---- the prompts ---------------------------------------------------------------------------------------------

def test_items_are_deterministic_and_in_ifevals_form(data_dir):
    items, counts = instruction_items(data_dir, 60, seed=3)
    again, _ = instruction_items(data_dir, 60, seed=3)
    other, _ = instruction_items(data_dir, 60, seed=4)
    assert items == again and items != other
    assert counts == {"writing": 20, "gsm8k": 20, "tool requests": 20, "blocked": 0}
    assert [it["key"] for it in items] == list(range(60))
    for it in items:
        assert set(it) == {"key", "prompt", "instruction_id_list", "kwargs"}
        assert 1 <= len(it["instruction_id_list"]) == len(it["kwargs"]) <= 3
        assert instruction_problem(it) is None
    assert any(it["prompt"].startswith(task) for it in items for task in WRITING_TASKS)
    assert any(it["prompt"].startswith(q) for it in items for q in gsm8k_questions(data_dir))
    many, _ = instruction_items(data_dir, 400, seed=0)
    assert len({i for it in many for i in it["instruction_id_list"]}) >= 12
    assert {len(it["instruction_id_list"]) for it in many} == {1, 2, 3}
    alone, counts = instruction_items(None, 5)  # no data folder: the writing tasks alone
    assert counts["writing"] == 5 and all(any(it["prompt"].startswith(t) for t in WRITING_TASKS) for it in alone)


def named_params(fn) -> set[str]:
    """A checker's keyword arguments (not the reply, not its catch-all **_)."""
    return {p.name for p in list(inspect.signature(fn).parameters.values())[1:] if p.kind != p.VAR_KEYWORD}


def test_every_constraint_takes_the_checkers_kwargs(data_dir):
    """Each kwargs dict names exactly the checker's arguments (a misspelt one would be swallowed by its **_
    and the instruction checked with no argument), and the checker decides on a reply with them."""
    assert set(CONSTRAINTS) <= set(CHECKERS) and len(CONSTRAINTS) >= 12
    items, _ = instruction_items(data_dir, 400, seed=1)
    seen = set()
    for it in items:
        for iid, kw in zip(it["instruction_id_list"], it["kwargs"]):
            assert set(kw) == named_params(CHECKERS[iid]), (iid, kw)
            assert all(v is not None for v in kw.values()) and json.loads(json.dumps(kw)) == kw
            assert check_instruction(iid, "A short reply, with a comma.", kw) in (True, False), (iid, kw)
            seen.add(iid)
    assert seen == set(CONSTRAINTS)  # every kind is drawn


def test_blocked_prompts_do_not_survive(data_dir, tmp_path):
    """A GSM8K question that is an IFEval prompt (and writing tasks blocked on purpose) are dropped and counted."""
    ifeval = ifeval_items(data_dir / "ifeval" / "input_data.jsonl")
    folder = tmp_path / "data"
    (folder / "gsm8k").mkdir(parents=True)
    (folder / "toolcalls").symlink_to(data_dir / "toolcalls")
    questions = [ifeval[0]["prompt"], "A baker has 12 rolls and sells 5. How many are left?"]
    (folder / "gsm8k" / "train.jsonl").write_text("".join(json.dumps({"question": q}) + "\n" for q in questions))
    blocked = eval_prompts(data_dir, fetch_bfcl=False) | {normalize_text(t) for t in WRITING_TASKS[:10]}
    assert normalize_text(ifeval[0]["prompt"]) in blocked
    items, counts = instruction_items(folder, 90, seed=0, blocked=blocked)
    assert counts["blocked"] == 11 and len(items) == 90
    prompts = [normalize_text(it["prompt"]) for it in items]
    assert not any(p.startswith(b) for p in prompts for b in blocked)
    assert sum(p.startswith("a baker has 12 rolls") for p in prompts) == 30  # the other question, every turn
    unblocked, counts = instruction_items(folder, 90, seed=0)
    assert counts["blocked"] == 0 and any(normalize_text(it["prompt"]).startswith(normalize_text(ifeval[0]["prompt"]))
                                          for it in unblocked)


NEVER = [  # kinds a prompt may not join: they cannot both hold, or read as a contradiction
    ("change_case:english_lowercase", "change_case:english_capital"),
    ("change_case:english_lowercase", "change_case:capital_word_frequency"),
    ("change_case:english_capital", "change_case:capital_word_frequency"),
    ("detectable_format:json_format", "detectable_format:number_bullet_lists"),
    ("detectable_format:json_format", "combination:two_responses"),
    ("detectable_format:json_format", "punctuation:no_comma"),
    ("startend:quotation", "startend:end_checker"),
    ("startend:end_checker", "detectable_content:postscript"),
    ("length_constraints:number_words", "length_constraints:number_sentences"),
    ("combination:two_responses", "length_constraints:number_paragraphs"),
]


def test_no_prompt_holds_a_contradictory_pair(data_dir):
    items, _ = instruction_items(data_dir, 800, seed=2)
    pairs = {frozenset(p) for it in items for p in combinations(it["instruction_id_list"], 2)}
    assert all(len(p) == 2 for p in pairs)  # no kind twice
    assert not pairs & {frozenset(p) for p in NEVER}
    assert all(clash(a, b) and clash(b, a) for a, b in NEVER)
    assert not clash("punctuation:no_comma", "keywords:existence") and len(pairs) > 100


def test_the_cli_writes_the_prompts(data_dir, tmp_path, monkeypatch, capsys):
    from nanoagent.data import __main__ as data_cli
    monkeypatch.setattr(data_cli, "eval_prompts", lambda d, bfcl_dir: eval_prompts(d, fetch_bfcl=False))  # offline
    out = tmp_path / "instructions.jsonl"
    data_cli.main(["instructions", "--n", "12", "--out", str(out), "--data-dir", str(data_dir), "--seed", "5"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == instruction_items(data_dir, 12, seed=5)[0]
    assert "12 instruction prompts" in capsys.readouterr().out


# ---- the reward ----------------------------------------------------------------------------------------------

def item(*pairs):
    return {"key": 0, "prompt": "Describe a harbor.", "instruction_id_list": [i for i, _ in pairs],
            "kwargs": [kw for _, kw in pairs]}


CASES = [  # (item, a reply that follows both instructions, one that breaks the first only)
    (item(("punctuation:no_comma", {}), ("keywords:existence", {"keywords": ["harbor", "lantern"]})),
     "The harbor sleeps under a lantern.", "The harbor sleeps, lit by a lantern."),
    (item(("change_case:english_lowercase", {}), ("detectable_format:title", {})),
     "<<night harbor>>\nboats rock in the dark water.", "<<night harbor>>\nBoats rock in the dark water."),
    (item(("startend:end_checker", {"end_phrase": "Hope this helps."}),
          ("detectable_format:number_bullet_lists", {"num_bullets": 2})),
     "* boats\n* gulls\nHope this helps.", "* boats\n* gulls\nHope this helps. Bye."),
    (item(("detectable_format:json_format", {}), ("keywords:forbidden_words", {"forbidden_words": ["very"]})),
     '{"harbor": "calm"}', 'The harbor is calm.'),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_instruction_reward_is_the_share_followed_and_the_format(case):
    it, good, half = CASES[case]
    r = instruction_reward(good, "stop", it)
    assert (r.correct, r.format, r.total, r.reason) == (1.0, 1.0, 1.2, "")
    assert instruction_reward(good, "stop", it, format_weight=0.0).total == 1.0
    r = instruction_reward(half, "stop", it)
    assert (r.correct, r.format) == (0.5, 1.0) and it["instruction_id_list"][0] in r.reason
    cut = instruction_reward(good, "length", it)  # did not end at <|im_end|>
    assert (cut.correct, cut.format, cut.total) == (1.0, 0.0, 1.0)


def test_a_tool_call_is_bad_format_and_bad_items_are_named():
    it = CASES[0][0]
    r = instruction_reward('The harbor lantern. <tool_call>[{"name": "f", "arguments": {}}]</tool_call>', "stop", it)
    assert r.format == 0.0 and "<tool_call>" in r.reason
    assert instruction_reward("", "stop", it).correct == 0.0  # an empty reply follows nothing
    assert instruction_problem({"prompt": "Hi", "instruction_id_list": ["no:such_kind"], "kwargs": [{}]}) == \
        "instruction unknown to the checker: no:such_kind"
    assert instruction_problem({"prompt": "Hi", "instruction_id_list": ["punctuation:no_comma"], "kwargs": []}) == \
        "kwargs not one dict per instruction"
    assert instruction_problem({"messages": []}) == "no prompt"


# ---- GRPO and rejection sampling on the tiny model -----------------------------------------------------------

def write_items(path, items):
    path.write_text("".join(json.dumps(it) + "\n" for it in items))
    return path


def grpo_args(folder, data, out, *extra):
    return ["--task", "instructions", "--model", str(folder), "--data", str(data), "--out", str(out), "--group", "4",
            "--prompts", "2", "--steps", "2", "--max-new-tokens", "8", "--temperature", "1.5", "--lr", "1e-3",
            "--beta", "0.1", "--batch-size", "4", "--quiet", *extra]


def test_grpo_on_instruction_prompts_runs_and_resumes(tiny_long, data_dir, tmp_path):
    items, _ = instruction_items(data_dir, 4, seed=0)
    data = write_items(tmp_path / "items.jsonl", items + [{"prompt": "Hi", "instruction_id_list": ["no:such_kind"],
                                                           "kwargs": [{}]}])
    tok = read_tokenizer(tiny_long)
    prompts, skipped = instruction_prompts([json.loads(x) for x in data.read_text().splitlines()], tok, 10_000,
                                              system="Be brief.")
    assert [p.item for p in prompts] == items and skipped == {"instruction unknown to the checker: no:such_kind": 1}
    assert tok.decode(prompts[0].ids).startswith("<|im_start|>systemBe")  # the tiny vocabulary has no space
    full = rl.run(grpo_args(tiny_long, data, tmp_path / "a"))
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert full["done"] and log == full["history"] and [h["step"] for h in log] == [1, 2]
    assert {"reward", "strict", "format", "kl", "kept_groups"} <= set(log[0]) and "correct" not in log[0]
    assert all(0 <= h["strict"] <= 1 and 0 <= h["format"] <= 1 and h["kept_groups"] + h["skipped_groups"] == 2
               for h in log)
    assert all(h["reward"] == pytest.approx(h["strict"] + 0.2 * h["format"]) for h in log)
    # stopped after one round and resumed with no flags but --resume: the checkpoint keeps --task
    part = rl.run(grpo_args(tiny_long, data, tmp_path / "b", "--stop-after", "1"))
    assert not part["done"]
    rest = rl.run(["--resume", "--out", str(tmp_path / "b"), "--quiet"])
    strip = lambda hs: [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in hs]
    assert rest["done"] and strip(rest["history"]) == strip(full["history"])
    with pytest.raises(SystemExit):
        rl.parse_args(grpo_args(tiny_long, data, tmp_path / "c", "--balance"))
    with pytest.raises(SystemExit) as e:
        rl.main(grpo_args(tiny_long, data_dir / "gsm8k" / "train.jsonl", tmp_path / "d"))
    assert "makes an instruction prompt (100 no prompt)" in str(e.value)


def test_rejection_sampling_writes_what_train_reads(tiny_long, tmp_path, capsys):
    """One item any reply that stops follows (fewer than 1000 q's), one no random reply can follow (a word of
    ten letters): the first gets a training chat, the second none."""
    easy = item(("keywords:letter_frequency", {"letter": "q", "let_relation": "less than", "let_frequency": 1000}))
    hard = item(("keywords:existence", {"keywords": ["lighthouse"]}))
    data = write_items(tmp_path / "items.jsonl", [{**easy, "prompt": "Say anything."}, hard])
    argv = ["--task", "instructions", "--rejection", "8", "--model", str(tiny_long), "--data", str(data),
            "--out", str(tmp_path / "rs"), "--max-new-tokens", "40", "--quiet"]
    out = tmp_path / "rs" / "rejection.jsonl"
    assert rl.run(argv) == {"prompts": 2, "passed": 1, "repaired": 0, "data": str(out)}
    assert "1 of 2 prompts got a right reply in 8 samples" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["source"] == "rejection"
    user, reply = rows[0]["messages"]
    assert user == {"role": "user", "content": "Say anything."} and reply["role"] == "assistant"
    assert instruction_reward(reply["content"], "stop", easy).total == 1.2
    first = out.read_text()
    rl.run(argv)
    assert out.read_text() == first  # the same seed samples the same replies
    assert not (tmp_path / "rs" / "checkpoint").exists()  # nothing trained
    ft = train.run(["--model", str(tiny_long), "--data", str(out), "--eval-data", str(out), "--steps", "1",
                    "--grad-accum", "1", "--out", str(tmp_path / "ft"), "--quiet"])
    assert ft["done"] and np.isfinite(ft["history"][0]["loss"]) and ft["history"][0]["tokens"] > 0
    hard_only = write_items(tmp_path / "hard.jsonl", [hard])
    with pytest.raises(SystemExit) as e:  # nothing passes: an error, no file
        rl.main(["--task", "instructions", "--rejection", "2", "--model", str(tiny_long), "--data", str(hard_only),
                 "--out", str(tmp_path / "none"), "--max-new-tokens", "4", "--quiet"])
    assert "nothing written" in str(e.value) and not (tmp_path / "none").exists()
    for wrong in (["--rejection", "0"], ["--task", "toolcalls", "--repair"], ["--per-kind", "5"]):
        with pytest.raises(SystemExit):
            rl.parse_args(argv + wrong)
    with pytest.raises(SystemExit):  # --repair mends rejection sampling's replies: nothing to mend in GRPO
        rl.parse_args([a for a in argv if a not in ("--rejection", "8")] + ["--repair"])


# ---- replies mended to follow their instructions (repair.py) -----------------------------------------

REPLY = ("The lighthouse stands on the rocks, tall and white. Its beam sweeps over the dark water. Ships see it "
         "from far away! The keeper climbs the stairs each night. He lights the lamp with care.")
def follows_all(reply, it):
    return instruction_reward(reply, "stop", it).correct == 1.0


MENDABLE = [
    ("change_case:english_lowercase", {}), ("change_case:english_capital", {}),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3}),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 20}),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2}),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}),
    ("detectable_format:title", {}), ("detectable_content:postscript", {"postscript_marker": "P.P.S"}),
    ("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"}),
    ("punctuation:no_comma", {}), ("detectable_format:json_format", {}), ("startend:quotation", {}),
]


@pytest.mark.parametrize("kind", MENDABLE, ids=[k for k, _ in MENDABLE])
def test_a_broken_form_is_mended_and_the_words_kept(kind):
    one = item(kind)
    assert not follows_all(REPLY, one)  # the reply breaks it as written
    mended = repair(REPLY, one)
    assert mended is not None and follows_all(mended, one)
    assert "sweeps over the dark water" in mended.lower().replace(",", "")  # a mechanical edit, not a new reply


def test_edits_compose_and_what_has_no_edit_must_already_hold():
    three = item(("detectable_format:title", {}), ("change_case:english_lowercase", {}),
                 ("startend:quotation", {}))
    mended = repair(REPLY, three)
    assert mended.startswith('"<<the lighthouse stands on>>') and mended.endswith('care."')
    assert follows_all(mended, three)
    assert repair(REPLY, item(("keywords:existence", {"keywords": ["whistle"]}))) is None  # no edit adds words
    assert repair(REPLY, item(("keywords:existence", {"keywords": ["keeper"]}))) == REPLY  # it holds already
    too_short = item(("detectable_format:number_bullet_lists", {"num_bullets": 9}))
    assert repair(REPLY, too_short) is None  # five sentences make no nine bullets
    two = item(("combination:two_responses", {}))
    assert repair(REPLY, two) is None and repair(REPLY, two, other=REPLY) is None  # the second must differ
    assert follows_all(repair(REPLY, two, other="A calm night at sea."), two)


def test_rejection_sampling_keeps_a_passing_reply_before_mending_one():
    quiet = "the night is calm and the sea is quiet."
    lower = item(("change_case:english_lowercase", {}))
    assert best_reply([(REPLY, "stop"), (quiet, "stop")], lower, mend=True) == (quiet, "rejection")
    assert best_reply([(REPLY, "stop")], lower) is None
    assert best_reply([(REPLY, "stop")], lower, mend=True) == (REPLY.lower(), "repaired")
    assert best_reply([(REPLY, "length")], lower, mend=True) is None  # a reply cut off is not mended
    declined = "I'm afraid that is beyond the tool available to me, which can find recipes."
    assert best_reply([(declined, "stop")], lower, mend=True) is None  # passes once lowercased, but declines
    assert best_reply([(declined, "stop"), (REPLY, "stop")], lower, mend=True) == (REPLY.lower(), "repaired")
    assert not DECLINES.search("The tool shed is beyond the garden; I have tools in the shed.")
