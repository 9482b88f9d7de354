"""The pure scoring engine: an array-based online Random Cut Forest batched across series.

No I/O, no clock, no Kafka/pyarrow/DuckDB/Dash imports: event time is passed in.
"""
