"""schemathesis's hooks for scripts/api-conformance.sh.

tus sends an upload's bytes as `application/offset+octet-stream` (tus 1.0, "PATCH"), a media
type schemathesis has no serializer for: its bodies are bytes, serialized as
`application/octet-stream` ones are."""
import schemathesis


@schemathesis.serializer("application/offset+octet-stream")
def offset_octet_stream(ctx, value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return str(value).encode()
