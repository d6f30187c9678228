"""Hardware the estimates and planners know: the GPU catalog."""
