"""Tokens and the chat template: SmolLM2's byte-level BPE, its ChatML, and NanoAgent's tools prompt.

BPE itself is the `tokenizers` library's job; this file says which tokenizer SmolLM2 uses,
how a conversation becomes one string, and which of its tokens an assistant wrote (the
tokens that carry loss in fine-tuning). Lesson: lessons/01_tokens_and_chat/README.md.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

from .toolcalls import format_tool_calls

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
TOOLS_PREAMBLE = "You are a helpful AI assistant."
TOOLS_INSTRUCTIONS = """You can call the functions described inside <tools></tools> to help answer the user.

<tools>{tools}</tools>

To call functions, reply with one JSON list of calls, each with the function's name and its arguments, inside <tool_call></tool_call> tags:
<tool_call>[{{"name": "function_name", "arguments": {{"argument_name": "value"}}}}]</tool_call>
Each result comes back inside <tool_result></tool_result> tags. If no function fits, answer directly."""


# ---- the chat template -------------------------------------------------------------

def normalize_tools(tools: Iterable[dict] | None) -> list[dict]:
    """OpenAI `{"type": "function", "function": {...}}` or bare entries -> bare `{name, description, parameters}`."""
    out = []
    for t in tools or []:
        if not isinstance(t, dict):
            raise TypeError(f"a tool must be a dict with a name, got {type(t).__name__}")
        t = t.get("function", t) if t.get("type", "function") == "function" else t
        if "name" not in t:
            raise ValueError(f"tool {json.dumps(t)[:80]} has no 'name'")
        out.append({"name": t["name"], "description": t.get("description", ""),
                    "parameters": t.get("parameters", {"type": "object", "properties": {}})})
    return out


def tools_system_prompt(tools: Iterable[dict], system: str | None = None) -> str:
    """The system message with tools: the caller's prompt (or a short default) and the tools part."""
    part = TOOLS_INSTRUCTIONS.format(tools=json.dumps(normalize_tools(tools), ensure_ascii=False))
    return f"{system if system else TOOLS_PREAMBLE}\n\n{part}"


def chat_turns(messages: list[dict], tools: Iterable[dict] | None = None) -> list[tuple[str, str]]:
    """Messages -> the (role, content) turns the template writes, in the NanoAgent format.

    Tools go into the system turn; an assistant's `tool_calls` become a `<tool_call>` list;
    `role: "tool"` results become a user turn of `<tool_result>` blocks (consecutive results merged).
    """
    turns: list[tuple[str, str]] = []
    for m in messages:
        role, content = m.get("role"), m.get("content") or ""
        if role not in ("system", "user", "assistant", "tool"):
            raise ValueError(f"message role must be system, user, assistant or tool, got {role!r}")
        if not isinstance(content, str):
            raise TypeError(f"message content must be a string, got {type(content).__name__}")
        if role == "assistant" and m.get("tool_calls"):
            content = (content + "\n" if content else "") + format_tool_calls(m["tool_calls"])
        if role == "tool":
            block = f"<tool_result>{content}</tool_result>"
            if turns and turns[-1][0] == "user" and turns[-1][1].startswith("<tool_result>"):
                turns[-1] = ("user", turns[-1][1] + "\n" + block)
                continue
            role, content = "user", block
        turns.append((role, content))
    if tools:
        if turns and turns[0][0] == "system":
            turns[0] = ("system", tools_system_prompt(tools, turns[0][1]))
        else:
            turns.insert(0, ("system", tools_system_prompt(tools)))
    elif not turns or turns[0][0] != "system":
        turns.insert(0, ("system", DEFAULT_SYSTEM))
    return turns


def render_chat(messages: list[dict], tools=None, add_generation_prompt: bool = True) -> str:
    """SmolLM2's ChatML: `<|im_start|>{role}\\n{content}<|im_end|>\\n` per turn, then the generation prompt."""
    return render_chat_spans(messages, tools, add_generation_prompt)[0]


def render_chat_spans(messages, tools=None, add_generation_prompt=True) -> tuple[str, list[tuple[int, int]]]:
    """The rendered chat and the character spans an assistant wrote: each reply and its `<|im_end|>`.

    An assistant message marked `"weight": 0` (OpenAI's fine-tuning convention) is shown but not learned:
    its span is left out, as for a wrong call a row keeps only so that the model learns to mend it.
    """
    text, spans = "", []
    learned = iter([m.get("weight", 1) != 0 for m in messages if m.get("role") == "assistant"])
    for role, content in chat_turns(messages, tools):
        text += f"{IM_START}{role}\n"
        if role == "assistant" and next(learned):
            spans.append((len(text), len(text) + len(content) + len(IM_END)))
        text += f"{content}{IM_END}\n"
    if add_generation_prompt:
        text += f"{IM_START}assistant\n"
    return text, spans


def _jinja_set(name: str, text: str) -> str:
    """`{% set name = "text" %}`: a JSON string literal is a Jinja one (only \\n and \\" escapes here)."""
    return "{%- set " + name + " = " + json.dumps(text) + " -%}"


_TOOLS_BEFORE, _TOOLS_AFTER = TOOLS_INSTRUCTIONS.format(tools="\0").split("\0")

# render_chat as a Jinja chat template, for the tools that open our folders (transformers'
# apply_chat_template, llama.cpp and Ollama through GGUF export). tests/test_chat_template.py pins
# it to render_chat: same strings and token ids, with tools, tool calls and tool results.
# It is chat_turns line by line: a first pass builds the turns (a tool result merges into the
# previous user turn when that turn holds results), a second writes them. Every tag trims the
# whitespace around it, so the output is the expressions alone whatever trim settings a renderer
# uses. `tojson` is transformers' (json.dumps with ensure_ascii=False and its default separators),
# which is what tools_system_prompt and format_tool_calls write; jinja2's own `tojson` would escape
# <, >, & and '. Arguments given as a JSON string are written as given: Jinja cannot parse JSON, so
# the string equals render_chat's only when it is json.dumps(arguments, ensure_ascii=False).
CHAT_TEMPLATE = _jinja_set("default_system", DEFAULT_SYSTEM) + _jinja_set("tools_preamble", TOOLS_PREAMBLE) \
    + _jinja_set("tools_before", _TOOLS_BEFORE) + _jinja_set("tools_after", _TOOLS_AFTER) + r"""
{%- set ns = namespace(turns=[], calls=[], tools=[]) -%}
{%- for message in messages -%}
    {%- set role = message['role'] if 'role' in message else none -%}
    {%- set content = message['content'] if 'content' in message and message['content'] else '' -%}
    {%- if role not in ['system', 'user', 'assistant', 'tool'] -%}
        {{- raise_exception('message role must be system, user, assistant or tool') -}}
    {%- endif -%}
    {%- if content is not string -%}
        {{- raise_exception('message content must be a string') -}}
    {%- endif -%}
    {%- if role == 'assistant' and 'tool_calls' in message and message['tool_calls'] -%}
        {%- set ns.calls = [] -%}
        {%- for call in message['tool_calls'] -%}
            {%- set fn = call['function'] if 'function' in call else call -%}
            {%- set args = fn['arguments'] if 'arguments' in fn else {} -%}
            {%- set args = args if args is string else args | tojson -%}
            {%- set ns.calls = ns.calls + ['{"name": ' + fn['name'] | tojson + ', "arguments": ' + args + '}'] -%}
        {%- endfor -%}
        {%- set content = (content + '\n' if content else '') + '<tool_call>[' + ns.calls | join(', ') + ']</tool_call>' -%}
    {%- endif -%}
    {%- if role == 'tool' -%}
        {%- set block = '<tool_result>' + content + '</tool_result>' -%}
        {%- if ns.turns and ns.turns[-1][0] == 'user' and ns.turns[-1][1].startswith('<tool_result>') -%}
            {%- set ns.turns = ns.turns[:-1] + [['user', ns.turns[-1][1] + '\n' + block]] -%}
        {%- else -%}
            {%- set ns.turns = ns.turns + [['user', block]] -%}
        {%- endif -%}
    {%- else -%}
        {%- set ns.turns = ns.turns + [[role, content]] -%}
    {%- endif -%}
{%- endfor -%}
{%- if tools -%}
    {%- for tool in tools -%}
        {%- if tool is not mapping -%}
            {{- raise_exception('a tool must be a dict with a name') -}}
        {%- endif -%}
        {%- set kind = tool['type'] if 'type' in tool else 'function' -%}
        {%- set fn = tool['function'] if kind == 'function' and 'function' in tool else tool -%}
        {%- if 'name' not in fn -%}
            {{- raise_exception('a tool has no name') -}}
        {%- endif -%}
        {%- set ns.tools = ns.tools + [{'name': fn['name'],
                                        'description': fn['description'] if 'description' in fn else '',
                                        'parameters': fn['parameters'] if 'parameters' in fn
                                                      else {'type': 'object', 'properties': {}}}] -%}
    {%- endfor -%}
    {%- set part = tools_before + ns.tools | tojson + tools_after -%}
    {%- if ns.turns and ns.turns[0][0] == 'system' -%}
        {%- set system = ns.turns[0][1] if ns.turns[0][1] else tools_preamble -%}
        {%- set ns.turns = [['system', system + '\n\n' + part]] + ns.turns[1:] -%}
    {%- else -%}
        {%- set ns.turns = [['system', tools_preamble + '\n\n' + part]] + ns.turns -%}
    {%- endif -%}
{%- elif not ns.turns or ns.turns[0][0] != 'system' -%}
    {%- set ns.turns = [['system', default_system]] + ns.turns -%}
{%- endif -%}
{%- for turn in ns.turns -%}
    {{- '<|im_start|>' + turn[0] + '\n' + turn[1] + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
""".strip()


# ---- the tokenizer ------------------------------------------------------------------

class Tokenizer:
    """SmolLM2's tokenizer: `encode`/`decode` text, and render + encode chats with an assistant mask."""

    def __init__(self, tok: HFTokenizer):
        self.tok = tok
        self.vocab_size = tok.get_vocab_size()
        self.im_start_id = self._special_id(IM_START)
        self.im_end_id = self._special_id(IM_END)
        self.eos_id = self._special_id(ENDOFTEXT)
        self.stop_ids = (self.im_end_id, self.eos_id)

    def _special_id(self, token: str) -> int:
        i = self.tok.token_to_id(token)
        if i is None:
            raise ValueError(f"the tokenizer has no {token} token: it is not SmolLM2's tokenizer")
        return i

    @classmethod
    def from_file(cls, path: str | Path) -> "Tokenizer":
        try:
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise ValueError(f"{path} is not a valid tokenizer.json ({e}); delete it and obtain the weights again") from e

    def encode(self, text: str) -> list[int]:
        """Text -> ids; special tokens written in the text (`<|im_start|>`, ...) become their ids."""
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.tok.decode(list(map(int, ids)), skip_special_tokens=skip_special_tokens)

    def render_chat(self, messages, tools=None, add_generation_prompt=True) -> str:
        return render_chat(messages, tools, add_generation_prompt)

    def encode_chat(self, messages, tools=None, add_generation_prompt=True) -> tuple[list[int], np.ndarray]:
        """A chat -> (ids, mask): mask[i] is True where token i was written by the assistant (content + `<|im_end|>`)."""
        text, spans = render_chat_spans(messages, tools, add_generation_prompt)
        enc = self.tok.encode(text, add_special_tokens=False)
        starts = np.array([s for s, _ in enc.offsets], dtype=np.int64)
        mask = np.zeros(len(enc.ids), dtype=bool)
        for a, b in spans:
            mask |= (starts >= a) & (starts < b)
        return enc.ids, mask


# ---- building tokenizer.json from a GGUF file's vocabulary ---------------------------

def tokenizer_from_gguf_vocab(tokens: list[str], merges: list[str], token_types: list[int]) -> HFTokenizer:
    """SmolLM2's tokenizer rebuilt from GGUF metadata (`tokenizer.ggml.*`, pre-tokenizer 'smollm').

    Byte-level BPE over GPT-2's pre-tokenizer regex, with every digit split off first;
    control tokens (type 3: `<|endoftext|>`, `<|im_start|>`, ...) become special tokens.
    """
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges],
                                 fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = [t for t, kind in zip(tokens, token_types) if kind == 3]
    tok.add_special_tokens(specials)
    return tok


__all__ = ["Tokenizer", "render_chat", "render_chat_spans", "chat_turns", "tools_system_prompt", "CHAT_TEMPLATE",
           "normalize_tools", "tokenizer_from_gguf_vocab", "DEFAULT_SYSTEM",
           "IM_START", "IM_END", "ENDOFTEXT"]
