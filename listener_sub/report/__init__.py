"""Qualitative inspection of a train run: per-board data (`gather`), a self-contained HTML page (`page`), a terminal table (`text`)."""
