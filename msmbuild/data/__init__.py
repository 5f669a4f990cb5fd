"""Tokenized shards of a corpus's documents, DOCTAG prefixes and sequence packing."""
