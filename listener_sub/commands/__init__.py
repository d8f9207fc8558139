"""Hydra apps behind `listener-sub COMMAND`: thin wrappers over the library."""
