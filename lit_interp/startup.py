"""The end of a `python -m lit_interp` start-up: freeze what importing the libraries built, then collect again."""

from __future__ import annotations

import gc


def startup_done() -> None:
    """`__main__` turns the garbage collector off while torch, Lightning and TransformerLens import.

    The objects built so far (the imported libraries, the model) live as long as the process: frozen,
    the collector never walks them again, and is then turned back on. Where the collector was never
    turned off (tests, notebooks, scripts calling `main`), nothing changes.
    """
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
