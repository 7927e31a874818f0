"""Engine-free stage functions: pure functions over one batch or partition, and the one I/O layer (docs/architecture.md)."""
