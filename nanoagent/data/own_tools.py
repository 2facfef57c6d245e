"""The project's own tools as training data: their schemas as the model sees them, and right calls
to them (derived.py's own-tools family). The data package may not import the agent package
(tests/test_house.py), so the schemas are copied here; tests/test_derived.py pins them to the real tools.
"""
from __future__ import annotations

import zoneinfo
from datetime import datetime, timedelta, timezone

# The calculator's schema, as the model sees it. The data package may not import the agent package
# (tests/test_house.py), so it is copied here; tests/test_derived.py pins it equal to the real tool's.
CALCULATOR = {"name": "calculator", "description": "Evaluate an arithmetic expression and return the number.",
              "parameters": {"type": "object", "properties": {"expression": {
                  "type": "string", "description": "the expression, e.g. \"2 * (3 + 4)\", \"sqrt(2)\", \"0.15 * 80\""}},
                  "required": ["expression"]}}
# The project's other tools' schemas, copied and pinned the same way.
GET_CURRENT_TIME = {"name": "get_current_time", "description": "Get the current date and time in a time zone.",
                    "parameters": {"type": "object", "properties": {"timezone": {
                        "type": "string", "description": "an IANA time zone name, e.g. \"UTC\", \"Europe/Paris\", "
                                                         "\"America/New_York\"", "default": "UTC"}}, "required": []}}
WEB_SEARCH = {"name": "web_search", "description": "Search the web and return the best results with their titles, "
                                                   "addresses and snippets.",
              "parameters": {"type": "object", "properties": {
                  "query": {"type": "string", "description": "what to search for, in a few keywords"},
                  "max_results": {"type": "integer", "description": "how many results to return (1 to 10)",
                                  "default": 3}}, "required": ["query"]}}
VISIT_WEBPAGE = {"name": "visit_webpage", "description": "Fetch a web page and return its readable text.",
                 "parameters": {"type": "object", "properties": {"url": {
                     "type": "string", "description": "the full http or https address of the page"}},
                     "required": ["url"]}}
OWN_TOOLS = (CALCULATOR, GET_CURRENT_TIME, WEB_SEARCH, VISIT_WEBPAGE)


def extra_tools(pool, names, rng, k):
    """k tools from the pool whose names are not among `names`."""
    others = [t for t in pool if t["name"] not in names]
    picks = rng.choice(len(others), size=min(k, len(others)), replace=False) if others else []
    return [others[int(i)] for i in picks]


# ---- the project's own tools: time, search, pages ------------------------------------------------------
# The calls are right; the results are templated in the tools' own output formats (real results would
# need the network, or today's clock): times are a random instant converted with the real zone rules,
# and the pages and snippets state well-known facts.

CITIES = (("Oslo", "Europe/Oslo"), ("Lima", "America/Lima"), ("Tokyo", "Asia/Tokyo"), ("Paris", "Europe/Paris"),
          ("New York", "America/New_York"), ("Sydney", "Australia/Sydney"), ("London", "Europe/London"),
          ("Los Angeles", "America/Los_Angeles"), ("Mumbai", "Asia/Kolkata"), ("Cairo", "Africa/Cairo"),
          ("Berlin", "Europe/Berlin"), ("Sao Paulo", "America/Sao_Paulo"), ("Singapore", "Asia/Singapore"),
          ("Chicago", "America/Chicago"), ("Nairobi", "Africa/Nairobi"), ("Seoul", "Asia/Seoul"),
          ("Mexico City", "America/Mexico_City"), ("Madrid", "Europe/Madrid"), ("Toronto", "America/Toronto"),
          ("Auckland", "Pacific/Auckland"), ("Istanbul", "Europe/Istanbul"), ("Bangkok", "Asia/Bangkok"),
          ("Dubai", "Asia/Dubai"), ("Reykjavik", "Atlantic/Reykjavik"))
TIME_ASKS = ("What time is it in {c}?", "What's the current time in {c}?", "Can you tell me the time in {c} right now?",
             "What is the date and time in {c} at the moment?", "I need the current local time in {c}.",
             "Is it day or night in {c} now? Tell me the time.")
TIME_ASKS_MANY = ("What time is it in {cs}?", "Tell me the current time in {cs}.",
                  "I have friends in {cs}. What's the local time for each of them?",
                  "Can you check the time in {cs} right now?")
# (query, page title, address, snippet, question asked about it, answer)
FACTS = (
    ("Mount Everest height", "Mount Everest", "https://en.wikipedia.org/wiki/Mount_Everest",
     "Mount Everest is Earth's highest mountain above sea level; its elevation is 8,849 m (29,032 ft).",
     "how tall Mount Everest is", "Mount Everest is 8,849 metres (29,032 feet) tall."),
    ("Eiffel Tower completed year", "Eiffel Tower", "https://en.wikipedia.org/wiki/Eiffel_Tower",
     "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889 for the World's Fair.",
     "when the Eiffel Tower was completed", "The Eiffel Tower was completed in 1889."),
    ("capital of Australia", "Canberra", "https://en.wikipedia.org/wiki/Canberra",
     "Canberra is the capital city of Australia, located in the Australian Capital Territory.",
     "what the capital of Australia is", "The capital of Australia is Canberra."),
    ("speed of light", "Speed of light", "https://en.wikipedia.org/wiki/Speed_of_light",
     "The speed of light in vacuum is exactly 299,792,458 metres per second.",
     "how fast light travels", "Light travels at 299,792,458 metres per second in a vacuum."),
    ("Pride and Prejudice author", "Pride and Prejudice", "https://en.wikipedia.org/wiki/Pride_and_Prejudice",
     "Pride and Prejudice is an 1813 novel by Jane Austen.",
     "who wrote Pride and Prejudice", "Pride and Prejudice was written by Jane Austen and published in 1813."),
    ("Mona Lisa painter", "Mona Lisa", "https://en.wikipedia.org/wiki/Mona_Lisa",
     "The Mona Lisa is a portrait painting by the Italian artist Leonardo da Vinci, kept at the Louvre in Paris.",
     "who painted the Mona Lisa", "The Mona Lisa was painted by Leonardo da Vinci; it hangs in the Louvre."),
    ("largest planet solar system", "Jupiter", "https://en.wikipedia.org/wiki/Jupiter",
     "Jupiter is the fifth planet from the Sun and the largest in the Solar System.",
     "which planet is the largest", "Jupiter is the largest planet in the Solar System."),
    ("first person on the Moon", "Apollo 11", "https://en.wikipedia.org/wiki/Apollo_11",
     "Apollo 11 landed on the Moon on July 20, 1969; Neil Armstrong was the first person to step onto it.",
     "who first walked on the Moon", "Neil Armstrong was the first person on the Moon, on July 20, 1969."),
    ("chemical symbol for gold", "Gold", "https://en.wikipedia.org/wiki/Gold",
     "Gold is a chemical element with the symbol Au and atomic number 79.",
     "what gold's chemical symbol is", "Gold's chemical symbol is Au (atomic number 79)."),
    ("bones in the adult human body", "Human skeleton", "https://en.wikipedia.org/wiki/Human_skeleton",
     "The adult human skeleton is made up of 206 bones.",
     "how many bones an adult has", "An adult human skeleton has 206 bones."),
    ("tallest building in the world", "Burj Khalifa", "https://en.wikipedia.org/wiki/Burj_Khalifa",
     "The Burj Khalifa in Dubai is the world's tallest building, with a height of 828 m.",
     "which building is the tallest", "The tallest building is the Burj Khalifa in Dubai, at 828 metres."),
    ("largest ocean", "Pacific Ocean", "https://en.wikipedia.org/wiki/Pacific_Ocean",
     "The Pacific Ocean is the largest and deepest of Earth's five oceanic divisions.",
     "which ocean is the largest", "The Pacific is the largest and deepest ocean."),
    ("Hamlet author", "Hamlet", "https://en.wikipedia.org/wiki/Hamlet",
     "The Tragedy of Hamlet, Prince of Denmark is a tragedy written by William Shakespeare.",
     "who wrote Hamlet", "Hamlet was written by William Shakespeare."),
    ("currency of Japan", "Japanese yen", "https://en.wikipedia.org/wiki/Japanese_yen",
     "The yen is the official currency of Japan.", "what currency Japan uses", "Japan's currency is the yen."),
    ("boiling point of water", "Water", "https://en.wikipedia.org/wiki/Water",
     "At standard atmospheric pressure, water boils at 100 degrees Celsius (212 degrees Fahrenheit).",
     "at what temperature water boils", "At sea-level pressure, water boils at 100 °C (212 °F)."),
    ("Python programming language creator", "Python (programming language)",
     "https://en.wikipedia.org/wiki/Python_(programming_language)",
     "Python is a high-level programming language created by Guido van Rossum and first released in 1991.",
     "who created Python", "Python was created by Guido van Rossum and first released in 1991."),
    ("distance from Earth to the Moon", "Moon", "https://en.wikipedia.org/wiki/Moon",
     "The Moon orbits Earth at an average distance of about 384,400 km.",
     "how far away the Moon is", "The Moon is about 384,400 km from Earth on average."),
    ("telephone inventor", "Alexander Graham Bell", "https://en.wikipedia.org/wiki/Alexander_Graham_Bell",
     "Alexander Graham Bell was awarded the first US patent for the telephone in 1876.",
     "who invented the telephone", "Alexander Graham Bell received the first patent for the telephone, in 1876."),
)
SEARCH_ASKS = ("Search the web for {q}.", "Look up {q} online.", "Can you search for {q}?",
               "Do a web search: {q}.", "Please find {q} on the web and tell me {ask}.",
               "Use a web search to find out {ask}.")
VISIT_ASKS = ("Read {url} and tell me {ask}.", "What does {url} say about {ask}?", "Open {url} and summarize it.",
              "Visit {url} and find out {ask}.")
CHAIN_ASKS = ("Find a web page about {q}, open it, and tell me {ask}.",
              "Search for {q}, then read the best page and tell me {ask}.")


def time_result(zone: str, instant: datetime) -> tuple[str, datetime]:
    """(get_current_time's output for an instant seen in a zone, the local time)."""
    local = instant.astimezone(zoneinfo.ZoneInfo(zone))
    return f"{local.isoformat(timespec='seconds')} ({local:%A}, {zone})", local


def said_time(city: str, local: datetime, hours: int = 12) -> str:
    """The answer's sentence for a local time: "In Oslo it is 3:07 PM on Monday, March 4, 2024.", or with
    hours=24 the clock's own form, "In Oslo it is 15:07 on ..." (copied from the result, where a small model
    turning 09:56 into the 12-hour form wrote "9:56 PM")."""
    clock = f"{local:%H:%M}" if hours == 24 else f"{local.hour % 12 or 12}:{local:%M %p}"
    return f"In {city} it is {clock} on {local:%A, %B} {local.day}, {local.year}."


def search_result(title: str, url: str, snippet: str) -> str:
    """web_search's output for one hit."""
    return f"1. {title} - Wikipedia ({url})\n{snippet}"


def page_text(title: str, url: str, snippet: str) -> str:
    """visit_webpage's output for a page that says one thing."""
    return f"Title: {title} - Wikipedia\nURL: {url}\n\n# {title}\n{snippet}"


def own_tools(inputs, n: int, rng, hours: int = 12):
    """Right calls to the project's tools: the time (one city or several in one parallel call; said in the 12- or
    24-hour form), a search, a page, and a search followed by a visit."""
    pool = inputs.tool_pool()
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for k in range(n):
        kind = int(rng.integers(5))
        if kind <= 1:  # the time, in one city (0) or several (1)
            cities = [CITIES[int(i)] for i in rng.choice(len(CITIES), size=1 if kind == 0 else int(rng.integers(2, 4)),
                                                          replace=False)]
            instant = start + timedelta(seconds=int(rng.integers(0, 2 * 365 * 86400)))
            names = [c for c, _ in cities]
            if kind == 0:
                ask = TIME_ASKS[int(rng.integers(len(TIME_ASKS)))].format(c=names[0])
            else:
                ask = TIME_ASKS_MANY[int(rng.integers(len(TIME_ASKS_MANY)))].format(
                    cs=", ".join(names[:-1]) + " and " + names[-1])
            outs = [time_result(z, instant) for _, z in cities]
            answer = " ".join(said_time(c, loc, hours) for c, (_, loc) in zip(names, outs))
            messages = [{"role": "user", "content": ask},
                        {"role": "assistant", "content": "", "tool_calls": [
                            {"name": "get_current_time", "arguments": {"timezone": z}} for _, z in cities]}]
            messages += [{"role": "tool", "content": text} for text, _ in outs]
            tools = [GET_CURRENT_TIME]
        else:  # search (2), page (3), search then page (4)
            q, title, url, snippet, ask_what, answer = FACTS[int(rng.integers(len(FACTS)))]
            found, page = search_result(title, url, snippet), page_text(title, url, snippet)
            search = {"name": "web_search", "arguments": {"query": q}}
            visit = {"name": "visit_webpage", "arguments": {"url": url}}
            forms = {2: (SEARCH_ASKS, [(search, found)]), 3: (VISIT_ASKS, [(visit, page)]),
                     4: (CHAIN_ASKS, [(search, found), (visit, page)])}
            asks, steps = forms[kind]
            ask = asks[int(rng.integers(len(asks)))].format(q=q, url=url, ask=ask_what)
            if kind == 3 and "summarize" in ask:
                answer = snippet
            messages = [{"role": "user", "content": ask}]
            for call, result in steps:
                messages += [{"role": "assistant", "content": "", "tool_calls": [call]},
                             {"role": "tool", "content": result}]
            needed = {2: [WEB_SEARCH], 3: [VISIT_WEBPAGE], 4: [WEB_SEARCH, VISIT_WEBPAGE]}[kind]
            tools = [WEB_SEARCH, VISIT_WEBPAGE] if rng.random() < 0.5 else needed
        messages.append({"role": "assistant", "content": answer})
        others = [t for t in OWN_TOOLS if t not in tools] if rng.random() < 0.5 else []
        tools = tools + others[:int(rng.integers(0, len(others) + 1))] + extra_tools(
            pool, {t["name"] for t in tools}, rng, int(rng.integers(0, 2)))
        yield {"messages": messages, "tools": [tools[int(i)] for i in rng.permutation(len(tools))],
               "source": "own-tools" if hours == 12 else "own-tools-24h"}
