"""What every command does with an error its user can cause: one line on stderr and no traceback.

Status 1 for an error, 130 for Ctrl-C (argparse's usage errors are 2). The commands write their files
atomically, so an error or an interrupt leaves nothing half-written behind.
"""
import signal
import sys
import threading
from contextlib import contextmanager


@contextmanager
def one_line_errors(*kinds: type[Exception], interrupted: str = "interrupted"):
    """Inside it, an exception of `kinds` ends the command with "error: <its message>", and Ctrl-C with
    `interrupted` (say there how to go on, where a run can be resumed).

    Ctrl-C raises KeyboardInterrupt where Python happens to be, and inside compiled code that is not always
    what comes out: when it lands while Numba unboxes a kernel's arguments, the kernel call fails with a
    TypeError ("can't unbox a List as a <NULL>"). So the handler notes the press, and any exception raised
    after one is the interrupt."""
    pressed = []

    def on_ctrl_c(signum, frame):
        pressed.append(signum)
        raise KeyboardInterrupt

    # Only where Ctrl-C would raise KeyboardInterrupt anyway: not where it is ignored (a shell's background
    # job) or handled by someone else, and signal handlers can only be set from the main thread.
    ours = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if ours:
        signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    except KeyboardInterrupt:
        stop(interrupted)
    except Exception as e:
        if pressed:
            stop(interrupted)
        if isinstance(e, kinds):
            sys.exit(f"error: {e}")
        raise
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def stop(interrupted: str):
    print(interrupted, file=sys.stderr)
    sys.exit(130)
