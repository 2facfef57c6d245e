"""What every command does with an error its user can cause: one line on stderr and no traceback.

Status 1 for an error, 130 for Ctrl-C (argparse's usage errors are 2). The commands write their files
atomically, so an error or an interrupt leaves nothing half-written behind.
"""
import sys
from contextlib import contextmanager


@contextmanager
def one_line_errors(*kinds: type[BaseException], interrupted: str = "interrupted"):
    """Inside it, an exception of `kinds` ends the command with "error: <its message>", and Ctrl-C with
    `interrupted` (say there how to go on, where a run can be resumed)."""
    try:
        yield
    except kinds as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(130)
