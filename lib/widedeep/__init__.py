"""widedeep: models, data, training and analysis behind the book on wide and deep networks."""

__version__ = "0.1.0"
