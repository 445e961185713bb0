"""What a run leaves in its directory: the run log (metrics, events, curves, samples, run.json) and
checkpoints a run resumes from."""

