"""Entry point for `python -m lit_interp`."""

from lit_interp.cli import main

if __name__ == "__main__":
    main()
