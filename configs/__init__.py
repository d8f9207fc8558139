"""The Hydra config groups of every command (yaml beside this file) and their schemas (registered on import), and the
sweeper `listener-sub results` runs its phases with (hydra/sweeper=listed).

Each setting has one default: the library's own dataclass or function signature, registered in Hydra's
ConfigStore (`listener_sub.configs.schema`); the yaml files hold only what differs from it.
"""

from hydra_plugins.listener_sub_sweeper.listed_sweeper import register_sweeper
from listener_sub.configs.schema import register_configs

register_configs()
register_sweeper()
