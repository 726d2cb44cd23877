"""Audio in and out: `decoding` (uploads to samples) and `encoding` (speech to response formats)."""
