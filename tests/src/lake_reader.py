# Reads a lake table back with pyarrow and duckdb (independent of vodsource) and prints JSON:
# each file's path, rows, schema, codecs, statistics, page index and key-column encodings;
# the count of every event_id; rows whose hive partition is not the UTC hour of their time.
# Usage: python3 lake_reader.py <object store root> <table> <time column>
import glob, json, os, sys
import duckdb, pyarrow.parquet as pq
root, table, time_column = sys.argv[1], sys.argv[2], sys.argv[3]
base = os.path.join(root, "lake", table)
paths = sorted(glob.glob(os.path.join(base, "event_date=*", "event_hour=*", "*.parquet")))
files = []
for path in paths:
    f = pq.ParquetFile(path)
    meta = f.metadata
    chunks = [meta.row_group(g).column(c) for g in range(meta.num_row_groups) for c in range(meta.num_columns)]
    key = "cid" if table == "qoe_events" else "video_id"
    key_index = f.schema_arrow.get_field_index(key)
    files.append({
        "path": os.path.relpath(path, root),
        "rows": meta.num_rows,
        "schema": [[field.name, str(field.type)] for field in f.schema_arrow],
        "codecs": sorted({c.compression for c in chunks}),
        "statistics": all(c.is_stats_set for c in chunks) if chunks else False,
        "page_index": all(c.has_column_index and c.has_offset_index for c in chunks) if chunks else False,
        "key_encodings": sorted({e for g in range(meta.num_row_groups) for e in meta.row_group(g).column(key_index).encodings}),
    })
ids, misplaced = {}, 0
if paths:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    glob_path = os.path.join(base, "*", "*", "*.parquet")
    src = f"read_parquet('{glob_path}', hive_partitioning = true)"
    ids = dict(con.execute(f"SELECT event_id, count(*) FROM {src} GROUP BY event_id").fetchall())
    misplaced = con.execute(
        f"SELECT count(*) FROM {src} WHERE strftime({time_column}, '%Y-%m-%d') <> CAST(event_date AS VARCHAR) "
        f"OR strftime({time_column}, '%H') <> lpad(CAST(event_hour AS VARCHAR), 2, '0')").fetchone()[0]
print(json.dumps({"files": files, "event_ids": ids, "misplaced": misplaced}))
