"""Vision-to-language adapters: the Perceiver-IO cross-attention adapter and an MLP baseline."""
