"""lit_interp: train toy transformers with Lightning and reverse-engineer them with TransformerLens."""

__version__ = "0.1.0"
