"""`p2pvoix demo`: a whole room on this machine, no microphone or speaker needed."""
