"""Matplotlib as every figure of the project uses it: written to files, text drawn as written."""


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on a server or in CI
    # Class names are data, not markup: a folder named "x $\foo$" must be drawn as such, not parsed as mathtext
    # (which can fail on it and stop the stage after its work is done).
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt
    return plt
