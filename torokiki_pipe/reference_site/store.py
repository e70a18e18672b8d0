"""The reference website's content: seeds and responses kept as JSON files in one folder.

Layout (every file written atomically, tempfile + os.replace: a reader never sees half a file)::

    STORE/image/{seed}/seed.json                 {"id": 1, "content": {...}}
    STORE/image/{seed}/responses/{id}.json       {"id", "seed", "idempotency_key", "location", "content"}
    STORE/idempotency/{sha256(key)}.json         {"key", "seed", "id", "location"}

``Store(root, site_url).populate()`` creates seeds 1, 2 and 3 (SEEDS: text, tags and a small
sepia PNG drawn by ``make_png``) when the folder holds no seed yet.  Response ids are one
counter across the store, starting at FIRST_RESPONSE_ID so that they never look like seed
ids; a response's ``location`` is its canonical URL under ``site_url``.  One process owns a
store at a time, and within it ``add_response`` is called with ``Store.lock`` held.  The
store checks nothing: what may be stored is contract.py's to say.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

from torokiki_pipe.adapters.records import write_atomically
from torokiki_pipe.reference_site.contract import content_url

FIRST_RESPONSE_ID = 101


def write_json_atomic(path: Path, value: Any) -> None:
    """Write `value` as JSON to `path` so that readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
    write_atomically(path, text.encode("utf-8"))


def _read_json_or_none(path: Path) -> Any | None:
    """The JSON in `path`, or None when there is no such file."""
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------- seeds

def make_png(width: int, height: int, pixel) -> bytes:
    """A valid 8-bit RGB PNG; `pixel(x, y)` returns (r, g, b)."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)                      # filter type: none
        for x in range(width):
            rows.extend(bytes(pixel(x, y)))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(rows), 9)) + chunk(b"IEND", b""))


def _sepia_pixels(seed: int):
    """A small sepia 'photograph': sky, a horizon, a darker street."""
    def pixel(x: int, y: int):
        if y < 10:                                      # sky
            shade = 200 - y * 3
        elif y < 12 + (x * seed) % 5:                   # roofline
            shade = 90
        else:                                           # street
            shade = 140 - (y - 12) * 4 + ((x + y * seed) % 7) * 3
        shade = max(20, min(235, shade))
        return (shade, int(shade * 0.85), int(shade * 0.65))
    return pixel


SEEDS = {
    1: {
        "name": "lambton-quay-1910.png",
        "Text": "Lambton Quay, Wellington, about 1910: electric trams and horse-drawn "
                "carts pass the shops that line the old shoreline.",
        "Tags": ["lambtonquay", "transport", "tram"],
        "Objective": "How do people get around the city?",
    },
    2: {
        "name": "cuba-street-1935.png",
        "Text": "Cuba Street in the 1930s: shoppers, verandas and a tram on its way "
                "into town.",
        "Tags": ["cubastreet", "shopping"],
        "Objective": "What do people wear?",
    },
    3: {
        "name": "oriental-bay-1925.png",
        "Text": "Bathers and strollers at Oriental Bay in the 1920s, with the "
                "Roseneath hills behind.",
        "Tags": ["orientalbay", "beach", "summer"],
    },
}


def seed_content(seed: int) -> dict:
    """The content object of seed `seed` (one of SEEDS), its picture drawn afresh."""
    info = SEEDS[seed]
    png = make_png(32, 24, _sepia_pixels(seed))
    return {
        "Submitter": "Torokiki curators <curators@torokiki.net>",
        "Text": info["Text"],
        "Tags": list(info["Tags"]),
        **({"Objective": info["Objective"]} if "Objective" in info else {}),
        "Attachment": {"name": info["name"], "data": base64.b64encode(png).decode("ascii")},
    }


# --------------------------------------------------------------------------- store

class Store:
    """Content kept as JSON files under one folder.  One process at a time."""

    def __init__(self, root: os.PathLike | str, site_url: str):
        self.root = Path(root)
        self.site_url = site_url.rstrip("/")
        self.lock = threading.Lock()
        self._last_id: int | None = None
        self.root.mkdir(parents=True, exist_ok=True)

    # paths
    def _seed_dir(self, seed: int) -> Path:
        return self.root / "image" / str(seed)

    def _response_path(self, seed: int, rid: int) -> Path:
        return self._seed_dir(seed) / "responses" / f"{rid}.json"

    def _idempotency_path(self, key: str) -> Path:
        return self.root / "idempotency" / (hashlib.sha256(key.encode("utf-8")).hexdigest() + ".json")

    def location(self, seed: int, rid: int) -> str:
        """The canonical URL of response `rid` to seed `seed`: what its Location says."""
        return content_url(self.site_url, seed, rid)

    # reading
    def populate(self) -> None:
        """Create seeds 1, 2, 3 when the store has no seed yet."""
        if any(self.seed_ids()):
            return
        for seed in SEEDS:
            write_json_atomic(self._seed_dir(seed) / "seed.json", {"id": seed, "content": seed_content(seed)})

    def seed_ids(self) -> list[int]:
        base = self.root / "image"
        if not base.is_dir():
            return []
        return sorted(int(p.name) for p in base.iterdir()
                      if p.name.isdigit() and (p / "seed.json").is_file())

    def seed(self, seed: int) -> dict | None:
        record = _read_json_or_none(self._seed_dir(seed) / "seed.json")
        return None if record is None else record["content"]

    def response(self, seed: int, rid: int) -> dict | None:
        record = _read_json_or_none(self._response_path(seed, rid))
        return None if record is None else record["content"]

    def responses(self) -> list[dict]:
        """Every stored response record, in id order."""
        records = []
        for path in (self.root / "image").glob("*/responses/*.json"):
            record = _read_json_or_none(path)
            if record is not None:
                records.append(record)
        return sorted(records, key=lambda r: r["id"])

    def earlier_submission(self, key: str) -> dict | None:
        """{"key", "seed", "id", "location"} of the response first stored with Idempotency-Key `key`."""
        return _read_json_or_none(self._idempotency_path(key))

    # writing (call with self.lock held)
    def _next_id(self) -> int:
        # One scan of the store, then a counter: only this process adds responses, and a
        # scan per POST grew with the store (the benchmark's website adds a thousand).
        if self._last_id is None:
            ids = [int(p.stem) for p in (self.root / "image").glob("*/responses/*.json") if p.stem.isdigit()]
            self._last_id = max(ids, default=FIRST_RESPONSE_ID - 1)
        self._last_id += 1
        return self._last_id

    def add_response(self, seed: int, content: dict, key: str | None, sent: bytes | None = None) -> dict:
        """Store a response.  `sent` is the JSON text `content` was parsed from, when there is one."""
        rid = self._next_id()
        record = {"id": rid, "seed": seed, "idempotency_key": key,
                  "location": self.location(seed, rid), "content": content}
        path = self._response_path(seed, rid)
        if sent is None:
            write_json_atomic(path, record)
        else:
            # The content is kept as the client sent it (parsed and validated already):
            # encoding a 7 MB photo's JSON again took longer than the rest of its POST.
            head = json.dumps({k: v for k, v in record.items() if k != "content"}, ensure_ascii=False)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, head[:-1].encode("utf-8") + b', "content": ' + sent + b"}\n")
        if key is not None:
            write_json_atomic(self._idempotency_path(key), {"key": key, "seed": seed, "id": rid,
                                                            "location": record["location"]})
        return record
