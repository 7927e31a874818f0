"""The commands users type: python -m pipeline.run / tokenize / shard / report, their CLI convention and the Beam graphs (docs/architecture.md)."""
