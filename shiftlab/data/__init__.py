"""Data as the loop sees it: preference pairs on disk (load / validate / save JSONL), token batches (the one
right-padder, the collator), the epoch order over rows, and hub or local datasets read into pairs and texts."""

