"""A stand-in model that replies from a script: for tests, lessons and trying the loop without weights."""


class ScriptedModel:
    """Replies with `replies` in order (the last one again once they run out), recording each request.

    Has the two methods the agent uses, `chat` and `stream`; `requests` holds a copy of
    every (messages, tools, generation kwargs) it was given.
    """

    def __init__(self, replies):
        self.replies, self.requests = list(replies), []

    def chat(self, messages, tools=None, **generation):
        """The next scripted reply, cut before the first stop string as a real model would."""
        self.requests.append({"messages": [dict(m) for m in messages], "tools": tools, "generation": generation})
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        for stop in generation.get("stop") or ():
            if stop in reply:
                reply = reply[:reply.index(stop)]
        return reply

    def stream(self, messages, tools=None, **generation):
        """The next scripted reply in pieces of a few characters."""
        reply = self.chat(messages, tools, **generation)
        for i in range(0, len(reply), 4):
            yield reply[i:i + 4]
