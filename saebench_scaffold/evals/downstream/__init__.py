"""The `downstream` task: lm-eval task accuracy under `ce_ablation`'s conditions, and the lm-eval model it runs on."""
