"""The Hydra config groups of every command (yaml beside this file) and their schemas (registered on import).

Each setting has one default: the library's own dataclass or function signature, registered in Hydra's
ConfigStore (`listener_sub.configs.schema`); the yaml files hold only what differs from it.
"""

from listener_sub.configs.schema import register_configs

register_configs()
