"""The subcommands of `python -m lit_interp`: train (fit, validate, test), analyze, sweep; lit_interp.cli dispatches."""
