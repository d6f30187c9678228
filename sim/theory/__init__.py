"""Closed forms the simulator is checked against and the planner starts from."""
