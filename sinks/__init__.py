"""Sinks: the result record, the Parquet writer, DuckDB queries, the results topic and alerts."""
