# %% [markdown]
# # Lesson 15: the data and the yardstick
#
# Rows from many datasets become one chat form; duplicates and near duplicates go; the
# mix is counted; and the evaluation reads a model's replies the way BFCL and IFEval do.
# The ideas are in README.md beside this file. Set NANOAGENT_LESSON_QUICK=1 for a fast run.

# %%
import json
import os
from pathlib import Path

import numpy as np

from nanoagent.agent import ScriptedModel
from nanoagent.data import adapters as A
from nanoagent.data.clean import MinHashLSH, jaccard, vary_tools
from nanoagent.data.io import find_data_dir
from nanoagent.data.benchmarks import eval_prompts
from nanoagent.data.mix import LOCAL, Options, build, stats_table
from nanoagent.eval import bfcl, ifeval
from nanoagent.tokenizer import render_chat

QUICK = os.environ.get("NANOAGENT_LESSON_QUICK") == "1"
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
SAMPLES = HERE.parents[1] / "tests" / "fixtures" / "data"  # the small samples shipped with the tests
DATA = find_data_dir(required=False)  # $NANOAGENT_DATA, or shared/data beside the checkout
if DATA is None:  # a fresh clone
    DATA = SAMPLES
    print("no data folder found: using the small samples shipped in tests/fixtures/data")
else:
    print(f"data folder: {DATA}")

# %% [markdown]
# ## 1. Every source into one form
# xLAM keeps its tools as JSON strings with Python-ish types; hermes writes calls as Python
# dicts inside `<tool_call>` tags. Both become `messages` + `tools`, rendered in the NanoAgent
# format. A call to a tool the row does not declare is dropped, with its reason.

# %%
xlam_row = {"query": "What is 15% of 80?",
            "tools": json.dumps([{"name": "percent", "description": "p% of x",
                                  "parameters": {"p": {"type": "float"}, "x": {"type": "float"},
                                                 "round_to": {"type": "int, optional"}}}]),
            "answers": json.dumps([{"name": "percent", "arguments": {"p": 15, "x": 80}}])}
chat = A.xlam(xlam_row)
print(json.dumps(chat["tools"][0]["parameters"]))
print(render_chat(chat["messages"], chat["tools"], add_generation_prompt=False)[-120:])

hermes_row = {"conversations": [
    {"from": "system", "value": "<tools> [{'type': 'function', 'function': {'name': 'percent', 'parameters': {}}}] </tools>"},
    {"from": "human", "value": "15% of 80?"},
    {"from": "gpt", "value": "<tool_call>\n{'arguments': {'p': 15, 'x': 80}, 'name': 'percentage'}\n</tool_call>"}]}
try:
    A.hermes(hermes_row)
    dropped = None
except A.Drop as e:
    dropped = e.reason
print("hermes row with a misnamed call:", dropped)

# %% [markdown]
# ## 2. Near duplicates with MinHash
# Each chat becomes a set of word 5-grams. The share of equal MinHash values between two
# signatures estimates their Jaccard similarity; LSH bands find the candidates without
# comparing every pair.

# %%
a = ("Hi, I need to convert 500 US dollars to euros. Can you help me with that? "
     "I am travelling next week and want to know how much I will have to spend.")
b = a.replace("next week", "next month")
lsh = MinHashLSH(num_perm=256, bands=32, threshold=0.5)
est = float(np.mean(lsh.signature(a) == lsh.signature(b)))
exact = jaccard(a, b)
print(f"Jaccard exact {exact:.3f}, MinHash estimate {est:.3f}")
print("b is a near duplicate of a:", (lsh.add(a), lsh.add(b)))

# %% [markdown]
# ## 3. The local mix, counted
# The glaive sample and GSM8K from the data folder (or the samples shipped with the tests);
# the eval prompts are kept out.
# Tool chats get shuffled tools, sometimes distractor tools and a varied system prompt.

# %%
recipe = [s if s.name != "gsm8k" else type(s)(**{**s.__dict__, "limit": 20 if QUICK else 200}) for s in LOCAL]
blocked = eval_prompts(DATA, fetch_bfcl=not QUICK)
rows, stats = build(recipe, DATA, None, Options(), blocked, limit=60 if QUICK else None)
print(stats_table(stats))
example = next(r for r in rows if r.get("tools"))
print([t["name"] for t in example["tools"]], example["messages"][0]["content"][:60])
shown = vary_tools(example, np.random.default_rng(1), [{"name": "distractor", "description": "", "parameters": {}}],
                   p_distractor=1.0)
print([t["name"] for t in shown["tools"]])

# %% [markdown]
# ## 4. Reading a reply as BFCL does
# Name, required and unknown parameters, types (an int passes for a float), allowed values
# after normalisation, calls matched in any order. Here a scripted model answers real items.

# %%
folder = bfcl.bfcl_data_dir()
item = bfcl.load_category(folder, "parallel")[0]
print(item["messages"][0]["content"])
print(json.dumps(item["ground_truth"]))
right = [{"name": n, "arguments": {p: v[0] for p, v in params.items() if v[0] != ""}}
         for gt in item["ground_truth"] for n, params in gt.items()]
replies = {"in order": right, "reversed": right[::-1], "one call": right[:1]}
verdicts = {k: bfcl.evaluate_item(ScriptedModel(["<tool_call>" + json.dumps(v) + "</tool_call>"]), item)["correct"]
            for k, v in replies.items()}
print(verdicts)

# %% [markdown]
# ## 5. Reading a reply as IFEval does
# Strict takes the reply as written; loose also tries it without its first or last line
# and without `*` markup, so a chatty preamble or bold text does not fail a format rule.

# %%
prompt = {"key": 0, "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
          "kwargs": [{}, {"num_words": 8, "relation": "at least"}]}
reply = "Sure, here you go:\nThe river runs quietly past the old stone mill tonight"
judged = ifeval.check_prompt(prompt, reply)
print("strict", judged["strict"], "loose", judged["loose"])

# %% [markdown]
# ## 6. What each kind of row teaches
# The agent recipe reads the public tool-calling sets (toolsets.py) beside glaive and the derived
# families, and chooses how many rows of each *kind* it writes: a single call, several calls in one
# reply, no call although tools are offered, asking for a missing value, a chain that reads tool
# results, plain chat. `row_kind` sorts a row by its shape alone; the mix prints the shares. The
# ablation in README.md beside this file trains on parts of the recipe and shows what each buys.

# %%
from nanoagent.data.__main__ import with_overrides
from nanoagent.data.mix import RECIPES, kinds_table, row_kind

agent = with_overrides(RECIPES["agent"], "agent", [], [], scale=0.05 if QUICK else 0.25)  # the shares, fewer rows
agent_rows, agent_stats = build(agent, DATA if (DATA / "toolcalls").is_dir() else SAMPLES, None, Options(), blocked)
print(kinds_table(agent_stats))
for kind in ("parallel", "no call", "chain"):
    row = next(r for r in agent_rows if row_kind(r) == kind)
    turns = " | ".join(f"{m['role']}: " + (json.dumps(m["tool_calls"])[:70] if m.get("tool_calls") else m["content"][:70])
                       for m in row["messages"][:4])
    print(f"{kind:8s} ({row['source']}, {len(row['tools'])} tools offered): {turns}")

# %% [markdown]
# ## Check

# %%
if chat["tools"][0]["parameters"]["required"] != ["p", "x"] or dropped != "undeclared tool":
    raise AssertionError("the adapters did not convert or drop as expected")
if abs(est - exact) > 0.1:
    raise AssertionError(f"MinHash estimate {est:.3f} is far from the exact Jaccard {exact:.3f}")
if any(s.read != s.kept + sum(s.dropped.values()) for s in stats.values()) or not rows:
    raise AssertionError("the mix's counts do not add up")
if verdicts != {"in order": True, "reversed": True, "one call": False}:
    raise AssertionError(f"BFCL verdicts {verdicts}")
if judged["strict"] != [False, True] or judged["loose"] != [True, True]:
    raise AssertionError(f"IFEval verdicts {judged}")
kinds = {row_kind(r) for r in agent_rows}
if not {"single, several offered", "parallel", "no call", "chain"} <= kinds:
    raise AssertionError(f"the agent recipe wrote only these kinds of row: {sorted(kinds)}")
print(f"OK mix of {len(rows)} chats; MinHash |est - exact| = {abs(est - exact):.3f}; "
      f"BFCL order-free match and IFEval loose check as expected")
