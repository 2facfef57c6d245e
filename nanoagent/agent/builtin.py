"""The built-in tools by name, and making them for the command line.

`python` (running model-written code) is deliberately not here: `resource.setrlimit`
can bound its CPU time, memory and file sizes, and a network namespace can take its
network away where the kernel allows one, but none of that stops the code from reading
or changing the user's files, and the standard library offers no portable way to. A
tool that runs model-written code needs a real container, which this project does not
assume.
"""

from pathlib import Path

from .calculator import calculator
from .clock import get_current_time
from .search import DOC_SUFFIXES, make_web_search, web_search
from .web import make_visit_webpage, visit_webpage

BUILTIN_TOOLS = {
    "calculator": calculator,
    "web_search": web_search,
    "visit_webpage": visit_webpage,
    "get_current_time": get_current_time,
}


def check_docs(folder):
    """A folder for web_search to search offline -> its Path; ValueError unless it holds a document."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"the documents folder {folder} does not exist")
    if not any(p.suffix.lower() in DOC_SUFFIXES and p.is_file() for p in root.rglob("*")):
        raise ValueError(f"the documents folder {folder} holds no documents ({', '.join(DOC_SUFFIXES)} files)")
    return root


def builtin_tools(names, docs=None, allow_private=None):
    """Tool names ("calculator", ...) -> [Tool] (ValueError for an unknown name, or a folder that holds
    no documents). `docs` makes web_search search that folder offline; `allow_private` (True or
    False) overrides NANOAGENT_ALLOW_PRIVATE_URLS for visit_webpage (see netguard.py)."""
    for name in names:
        if name not in BUILTIN_TOOLS:
            raise ValueError(f"unknown tool '{name}'; built-in tools are: {', '.join(BUILTIN_TOOLS)}")
    if docs is not None:
        check_docs(docs)
    made = {"web_search": make_web_search(docs=docs) if docs else web_search,
            "visit_webpage": make_visit_webpage(allow_private) if allow_private is not None else visit_webpage}
    return [made.get(name, BUILTIN_TOOLS[name]) for name in names]
