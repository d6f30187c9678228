"""Replica lifecycle and autoscaling: cold-start phases, the metrics monitor and the HPA / KPA / Ray Serve controllers."""
