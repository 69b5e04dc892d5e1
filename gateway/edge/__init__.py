"""The edge: the HTTP protocol, the worker supervisor, the keep-alive balance and the frozen heap."""
