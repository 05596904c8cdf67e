"""Readers (plain records), the synthetic dataset, geometry transforms and the torch dataset."""
