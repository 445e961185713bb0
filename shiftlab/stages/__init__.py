"""What comes before preference training: the task's texts and prompts, the stage cache, π_sft, and the
offline preference set sampled once from π_sft; the optimum frontier from π_sft's samples on the eval prompts."""

