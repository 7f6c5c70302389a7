"""Measures: how alike two sets of layer representations are, and what dominates one.

Layer: measures (above `widedeep.capture`, below `widedeep.analyses`). `grams` reduces layers to
Grams; `cka` holds the CKA estimators, the streaming minibatch engine and its model drivers; `pca`
the first-PC statistics; `subspace` Wang et al.'s subspace match; `similarity` the CCA family,
Procrustes, RSA and mutual k-NN; `lenses` splits every measure Chapter 9 uses into a summary of
one layer and a comparison of two.
"""
