"""Entry point for `python -m lit_interp`."""

import gc

# Importing torch, Lightning and TransformerLens builds ~0.5M objects that live as long as the process;
# with the collector on, each full collection during start-up walks them all again (~0.9 s in all).
# `cli.startup_done` freezes them and turns the collector back on before any real work.
gc.disable()

from lit_interp.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
