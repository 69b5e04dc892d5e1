"""Shadow comparison: the process that replays mirrored requests, and how two answers compare."""
