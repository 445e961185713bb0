"""Preference training: where pairs come from (sources, rollouts), how π_ref moves (schedules), the objectives,
the ONE loop, evaluation, and data-parallel ranks."""

