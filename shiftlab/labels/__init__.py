"""Labels: the oracle rewards that score prompt + response texts, and the one rule that turns k scored
completions per prompt into chosen/rejected pairs."""

