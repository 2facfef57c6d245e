"""The chat template other tools read (tokenizer.CHAT_TEMPLATE) renders chats as render_chat does,
and every model folder the project writes, and every GGUF it exports, carries it.

The template is rendered with jinja2 alone, in an environment set up as transformers sets up
`apply_chat_template` (utils/chat_template_utils.py): a sandbox that lets no list or dict change,
trim_blocks and lstrip_blocks on, loopcontrols, `raise_exception`, and a `tojson` filter that is
json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False). That `tojson`
matters: jinja2's own escapes <, >, & and ' (as \\u003c ...), and tool schemas hold them.
"""
import json

import jinja2
import jinja2.ext
import pytest
from gguf import GGUFReader
from jinja2.sandbox import ImmutableSandboxedEnvironment

from conftest import load_tiny
from nanoagent import export, weights
from nanoagent.checkpoint import read_tokenizer, save_folder
from nanoagent.quantize import quantize_folder
from nanoagent.tokenizer import CHAT_TEMPLATE, DEFAULT_SYSTEM, render_chat
from nanoagent.train import save_checkpoint
from test_quant import tiny_folder


def hf_tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """transformers' `tojson` filter: non-ASCII kept, json.dumps' default separators, no HTML escaping."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def hf_raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def hf_environment(**options) -> jinja2.Environment:
    env = ImmutableSandboxedEnvironment(**({"trim_blocks": True, "lstrip_blocks": True} | options),
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = hf_tojson
    env.globals["raise_exception"] = hf_raise_exception
    return env


def apply_template(template, messages, tools=None, add_generation_prompt=True, **env_options) -> str:
    """What apply_chat_template(messages, tools=tools, tokenize=False) returns for this template."""
    return hf_environment(**env_options).from_string(template).render(
        messages=messages, tools=tools, add_generation_prompt=add_generation_prompt)


# ---- the chats ------------------------------------------------------------------------------

CALC = {"name": "calculator", "description": "Evaluate an arithmetic expression, e.g. 2 < 3 & 'x' > \"y\".",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                       "required": ["expression"]}}
WEATHER = {"type": "function", "function": {"name": "météo", "description": "Le temps qu'il fait à une ville (天気).",
                                            "parameters": {"type": "object",
                                                           "properties": {"ville": {"type": "string"}}}}}
NAMED_ONLY = {"name": "now"}  # no description, no parameters: both get their defaults


def call(name, arguments, as_string=False, openai=True):
    args = json.dumps(arguments, ensure_ascii=False) if as_string else arguments
    return {"id": f"call_{name}", "type": "function", "function": {"name": name, "arguments": args}} \
        if openai else {"name": name, "arguments": args}


ASK = {"role": "user", "content": "What is 12 * 7?"}
CALLED = {"role": "assistant", "content": None, "tool_calls": [call("calculator", {"expression": "12 * 7"})]}
RESULT = {"role": "tool", "tool_call_id": "call_calculator", "content": "84"}

CHATS = {  # name -> (messages, tools)
    "plain": ([{"role": "user", "content": "Hi!"}], None),
    "system prompt": ([{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Hi!"}], None),
    "empty system prompt": ([{"role": "system", "content": ""}, {"role": "user", "content": "Hi!"}], None),
    "multi-turn": ([{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."},
                    {"role": "user", "content": "How are you?"}, {"role": "assistant", "content": "Well, thanks."},
                    {"role": "user", "content": "Good."}], None),
    "non-ASCII": ([{"role": "user", "content": "Ünïcode: 日本語, emoji 🚀, <tags> & 'quotes'"},
                   {"role": "assistant", "content": "Ça va très bien — 好的."}], None),
    "no content": ([{"role": "user"}, {"role": "assistant", "content": None}], None),
    "OpenAI tools": ([ASK], [{"type": "function", "function": CALC}, WEATHER]),
    "bare tools": ([ASK], [CALC, NAMED_ONLY]),
    "tools and a system prompt": ([{"role": "system", "content": "Be brief."}, ASK], [CALC]),
    "tools and an empty system prompt": ([{"role": "system", "content": ""}, ASK], [CALC]),
    "empty tools": ([ASK], []),
    "tool call, dict arguments": ([ASK, CALLED], [CALC]),
    "tool call, string arguments": (
        [ASK, {"role": "assistant", "content": "", "tool_calls": [call("calculator", {"expression": "12 * 7"}, True)]}],
        [CALC]),
    "tool call, bare and no arguments": ([ASK, {"role": "assistant", "tool_calls": [{"name": "now"}]}], [NAMED_ONLY]),
    "text then several calls": (
        [ASK, {"role": "assistant", "content": "Let me check both.",
               "tool_calls": [call("calculator", {"expression": "12 * 7"}, openai=False),
                              call("météo", {"ville": "Zürich"}, as_string=True)]}],
        [CALC, WEATHER]),
    "one tool result": ([ASK, CALLED, RESULT, {"role": "assistant", "content": "12 * 7 = 84."}], [CALC]),
    "several tool results": (
        [ASK, {"role": "assistant", "tool_calls": [call("calculator", {"expression": "12 * 7"}),
                                                   call("météo", {"ville": "Zürich"})]},
         RESULT, {"role": "tool", "content": '{"temps": "ensoleillé", "°C": 21}'},
         {"role": "tool", "content": "third"}, {"role": "assistant", "content": "84, and sunny."}],
        [CALC, WEATHER]),
    "results of two rounds stay apart": (
        [ASK, CALLED, RESULT, {"role": "assistant", "tool_calls": [call("calculator", {"expression": "84 + 1"})]},
         {"role": "tool", "content": "85"}, {"role": "tool", "content": ""}], [CALC]),
    "a tool result after a user turn of results": (
        [{"role": "user", "content": "<tool_result>typed by the user</tool_result>"}, RESULT], None),
    "a tool result after a user turn": ([ASK, RESULT], None),
    "a later system turn": ([ASK, {"role": "system", "content": "Now answer in French."},
                             {"role": "user", "content": "Encore ?"}], [CALC]),
}


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("name", CHATS)
def test_the_template_renders_what_render_chat_renders(name, add_generation_prompt):
    messages, tools = CHATS[name]
    ours = render_chat(messages, tools, add_generation_prompt)
    assert apply_template(CHAT_TEMPLATE, messages, tools, add_generation_prompt) == ours
    # every tag trims its own whitespace, so a renderer without transformers' trim settings agrees
    assert apply_template(CHAT_TEMPLATE, messages, tools, add_generation_prompt,
                          trim_blocks=False, lstrip_blocks=False) == ours


def test_the_template_gives_our_token_ids(real_model):
    tok = real_model.tokenizer
    for name, (messages, tools) in CHATS.items():
        ids, _ = tok.encode_chat(messages, tools)
        assert tok.encode(apply_template(CHAT_TEMPLATE, messages, tools)) == ids, name


def test_the_template_is_smollm2s_for_plain_chats():
    """Without tools it is SmolLM2-Instruct's own ChatML, default system prompt included."""
    text = apply_template(CHAT_TEMPLATE, [{"role": "user", "content": "Hi!"}])
    assert text == f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n" \
                   "<|im_start|>assistant\n"


def test_string_arguments_are_written_as_given():
    """Jinja cannot parse JSON: a JSON-string `arguments` is written as it is, which equals render_chat
    (it re-serializes) when the string is json.dumps(arguments, ensure_ascii=False), as in the cases above.
    Another spelling of the same JSON renders as spelled."""
    spelled = '{"expression":"12 * 7"}'
    messages = [ASK, {"role": "assistant", "tool_calls": [{"function": {"name": "calculator", "arguments": spelled}}]}]
    theirs, ours = apply_template(CHAT_TEMPLATE, messages), render_chat(messages)
    assert f'"arguments": {spelled}}}]</tool_call>' in theirs
    assert theirs.replace(spelled, json.dumps(json.loads(spelled))) == ours


@pytest.mark.parametrize("messages,tools", [
    ([{"role": "robot", "content": "beep"}], None),
    ([{"content": "no role"}], None),
    ([{"role": "user", "content": ["a", "list"]}], None),
    ([ASK], [{"description": "no name"}]),
    ([ASK], ["not a dict"]),
])
def test_the_template_refuses_what_render_chat_refuses(messages, tools):
    with pytest.raises((ValueError, TypeError)):
        render_chat(messages, tools)
    with pytest.raises(jinja2.exceptions.TemplateError):
        apply_template(CHAT_TEMPLATE, messages, tools)


# ---- the folders and the GGUF that carry it ------------------------------------------------------

def folder_configs(folder):
    return (json.loads((folder / "tokenizer_config.json").read_text()),
            json.loads((folder / "generation_config.json").read_text()))


def assert_opens_as_ours(folder):
    """tokenizer_config.json holds our template (read from the file, it renders our ids) and the
    special tokens transformers needs; generation_config.json ends a reply at <|im_end|>."""
    tok_config, gen_config = folder_configs(folder)
    assert tok_config["chat_template"] == CHAT_TEMPLATE
    assert (tok_config["tokenizer_class"], tok_config["eos_token"], tok_config["pad_token"]) == \
        ("GPT2Tokenizer", "<|im_end|>", "<|im_end|>")
    tok = read_tokenizer(folder)
    assert (gen_config["bos_token_id"], gen_config["eos_token_id"], gen_config["pad_token_id"]) == \
        (1, tok.im_end_id, tok.im_end_id) == (1, 2, 2)
    for messages, tools in (CHATS["several tool results"], CHATS["non-ASCII"]):
        text = apply_template(tok_config["chat_template"], messages, tools)
        assert tok.encode(text) == tok.encode_chat(messages, tools)[0]
    return tok_config, gen_config


def test_a_written_folder_opens_as_ours(tmp_path):
    folder, _ = tiny_folder(tmp_path / "float")
    assert_opens_as_ours(folder)


def test_quantize_keeps_the_configs_other_keys(tmp_path):
    folder, _ = tiny_folder(tmp_path / "float")
    tok_config, gen_config = folder_configs(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config | {"chat_template": "{{ 'old' }}",
                                                                           "model_max_length": 64, "custom": 1}))
    (folder / "generation_config.json").write_text(json.dumps(gen_config | {"eos_token_id": 0, "temperature": 0.2}))
    tok_config, gen_config = assert_opens_as_ours(quantize_folder(folder, tmp_path / "int8", group=16))
    assert tok_config["custom"] == 1 and tok_config["model_max_length"] == 64 and gen_config["temperature"] == 0.2


def test_a_fine_tune_keeps_its_base_folders_keys(tmp_path):
    base, tiny = tiny_folder(tmp_path / "base")
    tok_config, _ = folder_configs(base)
    (base / "tokenizer_config.json").write_text(json.dumps(tok_config | {"custom": "kept"}))
    save_checkpoint(tmp_path / "tuned", tiny, base / "tokenizer.json")
    tok_config, _ = assert_opens_as_ours(tmp_path / "tuned")
    assert tok_config["custom"] == "kept"


def test_converted_folders_carry_our_template(tmp_path):
    """weights: from the hub (its tokenizer_config.json's keys kept, its template replaced) and from a GGUF."""
    hub, _ = tiny_folder(tmp_path / "hub")
    hub_config = {"tokenizer_class": "GPT2Tokenizer", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
                  "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "chat_template": "{{ 'SmolLM2' }}"}
    (hub / "tokenizer_config.json").write_text(json.dumps(hub_config))
    (hub / "generation_config.json").unlink()
    tok_config, _ = assert_opens_as_ours(weights.convert_hub_folder(hub, tmp_path / "from-hub"))
    assert tok_config["additional_special_tokens"] == hub_config["additional_special_tokens"]

    gguf = export.export_gguf(hub, tmp_path / "tiny.gguf", "f16")
    assert_opens_as_ours(weights.convert_gguf(gguf, tmp_path / "from-gguf"))


def test_a_token_id_folder_gets_no_tokenizer_config(tmp_path):
    folder = save_folder(tmp_path / "m", load_tiny().config, load_tiny().params)
    assert not (folder / "tokenizer_config.json").exists() and not (folder / "generation_config.json").exists()


def test_gguf_export_embeds_the_template(tmp_path):
    """Even from a folder whose tokenizer_config.json holds another template (one written before ours)."""
    folder, _ = tiny_folder(tmp_path / "float")
    tok_config, _ = folder_configs(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config | {"chat_template": "{{ 'old' }}"}))
    reader = GGUFReader(export.export_gguf(folder, tmp_path / "tiny.gguf", "q8_0"))
    assert reader.fields["tokenizer.chat_template"].contents() == CHAT_TEMPLATE
