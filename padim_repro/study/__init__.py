"""The study: the machinery that runs PaDiM experiments and publishes them, built on the method above it.

Everything here imports the method modules of :mod:`padim_repro` (config, data, backbones, features, gaussian,
scoring, model, metrics); nothing in the method imports this package.
"""
