"""Regenerate the hostile regression corpus: `python tests/data/hostile/make.py`.

Each file is a shape that once crashed, hung or silently lost lines in a reader (issue 12);
expected.json says exactly what `load()` must make of it. The files are kept in the repository
so that the shapes stay fixed even if this script changes.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
SRC = HERE.parent / "v1" / "unread_default.jsonl"


def main() -> None:
    lines = SRC.read_text().splitlines()
    head, body = lines[0], lines[1:]
    ev = body[0]
    files: dict[str, bytes] = {
        "empty.jsonl": b"",
        "only_header.jsonl": (head + "\n").encode(),
        "no_header.jsonl": ("\n".join(body) + "\n").encode(),
        "header_not_object.jsonl": b"[1,2,3]\n" + ("\n".join(body) + "\n").encode(),
        "header_wrong_types.jsonl": (
            json.dumps({"type": "header", "format": "rsttrace", "version": 2, "sources": "nope"}) + "\n" + ev + "\n"
        ).encode(),
        "header_nan.jsonl": b'{"type":"header","format":"rsttrace","version":NaN}\n' + (ev + "\n").encode(),
        "version_true.jsonl": b'{"type":"header","format":"rsttrace","version":true}\n' + (ev + "\n").encode(),
        "truncated_last_line.jsonl": ("\n".join(lines[:-1]) + "\n" + lines[-1][:30]).encode(),
        "deep_nesting.jsonl": (
            "\n".join(
                [
                    head,
                    body[0],
                    '{"type":"event","ts_ns":5,"kind":"x","deep":' + "[" * 100000 + "]" * 100000 + "}",
                    *body[1:],
                ]
            )
            + "\n"
        ).encode(),
        "deep_nesting_unknown_type.jsonl": (
            "\n".join([head, '{"type":"zzz","a":' + '{"a":' * 3000 + "1" + "}" * 3000 + "}", *body]) + "\n"
        ).encode(),
        "nan_infinity.jsonl": (
            "\n".join(
                [
                    head,
                    ev.replace('"bytes":1000', '"bytes":NaN'),
                    ev.replace('"bytes":1000', '"bytes":Infinity'),
                    ev.replace('"bytes":1000', '"bytes":1e400'),
                    *body,
                ]
            )
            + "\n"
        ).encode(),
        "wrong_types.jsonl": (
            "\n".join(
                [
                    head,
                    ev.replace('"pid":16107', '"pid":"16107"'),
                    ev.replace('"kind":"close"', '"kind":7'),
                    ev.replace('"flags":[]', '"flags":{"a":1}'),
                    ev.replace('"ts_ns":545235271619', '"ts_ns":true'),
                    '{"type":"incident","id":1,"kind":"x","local":"here"}',
                    '{"type":"incident"}',
                    '{"type":"summary","stats":"all good"}',
                    '{"type":42}',
                    *body,
                ]
            )
            + "\n"
        ).encode(),
        "huge_integers.jsonl": (
            "\n".join(
                [
                    head,
                    ev.replace('"pid":16107', '"pid":' + "9" * 400),
                    ev.replace('"sk":18446612686436075840', '"sk":18446744073709551616'),
                    ev.replace('"lport":35317', '"lport":4294967296'),
                    *body,
                ]
            )
            + "\n"
        ).encode(),
        "not_utf8.jsonl": ("\n".join([head, *body[:3]]) + "\n").encode() + b'{"type":"event","ts_ns":1,'
        b'"kind":"\xff\xfe"}\n' + ("\n".join(body[3:]) + "\n").encode(),
        "crlf_and_blank.jsonl": ("\r\n".join([head, *body]) + "\r\n\n\n").encode(),
        "bom.jsonl": b"\xef\xbb\xbf" + SRC.read_bytes(),
        "nul_bytes.jsonl": SRC.read_bytes()
        .replace(b'"rst_client"', b'"rst\x00client"', 1)
        .replace(b"\n", b"\n\x00\x00\x00\n", 1),
        "escape_sequences.jsonl": SRC.read_text()
        .replace('"rst_server"', '"\\u001b[2J\\u001b]0;owned\\u0007"')
        .encode(),
        "incident_flattened_types.jsonl": (
            "\n".join(
                [
                    head,
                    *body[:9],
                    body[9].replace('"exit_signal":13', '"exit_signal":"13"'),
                    body[9].replace('"timestamps":{', '"close":{"wait_age_ns":18446744073709551615},"timestamps":{'),
                    *body[9:],
                ]
            )
            + "\n"
        ).encode(),
        "src_out_of_range.jsonl": (
            "\n".join([head, ev.replace('"type":"event"', '"type":"event","src":7'), *body]) + "\n"
        ).encode(),
        "second_header.jsonl": ("\n".join([head, *body[:2], head, *body[2:]]) + "\n").encode(),
        "binary_garbage.jsonl": bytes(range(256)) * 4,
        "parquet_magic.jsonl": b"PAR1" + bytes(100) + b"PAR1",
        "garbage.events.parquet": b"PAR1" + b"\x15\x00" * 50 + b"PAR1",
        "garbage.incidents.parquet": b"PAR1 nothing here PAR1",
    }
    for name, data in files.items():
        (HERE / name).write_bytes(data)


if __name__ == "__main__":
    main()
