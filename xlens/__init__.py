"""xlens: find language experts in multilingual LMs, intervene on them, measure cross-lingual alignment."""

__version__ = "0.1.0"
