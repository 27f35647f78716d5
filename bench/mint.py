#!/usr/bin/env python3
"""Prints one HS256 token per line for users uFIRST..u(FIRST+N-1): bench
tokens (FIRST defaults to 0: users u0..u(N-1)).

Usage: mint.py SECRET N [FIRST]

With NAME_BYTES set, each token also carries a `name` claim of that many
bytes (ASCII, distinct per user), for measuring what a profile costs.
"""
import os
import base64
import hashlib
import hmac
import json
import sys
import time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    secret, count = sys.argv[1].encode(), int(sys.argv[2])
    first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    exp = int(time.time()) + 3600
    name_bytes = int(os.environ.get("NAME_BYTES") or 0)
    for i in range(first, first + count):
        claims = {"sub": f"u{i}", "exp": exp}
        if name_bytes:
            claims["name"] = f"User {i} ".ljust(name_bytes, "x")[:name_bytes]
        payload = b64(json.dumps(claims).encode())
        signing_input = f"{header}.{payload}".encode()
        signature = b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
        print(f"{header}.{payload}.{signature}")


if __name__ == "__main__":
    main()
