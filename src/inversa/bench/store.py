"""The results store: one SQLite file (WAL), one row per image x method x config.

Rows are written as each finishes, so an interrupted run loses nothing that finished
and a restart skips what is there (the primary key makes a second write a no-op).
Several processes may write the same store at once (data-parallel runs): WAL lets
readers and one writer proceed together and the busy timeout serialises writers.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass

from inversa.core.errors import InversaError

METRICS = ("psnr", "ssim", "ms_ssim", "latent_mse", "lpips", "seconds", "total_seconds", "nfe", "iters",
           "peak_mem_mb")
COLUMNS = ("image", "method", "config_hash", "status", "error", *METRICS, "residuals", "original", "recon",
           "caption", "worker", "finished")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS configs (
    config_hash TEXT PRIMARY KEY, method TEXT NOT NULL, config TEXT NOT NULL, protocol TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    image TEXT NOT NULL, method TEXT NOT NULL, config_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')), error TEXT,
    {", ".join(f"{m} REAL" for m in METRICS)},
    residuals TEXT, original TEXT, recon TEXT, caption TEXT, worker INTEGER, finished REAL NOT NULL,
    PRIMARY KEY (image, method, config_hash));
"""


def config_hash(config: dict) -> str:
    """Short stable hash of a JSON-able configuration (sorted keys)."""
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class Store:
    path: str

    def __post_init__(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)) or ".", exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        try:
            self._retry(lambda: self.db.execute("PRAGMA journal_mode=WAL"))
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._retry(lambda: self.db.executescript(SCHEMA))
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise InversaError(f"{self.path} is not a usable results store ({exc})") from None

    @staticmethod
    def _retry(fn, tries: int = 20):
        for k in range(tries):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or k == tries - 1:
                    raise
                time.sleep(0.05 * (k + 1))

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # writing ---------------------------------------------------------------------------------------------------
    def add_config(self, chash: str, method: str, config: dict, protocol: dict) -> None:
        self._retry(lambda: self.db.execute(
            "INSERT OR IGNORE INTO configs VALUES (?, ?, ?, ?)",
            (chash, method, json.dumps(config, sort_keys=True), json.dumps(protocol, sort_keys=True))))

    def write(self, row: dict) -> bool:
        """Insert one finished row (committed at once); False when the key was already there."""
        row = {**row, "finished": row.get("finished") or time.time()}
        if isinstance(row.get("residuals"), (list, tuple)):
            row["residuals"] = json.dumps(row["residuals"])
        values = [row.get(c) for c in COLUMNS]
        cur = self._retry(lambda: self.db.execute(
            f"INSERT OR IGNORE INTO results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            values))
        return cur.rowcount == 1

    def merge(self, other: str) -> int:
        """Copy rows and configs of another store in (existing keys win); returns rows added."""
        before = self.count()
        self.db.execute("ATTACH DATABASE ? AS other", (other,))
        try:
            self._retry(lambda: self.db.executescript(
                "BEGIN; INSERT OR IGNORE INTO configs SELECT * FROM other.configs;"
                f"INSERT OR IGNORE INTO results ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} "
                "FROM other.results; COMMIT;"))
        finally:
            self.db.execute("DETACH DATABASE other")
        return self.count() - before

    # reading ---------------------------------------------------------------------------------------------------
    def done(self) -> set[tuple[str, str, str]]:
        """Keys (image, method, config_hash) already recorded, finished or failed."""
        return {tuple(r) for r in self.db.execute("SELECT image, method, config_hash FROM results")}

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def rows(self) -> list[dict]:
        out = []
        for r in self.db.execute("SELECT * FROM results ORDER BY method, config_hash, image"):
            d = dict(r)
            d["residuals"] = json.loads(d["residuals"]) if d["residuals"] else None
            out.append(d)
        return out

    def configs(self) -> dict[str, dict]:
        return {r["config_hash"]: {"method": r["method"], "config": json.loads(r["config"]),
                                   "protocol": json.loads(r["protocol"])}
                for r in self.db.execute("SELECT * FROM configs")}
