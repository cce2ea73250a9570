"""Pure cryptographic core: canonical CBOR, signed envelopes, keys and room keys (no I/O)."""
