"""Pretraining recipes for the embedded default: the models trained locally before RL."""
