"""`import asr_nb` (and every module in it) works without Jupyter, nbdev or plotting libraries,
and importing prints nothing."""
import pkgutil, subprocess, sys
from pathlib import Path
import asr_nb

BLOCKED = ["IPython", "ipywidgets", "ipykernel", "jupyter", "jupyter_core", "jupyterlab", "notebook", "nbdev",
           "execnb", "nbformat", "nbclient", "nbval", "matplotlib", "fastcore"]

SCRIPT = r'''
import importlib, importlib.abc, sys, pkgutil
BLOCKED = %r
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED: raise ImportError(f"{name} is not installed (blocked by test)")
        return None
sys.meta_path.insert(0, Block())
import asr_nb
mods = [m.name for m in pkgutil.iter_modules(asr_nb.__path__) if not m.name.startswith("_")]
for m in mods: importlib.import_module(f"asr_nb.{m}")
leaked = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
assert not leaked, leaked
print("IMPORTED", len(mods))
'''

def test_import_without_jupyter():
    r = subprocess.run([sys.executable, "-c", SCRIPT % (BLOCKED,)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("IMPORTED"), r.stdout
    n = int(lines[-1].split()[1])
    expected = [m.name for m in pkgutil.iter_modules(asr_nb.__path__) if not m.name.startswith("_")]
    assert n == len(expected) and n >= 2
    # nothing prints at import: the only stdout line is ours, and stderr is empty
    assert lines == [lines[-1]], r.stdout
    assert r.stderr.strip() == "", r.stderr[-2000:]

def test_console_scripts_declared():
    "Every console script in settings.ini points at a function that exists in asr_nb.cli."
    from configparser import ConfigParser
    cfg = ConfigParser(delimiters=["="]); cfg.read(Path(__file__).parents[1] / "settings.ini")
    scripts = cfg["DEFAULT"]["console_scripts"].split()
    assert len(scripts) >= 9
    import importlib
    for s in scripts:
        name, target = s.split("=")
        mod, fn = target.split(":")
        assert callable(getattr(importlib.import_module(mod), fn)), name
