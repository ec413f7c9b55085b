"""lit_interp: train toy transformers with Lightning and reverse-engineer them with TransformerLens."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `load` pulls in torch, Lightning and TransformerLens: import it on first use, so `import lit_interp`
    # and `python -m lit_interp --help` stay light.
    if name == "load":
        from lit_interp.notebook import load

        return load
    raise AttributeError(f"module 'lit_interp' has no attribute {name!r}")
