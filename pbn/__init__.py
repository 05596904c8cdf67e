"""Stacked Part-based Branching Networks (Tang & Wu, CVPR 2019): model, data, evaluation, training.

This package knows pose estimation and nothing of Ray; search/ drives it.
"""
