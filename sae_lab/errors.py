"""Which exceptions carry a message written for users (the CLI prints those as they are)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def is_known(e: BaseException) -> bool:
    """True for exceptions sae-lab defines or raises itself: their messages name the problem and the fix.

    Anything else (raised inside a dependency) is an unexpected error that the CLI labels with its type.
    """
    if type(e).__module__.split(".")[0] == "sae_lab":
        return True
    tb = e.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and Path(last).resolve().is_relative_to(_PACKAGE)
