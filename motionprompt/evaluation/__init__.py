"""Evaluation of guidance: paired statistics, distribution distances, the ``evaluate`` protocol."""
