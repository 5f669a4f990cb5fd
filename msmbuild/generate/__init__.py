"""Generation: backends, prompts and the spec-to-documents stages."""
