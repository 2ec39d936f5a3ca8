"""Synthetic data for tests, demos and benchmarks: sample bundles (``samples``) and the
perturbations that turn honest episodes into hostile or noisy ones (``perturb``)."""
