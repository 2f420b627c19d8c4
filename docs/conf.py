"""Sphinx configuration of the asr_nb documentation site (built by `make docs`).

The pages are the notebooks in nbs/ (reached through the `docs/nbs` link), read with their stored outputs by
myst-nb and never executed; the API reference comes from the package's docstrings through autodoc.
"""
import configparser, importlib.util, shutil, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_ini = configparser.ConfigParser(); _ini.read(ROOT/'settings.ini')

project = 'asr_nb'
author = _ini['DEFAULT']['author']
copyright = _ini['DEFAULT']['copyright']
release = version = _ini['DEFAULT']['version']

extensions = ['myst_nb', 'sphinx.ext.autodoc', 'sphinx.ext.napoleon', 'sphinx.ext.viewcode']
nb_execution_mode = 'off'                 # the notebooks' stored outputs are the pages; nothing runs
nb_merge_streams = True
myst_enable_extensions = ['dollarmath', 'amsmath']
myst_heading_anchors = 3                  # `[x](#a-heading)` links inside a notebook resolve
exclude_patterns = ['_build', 'nbs/files', 'nbs/**/.ipynb_checkpoints', 'nbs/_*']
suppress_warnings = ['myst.header', 'mystnb.unknown_mime_type', 'toc.not_included']

autodoc_member_order = 'bysource'
autodoc_default_options = {'members': True, 'undoc-members': False, 'show-inheritance': True}
autodoc_typehints = 'signature'
autodoc_mock_imports = ['torch_npu']

html_theme = 'furo'
html_title = f'asr_nb {release}'
html_show_sourcelink = False
html_favicon = '_static/favicon.svg'

# Math renders without the internet: MathJax 3 from the sphinx-mathjax-offline wheel (a dev requirement), one file
# copied into _static/mathjax: TeX input with every extension and SVG output, so it fetches no fonts or components.
_MATHJAX = Path(importlib.util.find_spec('sphinx-mathjax-offline').origin).parent/'static'/'mathjax'/'tex-svg-full.js'
mathjax_path = f'mathjax/{_MATHJAX.name}'


def _api_sections() -> str:
    "One autodoc section per module of the package (generated modules only; `_modidx` is nbdev's index)."
    mods = sorted(p.stem for p in (ROOT/'asr_nb').glob('*.py') if not p.stem.startswith('_'))
    return '\n'.join(f'## `asr_nb.{m}`\n\n```{{automodule}} asr_nb.{m}\n```\n' for m in mods)


def _fill_api(app, docname, source):
    if docname == 'api': source[0] = source[0].replace('<!-- modules -->', _api_sections())


def _copy_mathjax(app, exc):
    "After an HTML build, put the MathJax file where `mathjax_path` points."
    if exc is None and app.builder.format == 'html':
        dst = Path(app.outdir)/'_static'/mathjax_path
        if not dst.exists() or dst.stat().st_size != _MATHJAX.stat().st_size:
            dst.parent.mkdir(parents=True, exist_ok=True); shutil.copyfile(_MATHJAX, dst)


def setup(app):
    app.connect('source-read', _fill_api)
    app.connect('build-finished', _copy_mathjax)
