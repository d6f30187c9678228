"""Serving architectures beside online serving, one module each (docs/architectures.md).

* ``offline``: a batch-inference job of N items on a fixed fleet, held to a deadline;
* ``streaming``: a producer, a partitioned buffer with backpressure, consumer replicas, checkpoints and
  KEDA-style scaling on consumer lag.
* ``online`` (online serving itself, with ``cache``, ``edge``, ``failures`` and ``overlap``): result caches,
  edge sites with network round trips, replica and node failures with retries and restarts, host/device
  overlap; the request-level engine runs them through its second contract (``sim/scenario/online.py``).

Each is selected by its scenario section (``sim/scenario/architectures.py``); ``sim.runner`` hands it the
scenario, and it returns the same tables and a summary as an online run.
"""
