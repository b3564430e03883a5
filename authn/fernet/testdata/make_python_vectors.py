#!/usr/bin/env python3
"""Writes python_vectors.json with Python's `cryptography` package and checks go_tokens.json.

Not run by `go test`: the Go tests read the files this script wrote. To refresh them:

    go test ./authn/fernet -run TestGoTokensCheckedByPython -write-go-tokens
    python3 authn/fernet/testdata/make_python_vectors.py

Every key below is a test key derived from a fixed label; none is used anywhere else.
"""

import base64
import hashlib
import json
import os
import sys

import cryptography
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

HERE = os.path.dirname(os.path.abspath(__file__))


def test_key(label):
    return base64.urlsafe_b64encode(hashlib.sha256(b"authd fernet test key " + label.encode()).digest()).decode()


def b64(data):
    return base64.b64encode(data).decode()


def det_iv(n):
    return hashlib.sha256(b"authd fernet test iv %d" % n).digest()[:16]


K1, K2, K3 = test_key("one"), test_key("two"), test_key("three")

SRCS = [
    b"",
    b"a",
    b"hello",
    b"0123456789abcde",  # 15: one byte of padding
    b"0123456789abcdef",  # 16: a whole block of padding
    b"0123456789abcdef0",
    b"x" * 31,
    b"x" * 32,
    b"x" * 33,
    bytes(range(256)),
    "Ångström ✓ 🔑".encode(),
    b"0b8e8f5e-6a0c-4d5e-9b43-3c7f2f1f9a10:JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
]
TIMES = [0, 1, 499162800, 1700000000, 2**32, 2**40]


def generate():
    out, n = [], 0
    for key in (K1, K2, K3):
        for i, src in enumerate(SRCS):
            now = TIMES[(n) % len(TIMES)]
            iv = det_iv(n)
            tok = Fernet(key)._encrypt_from_parts(src, now, iv).decode()
            assert Fernet(key).decrypt(tok) == src
            out.append({"secret": key, "now": now, "iv": iv.hex(), "src": b64(src), "token": tok})
            n += 1
    return out


def encrypt_random():
    out = []
    for i, src in enumerate(SRCS):
        now = 1700000000 + i
        tok = Fernet(K1).encrypt_at_time(src, now).decode()
        out.append({"secret": K1, "now": now, "src": b64(src), "token": tok})
    return out


def multi():
    now = 1700000000
    old, new = Fernet(K1), Fernet(K2)
    both = MultiFernet([new, old])
    src = b"rotate me"
    old_tok = old.encrypt_at_time(src, now)
    new_tok = both.encrypt_at_time(src, now)
    rotated = both.rotate(old_tok)
    cases = [
        ("old token, keys new,old", f"{K2},{K1}", old_tok),
        ("old token, keys old,new", f"{K1},{K2}", old_tok),
        ("MultiFernet token, keys new,old", f"{K2},{K1}", new_tok),
        ("MultiFernet token, key new alone", K2, new_tok),
        ("MultiFernet token, key old alone", K1, new_tok),
        ("rotated token, key new alone", K2, rotated),
        ("rotated token, key old alone", K1, rotated),
        ("old token, key new alone", K2, old_tok),
        ("old token, keys three,new", f"{K3},{K2}", old_tok),
        ("old token, keys three,new,old with spaces", f" {K3} , {K2} ,{K1} ", old_tok),
    ]
    out = []
    for desc, keys, tok in cases:
        mf = MultiFernet([Fernet(k.strip()) for k in keys.split(",")])
        try:
            got = mf.decrypt(tok)
            assert got == src
            valid = True
        except InvalidToken:
            valid = False
        out.append({"desc": desc, "keys": keys, "now": now, "src": b64(src), "token": tok.decode(), "valid": valid})
    return out


def time_cases():
    ts = 1700000000
    tok = Fernet(K1).encrypt_at_time(b"tick", ts).decode()
    cases = [
        ("same second", ts, 60),
        ("ttl boundary", ts + 60, 60),
        ("one second past ttl", ts + 61, 60),
        ("ttl 1, one second later", ts + 1, 1),
        ("ttl 1, two seconds later", ts + 2, 1),
        ("long ttl, a day later", ts + 86400, 86400 * 2),
        ("token 60s in the future", ts - 60, 60),
        ("token 61s in the future", ts - 61, 60),
        ("token a day in the future, long ttl", ts - 86400, 86400 * 7),
        ("token a year old, no ttl", ts + 365 * 86400, None),
        ("token a day in the future, no ttl", ts - 86400, None),
        ("clock at the epoch", 0, 60),
    ]
    out = []
    for desc, now, ttl in cases:
        try:
            if ttl is None:
                Fernet(K1).decrypt(tok)  # ttl=None: no time check at all
            else:
                Fernet(K1).decrypt_at_time(tok, ttl, now)
            valid = True
        except InvalidToken:
            valid = False
        out.append({"desc": desc, "secret": K1, "token": tok, "now": now, "ttl_sec": ttl, "valid": valid})
    return out


def keys():
    raw = hashlib.sha256(b"authd fernet key spellings").digest()
    # find a key whose encoding uses both '-' and '_', so the standard alphabet differs
    i = 0
    while True:
        url = base64.urlsafe_b64encode(raw).decode()
        if "-" in url and "_" in url:
            break
        i += 1
        raw = hashlib.sha256(raw + bytes([i])).digest()
    std = base64.b64encode(raw).decode()
    spellings = [
        ("python generate_key", Fernet.generate_key().decode()),
        ("urlsafe, padded", url),
        ("standard alphabet, padded", std),
        ("unpadded", url.rstrip("=")),
        ("standard alphabet, unpadded", std.rstrip("=")),
        ("31 bytes", base64.urlsafe_b64encode(raw[:31]).decode()),
        ("33 bytes", base64.urlsafe_b64encode(raw + b"\x00").decode()),
        ("16 bytes", base64.urlsafe_b64encode(raw[:16]).decode()),
        ("64 bytes", base64.urlsafe_b64encode(raw + raw).decode()),
        ("empty", ""),
    ]
    out = []
    for desc, s in spellings:
        try:
            f = Fernet(s)
            valid = True
            h = (f._signing_key + f._encryption_key).hex()
        except ValueError:
            valid, h = False, ""
        out.append({"desc": desc, "key": s, "valid": valid, "hex": h})
    return out


def check_go_tokens():
    path = os.path.join(HERE, "go_tokens.json")
    with open(path) as f:
        cases = json.load(f)["cases"]
    out = []
    for c in cases:
        src = base64.b64decode(c["src"])
        f = Fernet(c["decrypt_with"])
        ok = f.decrypt(c["token"]) == src and f.extract_timestamp(c["token"]) == c["now"]
        if c["kind"] in ("encrypt", "multi"):
            # The token must also decrypt with Python's MultiFernet over the whole list.
            mf = MultiFernet([Fernet(k) for k in c["keys"].split(",")])
            ok = ok and mf.decrypt(c["token"]) == src
        if c["kind"] == "rotate":
            # Python's own rotate of the original keeps the same timestamp and plaintext.
            mf = MultiFernet([Fernet(k) for k in c["keys"].split(",")])
            py_rot = mf.rotate(c["from"])
            ok = ok and f.extract_timestamp(py_rot) == c["now"] and f.decrypt(py_rot) == src
            # A rotated token is no longer readable with the old key alone.
            old = Fernet(c["keys"].split(",")[1])
            try:
                old.decrypt(c["token"])
                ok = False
            except InvalidToken:
                pass
        if not ok:
            sys.exit("Python could not decrypt a Go token: %s" % c["token"])
        out.append({"token": c["token"], "ok": ok})
    return out


def main():
    doc = {
        "note": "Written by make_python_vectors.py with Python's cryptography package; test keys only.",
        "cryptography_version": cryptography.__version__,
        "generate": generate(),
        "encrypt_random": encrypt_random(),
        "multi": multi(),
        "time": time_cases(),
        "keys": keys(),
        "go_tokens_verified": check_go_tokens(),
    }
    with open(os.path.join(HERE, "python_vectors.json"), "w") as f:
        json.dump(doc, f, indent=2, ensure_ascii=True)
        f.write("\n")
    print("wrote python_vectors.json; %d Go tokens decrypted by Python" % len(doc["go_tokens_verified"]))


if __name__ == "__main__":
    main()
