"""README tables from runs/pie.sqlite: copies restricted to the wanted rows, printed by edit_task.table."""
import shutil, sqlite3, sys
from inversa.bench.edit_task import table
src, blend, first, methods = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
dst = f"/tmp/i16/table_{blend}_{first}.sqlite"
import os
if os.path.exists(dst): os.remove(dst)
with sqlite3.connect(dst) as out: sqlite3.connect(src).backup(out)
db = sqlite3.connect(dst)
ids = [r[0] for r in db.execute("SELECT DISTINCT image FROM edit_results ORDER BY image")][:first]
keep = {r[0] for r in db.execute("SELECT config_hash FROM configs WHERE method = 'vae_roundtrip' OR config LIKE ?",
                                 (f'%"blend": "{blend}"%',))}
db.execute(f"DELETE FROM edit_results WHERE image NOT IN ({','.join('?' * len(ids))})", ids)
db.execute(f"DELETE FROM edit_results WHERE config_hash NOT IN ({','.join('?' * len(keep))})", list(keep))
if methods != "all":
    ms = methods.split(",") + ["vae_roundtrip"]
    db.execute(f"DELETE FROM edit_results WHERE method NOT IN ({','.join('?' * len(ms))})", ms)
db.commit(); db.close()
print(table(dst))
