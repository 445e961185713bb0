"""Models: build or load π and its tokenizer, LoRA adapters, the sampler (π's own samples, KV cache), and
sequence packing for the preference forwards."""

