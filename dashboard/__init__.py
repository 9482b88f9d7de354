"""The Dash app over the Parquet results (reads only through sinks' query functions)."""
