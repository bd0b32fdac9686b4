"""Developer benchmarks, run by hand (never by the pipeline, `make` or the suite): each module's docstring gives
its command, their results are kept in bench/results/, and the docs cite their figures.

The comparison of the backbones, the product's answer to which one to fine-tune, is not here: it is compare/
(`make benchmark`, `python -m compare`).
"""
