"""Storage adapters of the throttle: the Redis sliding window (memory storage comes from ``limits``)."""
