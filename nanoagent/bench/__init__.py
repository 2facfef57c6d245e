"""Speed and memory benchmarks, one module each; `python -m nanoagent.bench` (__main__.py) is the command."""
