"""A node's life in one room: authority log, presence, signalling, media links and audio."""
