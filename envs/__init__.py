"""PettingZoo front-ends (AEC and Parallel) over the batched game core."""
