# %% [markdown]
# # Lesson 09: tool calls and the agent loop
#
# From a Python function to a JSON Schema the model reads, from the model's text to a
# parsed call, from a call to a checked, executed tool and back to the model. The idea
# and the design choices are in README.md beside this file.

# %%
import json

import nanoagent
from nanoagent.agent import Agent, calculator, parse_reply, run_call, tool, validate_arguments
from nanoagent.agent.scripted import ScriptedModel
from nanoagent.generate import stream_ids_text

# %% [markdown]
# ## 1. A tool is a function with a schema
# `@tool` reads the signature (names, type hints, defaults) and the docstring's `Args:`
# section. The function stays callable; `.schema` is what goes into `<tools></tools>`.

# %%
@tool
def convert_temperature(value: float, to: str = "fahrenheit") -> float:
    """Convert a temperature given in Celsius.

    Args:
        value: degrees Celsius
        to: "fahrenheit" or "kelvin"
    """
    return value * 9 / 5 + 32 if to == "fahrenheit" else value + 273.15


print(json.dumps(convert_temperature.schema, indent=2))
print(json.dumps(calculator.schema))

# %% [markdown]
# ## 2. What the model sees
# The chat template puts the tool schemas into the system turn, with the instruction to
# answer with `<tool_call>[...]</tool_call>`. We load the real model for its tokenizer here
# and for generation below.

# %%
model = nanoagent.load()
question = [{"role": "user", "content": "What is 17 * 23?"}]
print(model.tokenizer.render_chat(question, tools=[calculator.schema]))

# %% [markdown]
# ## 3. Reading calls out of what small models write
# The parser accepts the NanoAgent format and the ways small models drift from it; what
# it cannot read becomes an error message for the model, never an exception.

# %%
MESSY = [
    '<tool_call>[{"name": "calculator", "arguments": {"expression": "17*23"}}]</tool_call>',
    '<tool_call>{"name": "calculator", "arguments": {"expression": "17*23"}}</tool_call>',
    "<tool_call>[{'name': 'calculator', 'arguments': {'expression': '17*23'}}]</tool_call>",
    '<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"17*23\\"}"}</tool_call>',
    '```json\n{"name": "calculator", "arguments": {"expression": "17*23"}}\n```',
    '<think>I should compute.</think>Sure. <tool_call>[calculator(expression="17*23")]</tool_call>',
    '<tool_call>[{"name": "calculator", "arguments": {"expression": "17*23"',
    '<tool_call>[{"name": "calculator", "arguments": {"expression": "17*23",},}]</tool_call>',
]
parsed_ok = 0
for reply in MESSY:
    parsed = parse_reply(reply)
    parsed_ok += parsed.calls == [{"name": "calculator", "arguments": {"expression": "17*23"}}]
    print(f"{parsed.calls}  <- {reply[:60]!r}")
broken = parse_reply("<tool_call>calculator: 17*23</tool_call>")
print("unreadable ->", broken.errors)

# %% [markdown]
# ## 4. Checking the arguments against the schema
# Unambiguous slips are coerced (`"21.5"` for a number); everything else is an error
# that goes back to the model as the tool's result.

# %%
params = convert_temperature.parameters
print(validate_arguments({"value": "21.5"}, params))
print(validate_arguments({"value": "warm", "unit": "C"}, params))

# %% [markdown]
# ## 5. Running a call
# `run_call` validates, runs, and turns any failure into `Error: ...` text.

# %%
tools = {"calculator": calculator, "convert_temperature": convert_temperature}
for call in [{"name": "calculator", "arguments": {"expression": "17*23"}},
             {"name": "calculator", "arguments": {"expression": "__import__('os')"}},
             {"name": "convert_temperature", "arguments": {"value": 100, "to": "kelvin"}},
             {"name": "weather", "arguments": {}}]:
    print(run_call(call, tools))

# %% [markdown]
# ## 6. The loop, with a scripted model
# A stand-in model that replies from a list shows the whole loop without depending on
# what the real model happens to write: a malformed call, its error, the fixed call,
# the result, the answer.

# %%
scripted = ScriptedModel([
    "<tool_call>[{calculator: 17*23}]</tool_call>",
    '<tool_call>[{"name": "calculator", "arguments": {"expression": "17*23"}}]</tool_call>',
    "17 * 23 = 391.",
])
result = Agent(scripted, tools=[calculator]).run("What is 17 * 23?")
for m in result.messages:
    print(f"{m['role']:>9}: {m['content'][:100]}")

# %% [markdown]
# ## 7. The real model, one agent step
# SmolLM2-135M-Instruct before fine-tuning has not learned the format: it usually answers
# directly (and for arithmetic, often wrongly). Fine-tuning is what teaches it to call.

# %%
real = Agent(model, tools=[calculator], max_steps=1, max_new_tokens=16).run("What is 17 * 23?")
print("real model wrote:", repr(real.steps[0].reply), "| calls:", real.steps[0].calls)

# %% [markdown]
# ## 8. Forcing the start of a call
# If we write the beginning of the call ourselves and let the model fill in only the
# expression (stopping at the closing quote), the untuned model already produces a usable
# argument. This is the idea behind constrained decoding, and why a few hundred steps of
# fine-tuning on calls are enough to make it call on its own.

# %%
prefix = '<tool_call>[{"name": "calculator", "arguments": {"expression": "'
prompt = model.tokenizer.render_chat(question, tools=[calculator.schema]) + prefix
filled = "".join(stream_ids_text(model.model, model.tokenizer, model.tokenizer.encode(prompt), 12, stop=['"']))
forced = parse_reply(prefix + filled + '"}}]</tool_call>')
outcome = run_call(forced.calls[0], tools) if forced.calls else None
print("model filled in:", repr(filled), "->", outcome)

# %% [markdown]
# ## Check

# %%
if parsed_ok != len(MESSY):
    raise AssertionError(f"parsed {parsed_ok}/{len(MESSY)} messy replies")
if not broken.errors or broken.calls:
    raise AssertionError("an unreadable call must be an error, not a call")
if run_call({"name": "calculator", "arguments": {"expression": "17*23"}}, tools).content != "391":
    raise AssertionError("calculator(17*23) != 391")
if result.answer != "17 * 23 = 391." or [s.results[0].ok for s in result.steps[:2]] != [False, True]:
    raise AssertionError(f"scripted agent went wrong: {result}")
if len(real.steps) != 1 or real.messages[1]["role"] != "assistant" or not real.messages[1]["content"].strip():
    raise AssertionError("the real-model agent step did not produce a reply")
if outcome is None or not outcome.ok:
    raise AssertionError(f"the forced call did not run: {forced}, {outcome}")
print(f"OK parsed {parsed_ok}/{len(MESSY)} messy replies; scripted agent answered in {len(result.steps)} steps; "
      f"forced real-model call: calculator({forced.calls[0]['arguments']['expression']!r}) = {outcome.content}")
