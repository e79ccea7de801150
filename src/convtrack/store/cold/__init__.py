"""The cold store: hive-partitioned Parquet files on disk or S3."""
