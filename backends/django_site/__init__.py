"""The Django + DRF stack of Stackgate: the todos contract over the shared table."""
