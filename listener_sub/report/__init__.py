"""The report of runs: per-board data of a train run (`gather`), a self-contained HTML page (`page`), terminal tables
(`text`, `tables`), plots (`plots`) and the results document (`results`)."""
