"""One file per view; each renders what the engine computed and emits what the user asked for."""
