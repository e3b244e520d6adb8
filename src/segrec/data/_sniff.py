"""What an input file is, from its name and first bytes: format, layout, what is wrong with it."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd

from .schema import Schema, movielens_schema

Source = str | os.PathLike | pd.DataFrame


_PARQUET_SUFFIXES = (".parquet", ".pq")


_HEAD_BYTES = 1 << 16


#: leading bytes of compressed / archive formats -> (name, how to unpack)
_MAGIC = ((b"\x1f\x8b", "gzip", "gunzip -k {f}"), (b"BZh", "bzip2", "bunzip2 -k {f}"),
          (b"\xfd7zXZ\x00", "xz", "unxz -k {f}"), (b"\x28\xb5\x2f\xfd", "zstd", "unzstd {f}"),
          (b"PK\x03\x04", "zip", "unzip {f}"), (b"7z\xbc\xaf\x27\x1c", "7z", "7z x {f}"))


def _detect(path: Path, schema: Schema | None, fmt: str) -> tuple[str, Schema]:
    """Choose reader and schema from ``fmt``, the file name and its first line."""
    if fmt.startswith("ml-"):
        return "csv", schema or movielens_schema(fmt)
    if fmt == "parquet" or (fmt == "auto" and path.suffix.lower() in _PARQUET_SUFFIXES):
        return "parquet", schema or Schema()
    if schema is not None and "sep" not in schema.model_fields_set:
        # column names given (--user-col ...), delimiter not: a tab-separated header still splits
        first = _first_line(path, schema.encoding)
        if "\t" in first and "," not in first:
            schema = schema.model_copy(update={"sep": "\t"})
        return "csv", schema
    if schema is not None or fmt == "csv":
        return "csv", schema or Schema()
    if path.name == "u.data":
        return "csv", movielens_schema("ml-100k")
    first = _first_line(path)
    if "::" in first:
        return "csv", movielens_schema("ml-1m")
    if "\t" in first and "," not in first:
        fields = first.split("\t")
        if all(_is_number(f) for f in fields):  # u.data-like: no header
            return "csv", movielens_schema("ml-100k") if len(fields) == 4 else Schema(sep="\t")
        return "csv", Schema(sep="\t")
    header = _split_header(first, ",")
    if "userId" in header and "movieId" in header and "user_id" not in header:
        return "csv", movielens_schema("ml-latest")
    return "csv", Schema()


def _first_line(path: Path, encoding: str = "utf-8") -> str:
    with open(path, encoding=encoding, errors="replace", newline="") as fh:
        # a byte-order mark (Excel exports) is not part of the first column's name
        return fh.readline(1 << 16).rstrip("\r\n").lstrip("\ufeff")


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(_HEAD_BYTES)


def sniff(head: bytes, name: str, encoding: str = "utf-8") -> str | None:
    """What is wrong with a file from its first bytes, as the end of a one-line message; None if nothing.

    Names compression (gzip, bzip2, xz, zstd, zip, 7z), UTF-16 / UTF-32 text, binary
    content and text that is not valid in ``encoding``, each with what to do, so the
    message never quotes kilobytes of binary. Returns ``"parquet"`` for Parquet content.
    """
    if head[:4] == b"PAR1":
        return "parquet"
    for magic, kind, unpack in _MAGIC:
        if head.startswith(magic):
            return (f"is {kind}-compressed; decompress it first ({unpack.format(f=name)}) and pass the "
                    "extracted CSV or Parquet file")
    enc = encoding.lower().replace("_", "-")
    wide = enc.startswith(("utf-16", "utf-32"))
    if not wide:
        for bom, kind in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                          (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
            if head.startswith(bom):
                return (f"is {kind} text; pass --encoding {kind.lower()} (config: [data] encoding), or save "
                        f"it as UTF-8 (iconv -f {kind} -t UTF-8 {name} > out.csv)")
        nul = head.find(b"\x00")
        if nul >= 0:
            sample = head[:200]
            if sample[1::2].count(0) > len(sample) // 4 or sample[0::2].count(0) > len(sample) // 4:
                return ("looks like UTF-16 text without a byte-order mark; pass --encoding utf-16-le "
                        "(or utf-16-be), or save it as UTF-8")
            return (f"is not a text file (it holds a NUL byte at byte {nul}); expected CSV/TSV text or a "
                    "Parquet file")
    if enc in ("utf-8", "utf8", "utf-8-sig"):
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            # (not a character cut in two by the end of the sample)
            if exc.start < len(head) - 4 or len(head) < _HEAD_BYTES:
                line = head[: exc.start].count(b"\n") + 1
                return (f"is not valid UTF-8 text (byte {head[exc.start]:#04x} on line {line}); pass "
                        "--encoding with the file's encoding, e.g. --encoding latin-1 "
                        "(config: [data] encoding)")
    return None


def _clean(text: str, limit: int = 200) -> str:
    """An error text from a reader, printable and short (readers quote whole rows of binary)."""
    text = "".join(c if c.isprintable() else "?" for c in str(text).replace("\n", " "))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _split_header(line: str, sep: str) -> list[str]:
    if len(sep) == 1:
        return next(csv.reader([line], delimiter=sep), [])
    return line.split(sep)
