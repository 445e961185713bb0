"""The experiment: the factory (config → policy, π_ref schedule, pair source and objective, chosen once) and
the run/resume lifecycle around the one loop."""


from shiftlab.experiment.lifecycle import run

__all__ = ["run"]
