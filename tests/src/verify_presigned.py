"""Checks a SigV4 presigned S3 URL with botocore's own signer, independently of vodsource.

Usage: verify_presigned.py URL METHOD ACCESS_KEY SECRET_KEY REGION [HEADER=VALUE ...]

Rebuilds the request the URL's holder would send (method, URL without its signature, and the
given headers), signs it with botocore's SigV4 query signer at the URL's own timestamp, and
prints "valid" when the signatures agree, "invalid" otherwise. The headers are what the
holder sends: a URL that signs content-length is valid for one length only.
"""
import sys
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def main():
    url, method, key, secret, region = sys.argv[1:6]
    headers = dict(h.split("=", 1) for h in sys.argv[6:])
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    given = query.pop("X-Amz-Signature")
    stamp = query["X-Amz-Date"]
    expires = int(query["X-Amz-Expires"])
    signed = query["X-Amz-SignedHeaders"].split(";")
    # Only what the URL says it signs is signed; the rest of the request does not count.
    sent = {k.lower(): v for k, v in headers.items() if k.lower() in signed}
    token = query.get("X-Amz-Security-Token")
    auth = S3SigV4QueryAuth(Credentials(key, secret, token), "s3", region, expires=expires)
    request = AWSRequest(
        method=method,
        url=urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
        headers=sent,
    )
    request.context["timestamp"] = stamp
    auth._modify_request_before_signing(request)
    canonical = auth.canonical_request(request)
    # The URL's own signed-headers list, not botocore's guess from the request.
    lines = canonical.split("\n")
    lines[-2] = ";".join(signed)
    canonical = "\n".join(lines)
    string_to_sign = auth.string_to_sign(request, canonical)
    expected = auth.signature(string_to_sign, request)
    print("valid" if expected == given else "invalid")


if __name__ == "__main__":
    main()
