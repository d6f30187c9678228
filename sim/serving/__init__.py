"""Request-level serving: the discrete-event engine, Triton-style batching, routers and service-time models."""
