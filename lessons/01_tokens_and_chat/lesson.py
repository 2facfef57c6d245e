# %% [markdown]
# # Lesson 01: tokens and the chat template
#
# Text -> byte symbols -> pieces -> merges -> ids, then a conversation -> one ChatML
# string -> ids with an assistant mask. The derivation is in README.md beside this file.

# %%
import json
from pathlib import Path

from nanoagent.tokenizer import DEFAULT_SYSTEM, Tokenizer, render_chat, tools_system_prompt
from nanoagent.weights import resolve

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
FIXTURES = HERE.parents[1] / "tests" / "fixtures"

tok = Tokenizer.from_file(resolve() / "tokenizer.json")  # SmolLM2's tokenizer (weights obtained on first use)
print("vocabulary:", tok.vocab_size, "ids")

# %% [markdown]
# ## 1. Ids and the pieces they stand for

# %%
text = "Hello, world! In 2024 I'll pay $1,000 for a café."
ids = tok.encode(text)
print(ids)
print([tok.tok.id_to_token(i) for i in ids])
print(repr(tok.decode(ids)))

# %% [markdown]
# ## 2. Bytes as printable symbols
# GPT-2's byte-level map: printable Latin-1 bytes stand for themselves, the other 68
# bytes take the characters from U+0100 on, in order.

# %%
PRINTABLE = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
SYMBOL, shifted = {}, 0
for b in range(256):
    if b in PRINTABLE:
        SYMBOL[b] = chr(b)
    else:
        SYMBOL[b] = chr(256 + shifted)
        shifted += 1


def to_symbols(s: str) -> str:
    """text -> its UTF-8 bytes, each written as one printable symbol."""
    return "".join(SYMBOL[b] for b in s.encode("utf-8"))


print(len(PRINTABLE), "bytes stand for themselves;", repr(to_symbols(" é\n")), "is space, é, newline")

# %% [markdown]
# ## 3. Pre-tokenization: digits alone, then GPT-2's regex
# The library's pre-tokenizer returns the pieces already written in byte symbols;
# joined, they are exactly our `to_symbols(text)`.

# %%
pretokenize = tok.tok.pre_tokenizer.pre_tokenize_str
pieces = [p for p, _ in pretokenize(text)]
print(pieces)
assert "".join(pieces) == to_symbols(text)

# %% [markdown]
# ## 4. Merges, by hand
# Start from the symbols of a piece; merge the best-ranked adjacent pair everywhere;
# repeat until no adjacent pair has a rank. Each remaining symbol is a vocabulary entry.

# %%
spec = json.loads(tok.tok.to_str())
VOCAB = spec["model"]["vocab"]  # entry -> id
MERGES = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
RANK = {pair: r for r, pair in enumerate(MERGES)}
print(len(MERGES), "merges; the first five:", MERGES[:5])


def bpe(piece: str, trace=None) -> list[str]:
    symbols = list(piece)
    while len(symbols) > 1:
        rank, a, b = min((RANK.get(pair, len(RANK)), *pair) for pair in zip(symbols, symbols[1:]))
        if rank == len(RANK):  # no adjacent pair is a merge
            break
        merged, i = [], 0
        while i < len(symbols):  # merge every (a, b), left to right
            if symbols[i] == a and i + 1 < len(symbols) and symbols[i + 1] == b:
                merged.append(a + b)
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
        if trace is not None:
            trace.append(" ".join(symbols))
    return symbols


def hand_encode(text: str) -> list[int]:
    """text without special tokens -> ids: pre-tokenize, then BPE each piece."""
    return [VOCAB[s] for p, _ in pretokenize(text) for s in bpe(p)]


steps = []
bpe(to_symbols(" tokenization"), steps)
print("\n".join(steps))
print(hand_encode(text) == ids)

# %% [markdown]
# ## 5. Special tokens are matched first, one id each

# %%
print([(i, tok.tok.id_to_token(i)) for i in range(17)])
print(tok.encode("<|im_start|>user\nHi<|im_end|>"))

# %% [markdown]
# ## 6. Against the reference ids
# `ids_hub` come from SmolLM2's own pre-tokenizer over the same vocabulary and merges.
# The hand BPE is run on the strings without special tokens (matching those is not BPE).

# %%
cases = json.loads((FIXTURES / "tokenizer_reference.json").read_text(encoding="utf-8"))
package_ok = sum(tok.encode(c["text"]) == c["ids_hub"] for c in cases)
plain = [c for c in cases if not any(tok.tok.id_to_token(i) in c["text"] for i in range(17))]
hand_ok = sum(hand_encode(c["text"]) == c["ids_hub"] for c in plain)
print(f"package: {package_ok}/{len(cases)} strings, hand BPE: {hand_ok}/{len(plain)} strings")
for c in cases[3:6]:
    print(f"{c['text']!r:45} {c['ids_hub'][:12]}")

# %% [markdown]
# ## 7. The chat template
# No system message: SmolLM2's default one comes first. The generation prompt asks for a reply.

# %%
question = [{"role": "user", "content": "What is the capital of France?"}]
print(render_chat(question))
expected = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
print(len(tok.encode(render_chat(question))), "tokens")

# %% [markdown]
# ## 8. Tools, calls and results
# An OpenAI-style conversation: the tool list, an assistant message with `tool_calls`,
# a `tool` message with the result, and the final answer.

# %%
calculator = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}
conversation = [
    {"role": "user", "content": "What is 12*7?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "calculator", "arguments": '{"expression": "12*7"}'}}]},
    {"role": "tool", "content": "84"},
    {"role": "assistant", "content": "12*7 = 84."},
]
rendered = render_chat(conversation, tools=[calculator], add_generation_prompt=False)
print(rendered)

system = tools_system_prompt([calculator])
expected_tools = (
    f"<|im_start|>system\n{system}<|im_end|>\n"
    "<|im_start|>user\nWhat is 12*7?<|im_end|>\n"
    '<|im_start|>assistant\n<tool_call>[{"name": "calculator", "arguments": {"expression": "12*7"}}]</tool_call>'
    "<|im_end|>\n"
    "<|im_start|>user\n<tool_result>84</tool_result><|im_end|>\n"
    "<|im_start|>assistant\n12*7 = 84.<|im_end|>\n")
tools_json = json.dumps([calculator["function"]])  # bare {name, description, parameters}
print("tools JSON in the system prompt:", f"<tools>{tools_json}</tools>" in system)

# %% [markdown]
# ## 9. The assistant mask
# `encode_chat` -> (ids, mask). Below, masked tokens are shown in [brackets]: only the
# assistant's content and its `<|im_end|>`.

# %%
chat_ids, mask = tok.encode_chat(conversation, tools=[calculator], add_generation_prompt=False)
skip = len(tok.encode(f"<|im_start|>system\n{system}<|im_end|>\n"))  # the long system turn, shown above
print("".join(f"[{tok.decode([i])}]" if m else tok.decode([i]) for i, m in zip(chat_ids[skip:], mask[skip:])))

# the masked runs, decoded, are exactly the two replies each with its <|im_end|>
def masked_runs(ids, mask):
    """The runs of tokens under the mask, each decoded."""
    runs, current = [], []
    for i, m in zip(ids, mask):
        if m:
            current.append(i)
        elif current:
            runs.append(tok.decode(current))
            current = []
    return runs + ([tok.decode(current)] if current else [])


runs = masked_runs(chat_ids, mask)
replies = ['<tool_call>[{"name": "calculator", "arguments": {"expression": "12*7"}}]</tool_call><|im_end|>',
           "12*7 = 84.<|im_end|>"]
print(runs)
print(f"{int(mask.sum())} of {len(chat_ids)} tokens carry loss")

# %% [markdown]
# A reply marked `"weight": 0` is context too: shown, never a target. The recovery rows of the
# training data use it for a wrong call and the tool's error, so that the model learns to mend
# a call without learning the mistake.

# %%
wrong = {"role": "assistant", "content": "", "weight": 0,
         "tool_calls": [{"name": "calculator", "arguments": {"expression": "12 x 7"}}]}
error = {"role": "tool", "content": "Error: calculator failed: CalculatorError: "
                                    "cannot read '12 x 7' as arithmetic; did you mean '12*7'?"}
mended_ids, mended_mask = tok.encode_chat(conversation[:1] + [wrong, error] + conversation[1:], tools=[calculator],
                                          add_generation_prompt=False)
mended_runs = masked_runs(mended_ids, mended_mask)
print(mended_runs)  # the same two replies: the wrong call is not among them

# %% [markdown]
# ## Check

# %%
if package_ok != len(cases) or hand_ok != len(plain):
    raise AssertionError(f"ids differ from the reference: package {package_ok}/{len(cases)}, "
                         f"hand BPE {hand_ok}/{len(plain)}")
if render_chat(question) != expected or DEFAULT_SYSTEM not in expected:
    raise AssertionError("the plain chat does not render as SmolLM2's template")
if rendered != expected_tools or tools_json not in system:
    raise AssertionError("the tools chat does not render as expected")
if runs != replies:
    raise AssertionError(f"the assistant mask covers {runs}, expected {replies}")
if mended_runs != replies or "12 x 7" not in tok.decode(mended_ids):
    raise AssertionError(f"with a reply of weight 0 the mask covers {mended_runs}, expected {replies}")
print(f"OK ids match the reference on {package_ok}/{len(cases)} strings (hand BPE {hand_ok}/{len(plain)}); "
      f"chats render as expected; mask = {int(mask.sum())} assistant tokens of {len(chat_ids)}")
