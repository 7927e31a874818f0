"""Beam runner presets: the options each target (in-process, Dataflow, Flink, Spark, portable) needs (docs/scale.md)."""
