"""Book support: what the chapters call to show, record and state their results.

Layer: book support (the top of the library, below only `widedeep.cli`). `results` writes and
reads `results/<profile>/*.json` under one schema; `claims` turns them into the introduction's
table; `tables`, `plots` and `explorer` draw; `notebook` glues values into the prose.
"""
