"""Uploads FILE with tuspy to ENDPOINT as the source of VIDEO_ID, in chunks of CHUNK bytes
with their SHA-1 checksums (tus's checksum extension), retrying after every broken
connection from the offset the server acknowledged. Prints one JSON line."""
import json
import os

from tusclient import client

tus = client.TusClient(os.environ["ENDPOINT"], headers={"Authorization": "Bearer " + os.environ["TOKEN"]})
uploader = tus.uploader(
    os.environ["FILE"],
    chunk_size=int(os.environ["CHUNK"]),
    metadata={"filename": "source.mp4", "video_id": os.environ["VIDEO_ID"]},
    retries=30,
    retry_delay=0.05,
    upload_checksum=True,
)
uploader.upload()
print(json.dumps({"url": uploader.url, "offset": uploader.offset}))
