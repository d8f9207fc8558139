"""Bridges to other RL libraries, each an optional extra: `listener_sub.integrations.trl` (`listener-sub[trl]`)."""
