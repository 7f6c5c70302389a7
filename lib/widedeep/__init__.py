"""widedeep: models, data, training and analysis behind the book on wide and deep networks.

The package is layered, each layer importing only the ones before it (CONTRIBUTING.md; guarded by
tests/test_layers.py): data -> models, labels -> train, store, profiles -> capture -> measures ->
analyses -> book -> cli.
"""

__version__ = "0.1.0"
