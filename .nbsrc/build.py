"Build nbs/18_shards.ipynb from the draft module and the prose/test cells below (cell ids kept stable by index)."
import json, hashlib, re
code = [c for c in open(".draft_shards.py").read().split("#### CELL\n") if c.strip()]
C = iter(code)
cells = []
def md(s): cells.append(('markdown', s.strip('\n')))
def py(s): cells.append(('code', s.strip('\n')))
def ex(): cells.append(('code', next(C).strip('\n')))

py('#| default_exp shards')
ex()   # imports
py('#| hide\nfrom fastcore.test import *\nfrom nbdev.showdoc import show_doc')
exec(open('.nbsrc/cells.py').read())
nb = dict(cells=[], metadata={'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}}, nbformat=4, nbformat_minor=5)
for i, (kind, s) in enumerate(cells):
    lines = s.splitlines(keepends=True)
    c = dict(cell_type=kind, id=hashlib.md5(f"18_shards-{i}".encode()).hexdigest()[:8], metadata={}, source=lines)
    if kind == 'code': c.update(execution_count=None, outputs=[])
    nb['cells'].append(c)
rest = list(C)
assert not [r for r in rest if r.strip()], f"unused code cells: {len(rest)}"
json.dump(nb, open('nbs/18_shards.ipynb', 'w'), indent=1, ensure_ascii=False); open('nbs/18_shards.ipynb', 'a').write('\n')
print(len(cells), 'cells')
