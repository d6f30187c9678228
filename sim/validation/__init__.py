"""The simulator against real servers: replaying recorded bench-serve runs and reporting the error."""
