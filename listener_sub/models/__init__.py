"""Listener, LM and speaker models."""
