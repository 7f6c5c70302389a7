"""widedeep: models, data, training and analysis behind the book on wide and deep networks.

The package is layered, each layer importing only the ones before it (CONTRIBUTING.md; guarded by
tests/test_layers.py): data -> models, labels -> train, store, profiles -> capture -> measures ->
analyses -> book -> cli.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy exports: `from widedeep import compare` without importing torch on `import widedeep`."""
    if name in ("compare", "Comparison"):
        from widedeep import comparison  # the one import from the package up the layers (tests/test_layers.py)
        return getattr(comparison, name)
    raise AttributeError(f"module 'widedeep' has no attribute {name!r}")
