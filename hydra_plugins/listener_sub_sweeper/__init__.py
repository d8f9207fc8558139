"""listener-sub's Hydra sweeper plugin (found by Hydra's plugin scan of the `hydra_plugins` namespace)."""
