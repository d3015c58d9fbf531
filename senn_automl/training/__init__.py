"""The training loop (:mod:`~senn_automl.training.trainer`), network surgery that carries the
optimiser state through a growth edit (:mod:`~senn_automl.training.surgery`), augmentation, and
the flat configuration dict that builds a model, a policy and a train config
(:mod:`~senn_automl.training.config`). Torch and NumPy only.
"""
