"""The sweep: Ray Tune + Optuna + ASHA over stacked-PBN configurations. The only package that imports Ray."""
