"""Analyses: the paper's questions asked of trained runs, with their verdicts.

Layer: analyses (above `widedeep.measures`, below `widedeep.book`). `runs` caches each run's
measures in its run folder; `blocks` detects the block structure and `structure` analyses one run
for it; `trends`, `probes`, `deletion`, `errors` and `checks` hold the chapters' multi-step
computations; `verdicts` is the one vocabulary every verdict is spelled in.
"""
