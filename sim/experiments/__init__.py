"""Many scenarios at once: grid sweeps over dotted keys, resumable, on local cores or a Ray cluster."""
