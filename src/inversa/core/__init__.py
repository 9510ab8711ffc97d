"""The core mathematics: schedule and condition types, step algebra, flow steps, solvers, the step trace, replay, value checks, metrics, errors."""
