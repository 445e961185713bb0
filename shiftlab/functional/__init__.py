"""Pure tensor math, no config and no I/O: sequence log-probs and the DPO-family losses, policy-gradient terms,
KL estimators and depth curves, two-sample tests, the KL-regularised optimum. Tensors in, tensors out; tests import
these functions."""

