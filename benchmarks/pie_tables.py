"""The README's PIE tables from one store: the rows of one blend and the first N edits only.

    python benchmarks/pie_tables.py runs/pie.sqlite mask 8 all
    python benchmarks/pie_tables.py runs/pie.sqlite mask 40 direct,edict,ddpm_edit_friendly,preciseinv

Copies the store (SQLite backup, so rows still in the WAL come along), deletes the other
rows from the copy and prints :func:`inversa.bench.edit_task.table` of it.
"""
import os
import sqlite3
import sys

from inversa.bench.edit_task import VAE_ROW, table


def subset(src: str, dst: str, blend: str, first: int, methods: list[str] | None) -> None:
    if os.path.exists(dst):
        os.remove(dst)
    with sqlite3.connect(dst) as out:
        sqlite3.connect(src).backup(out)
        ids = [r[0] for r in out.execute("SELECT DISTINCT image FROM edit_results ORDER BY image")][:first]
        keep = [r[0] for r in out.execute("SELECT config_hash FROM configs WHERE method = ? OR config LIKE ?",
                                          (VAE_ROW, f'%"blend": "{blend}"%'))]
        for column, values in (("image", ids), ("config_hash", keep), ("method", methods and methods + [VAE_ROW])):
            if values:
                out.execute(f"DELETE FROM edit_results WHERE {column} NOT IN ({','.join('?' * len(values))})", values)


if __name__ == "__main__":
    store, blend, first, methods = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    copy = f"{os.path.splitext(store)[0]}_{blend}_{first}.sqlite"
    subset(store, copy, blend, first, None if methods == "all" else methods.split(","))
    print(table(copy))
