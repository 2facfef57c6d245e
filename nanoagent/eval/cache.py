"""Remembered replies: an evaluation that stops can be resumed without generating again what it had.

`CachedReplies` wraps a model. Every reply it gets from `chat` or `chat_batch` is appended to a JSONL file
(one line per reply, written as soon as it is known), keyed by a hash of the whole request: the messages,
the tools and the generation settings. Greedy decoding makes the reply a function of the request, so a
resumed run (`resume=True`) takes the replies it finds and asks the model only for the others; every
task (tool calls, IFEval, the agent's steps in the chain evaluation) resumes the same way, and scoring
runs again on the replies as if they had just been made. The file's first line names what else the
replies depend on (the model folder and its weights file); resuming with another model is refused.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

HEADER = "nanoagent eval replies"


def model_identity(folder: str | Path) -> dict:
    """What a model's replies depend on besides the request: its folder and its weights file's size and time."""
    folder = Path(folder).resolve()
    stat = (folder / "model.safetensors").stat()
    return {"model": str(folder), "weights_bytes": stat.st_size, "weights_mtime_ns": stat.st_mtime_ns}


def request_key(messages, tools, generation: dict) -> str:
    """A request -> its hash (sha256 of its canonical JSON)."""
    text = json.dumps([messages, tools, generation], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class CachedReplies:
    """`model` with its replies remembered in `path` (see the module doc); other attributes pass through.

    resume=False starts the file afresh (at the first reply made); resume=True reads it (ValueError when it
    was made for another identity) and appends. `hits` and `made` count the replies taken from the file and generated.
    """

    def __init__(self, model, path: str | Path, identity: dict, resume: bool = False):
        self.model, self.path, self.identity = model, Path(path), identity
        self.replies: dict[str, str] = {}
        self.hits = self.made = 0
        self.started = resume and self.path.is_file()  # a fresh file is begun at the first reply made
        if self.started:
            self.replies = self.read()

    def read(self) -> dict[str, str]:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            header = {}
        if header.get("header") != HEADER:
            raise ValueError(f"{self.path} is not a file of remembered replies; delete it or run without --resume")
        if header.get("identity") != self.identity:
            raise ValueError(f"{self.path} holds the replies of {header.get('identity', {}).get('model')}, not of "
                             f"{self.identity.get('model')} as it is now; run without --resume to start afresh")
        replies = {}
        for line in lines[1:]:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by an interrupted run: that reply is made again
                continue
            replies[row["key"]] = row["reply"]
        return replies

    def remember(self, key: str, reply: str, messages) -> None:
        self.replies[key] = reply
        self.made += 1
        last = str(messages[-1].get("content", ""))[:80] if messages else ""
        if not self.started:  # the first reply of a fresh run: the file (and an earlier run's) begins anew
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"header": HEADER, "identity": self.identity}) + "\n")
            self.started = True
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "reply": reply, "last": last}, ensure_ascii=False) + "\n")

    def __getattr__(self, name):  # tokenizer, config, logits, ...: the model's own
        return getattr(self.model, name)

    def chat(self, messages, tools=None, **generation) -> str:
        key = request_key(messages, tools, generation)
        if key in self.replies:
            self.hits += 1
            return self.replies[key]
        reply = self.model.chat(messages, tools=tools, **generation)
        self.remember(key, reply, messages)
        return reply

    def chat_batch(self, conversations, tools=None, max_new_tokens=256, stop=None, slots: int = 8,
                   **sampling) -> list[str]:
        """As `ChatModel.chat_batch`; only the requests not remembered reach the model (one by one if it
        cannot batch), and the keys are those of `chat`, so either way of asking finds the other's replies."""
        each = [None] * len(conversations) if tools is None else tools  # a tool list (or None) per conversation
        generation = {"max_new_tokens": max_new_tokens, **({"stop": stop} if stop else {}), **sampling}
        keys = [request_key(m, t, generation) for m, t in zip(conversations, each)]
        todo = [i for i, k in enumerate(keys) if k not in self.replies]
        self.hits += len(keys) - len(todo)
        if todo and hasattr(self.model, "chat_batch"):
            made = self.model.chat_batch([conversations[i] for i in todo], [each[i] for i in todo],
                                         max_new_tokens=max_new_tokens, stop=stop, slots=slots, **sampling)
        else:
            made = [self.model.chat(conversations[i], tools=each[i], **generation) for i in todo]
        for i, reply in zip(todo, made):
            self.remember(keys[i], reply, conversations[i])
        return [self.replies[k] for k in keys]
