"""The API's shapes without a server: the server-sent event framing and the API key check."""
import json

import pytest

from nanoagent.openai_api import APIError, check_key, event


def test_an_event_is_one_line_whatever_the_text():
    """A reader splitting with str.splitlines breaks at U+0085, U+2028, U+2029 too: they go escaped."""
    text = "é\u2028a\x85b\u2029c\nd"
    sent = event({"content": text})
    assert sent.startswith("data: ") and sent.endswith("\n\n")
    assert len(sent[:-2].splitlines()) == 1
    assert json.loads(sent[6:-2]) == {"content": text}
    assert "é" in sent  # other text stays UTF-8


def test_the_api_key_check():
    check_key("", None)  # no key set: anything goes
    check_key("Bearer s3cret", "s3cret")
    check_key("bearer  s3cret ", "s3cret")
    for header, says in (("", "Missing API key"), ("Bearer nope", "Incorrect API key"), ("s3cret", "Missing API key")):
        with pytest.raises(APIError) as e:
            check_key(header, "s3cret")
        assert (e.value.status, e.value.code) == (401, "invalid_api_key") and says in e.value.message
