"""The documentation site in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`) opens
every page of docs/_build/html through a local HTTP server and fails on a JavaScript error (console errors), an
image that does not load, or an internal link (or `#anchor`) that leads nowhere. Screenshots of the home page
and of one notebook page go to docs/_build/screenshots (paths printed).

The site is built by `make docs` (a dependency of `make test`); if no build exists, this test builds it.
The site works offline: a request to anything outside it (a CDN's MathJax, say) is a defect, and the formulas of a
notebook page are typeset by the site's own MathJax."""
import functools, http.server, os, re, shutil, subprocess, sys, threading
from pathlib import Path
from urllib.parse import urlsplit, unquote
import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT/'docs'/'_build'/'html'
SHOTS = ROOT/'docs'/'_build'/'screenshots'
CHROMIUM, DRIVER = shutil.which('chromium'), shutil.which('chromedriver')

_MISSING = 'needs Debian packages chromium and chromium-driver (`make system` installs them)'
if not (CHROMIUM and DRIVER) and os.environ.get('CI') == 'true':
    raise RuntimeError(f'CI must run the browser test: {_MISSING}')
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason=_MISSING)


def _pages() -> list[str]:
    "Every page a reader reaches: the home page, the notebooks, the API reference, index and search."
    return sorted(str(p.relative_to(SITE)) for p in SITE.rglob('*.html')
                  if not str(p.relative_to(SITE)).startswith(('_modules', '_sources', '_static')))


@pytest.fixture(scope='module')
def site():
    if not (SITE/'index.html').exists():
        subprocess.run([sys.executable, '-m', 'sphinx', '-b', 'html', '-q', 'docs', str(SITE)], cwd=ROOT, check=True)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    handler = functools.partial(Quiet, directory=str(SITE))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_port}/'
    srv.shutdown()


@pytest.fixture(scope='module')
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--window-size=1280,900'):
        opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield d
    d.quit()


_LINKS = "return Array.from(document.querySelectorAll('a[href]'), a => a.href)"
_IMAGES = "return Array.from(document.images, i => [i.src, i.complete && i.naturalWidth > 0])"
_REQUESTS = "return performance.getEntriesByType('resource').map(e => e.name).concat(Array.from(document.scripts, s => s.src).filter(s => s))"


def _target(base: str, url: str) -> tuple[Path, str] | None:
    "The file (and fragment) a same-site URL leads to; None for an external URL."
    if not url.startswith(base): return None
    u = urlsplit(url)
    p = SITE/unquote(u.path.lstrip('/'))
    return (p/'index.html' if p.is_dir() else p), u.fragment


@functools.lru_cache(None)
def _ids(page: Path) -> frozenset:
    return frozenset(re.findall(r'\bid="([^"]+)"', page.read_text(encoding='utf-8')))


def check_page(browser, base: str, page: str) -> tuple[list[str], list[str]]:
    "Problems on one page, and the requests it made outside the site (scripts, styles, fonts, images)."
    browser.get(base + page)
    problems, external = [], []
    for e in browser.get_log('browser'):
        if e['level'] != 'SEVERE': continue
        m = re.match(r'(\S+)', e['message'])
        if m and m.group(1).startswith('http') and not m.group(1).startswith(base): external.append(m.group(1))
        else: problems.append(f'console error: {e["message"]}')
    external += [u for u in browser.execute_script(_REQUESTS) if u.startswith('http') and not u.startswith(base)]
    for src, ok in browser.execute_script(_IMAGES):
        t = _target(base, src)
        if not ok or (t and not t[0].exists()): problems.append(f'image does not load: {src}')
    for href in set(browser.execute_script(_LINKS)):
        t = _target(base, href)
        if t is None: continue
        f, frag = t
        if not f.exists(): problems.append(f'broken link: {href}')
        elif frag and f.suffix == '.html' and frag not in _ids(f): problems.append(f'broken anchor: {href}')
    return problems, external


def test_every_page_loads_without_errors(site, browser):
    pages = _pages()
    assert 'index.html' in pages and 'api.html' in pages and len([p for p in pages if p.startswith('nbs/')]) >= 20
    problems, external = {}, set()
    for page in pages:
        bad, ext = check_page(browser, site, page)
        if bad: problems[page] = bad
        external.update(ext)
    assert not problems, '\n'.join(f'{p}: {x}' for p, xs in problems.items() for x in xs)
    assert not external, f'requests outside the site (it must work offline): {sorted(external)[:5]}'


def test_math_renders_offline(site, browser):
    "The decoding notebook's formulas are typeset (SVG) by the site's own copy of MathJax; nothing comes from outside."
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get(site + 'nbs/13_decode.html')
    count = "return document.querySelectorAll('mjx-container svg').length"
    n = WebDriverWait(browser, 60).until(lambda d: d.execute_script(count) >= 10 and d.execute_script(count))
    scripts = browser.execute_script("return Array.from(document.scripts, s => s.src).filter(s => s)")
    assert any(s == site + '_static/mathjax/tex-svg-full.js' for s in scripts), scripts
    assert n >= 10 and browser.execute_script("return document.querySelectorAll('[data-mml-node=merror]').length") == 0  # no TeX errors
    text = browser.find_element('tag name', 'article').text
    assert '\\lambda' not in text and '$$' not in text, 'raw TeX left on the page'
    assert not [u for u in browser.execute_script(_REQUESTS) if not u.startswith(site)]


def test_notebook_pages_show_their_pictures(site, browser):
    "The stored figures of a notebook are on its page (the Conformer notebook draws several)."
    browser.get(site + 'nbs/07_conformer.html')
    imgs = [s for s, ok in browser.execute_script(_IMAGES) if ok and '/_images/' in s]
    assert len(imgs) >= 1, imgs


def test_screenshots(site, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    for page, name in (('index.html', 'home.png'), ('nbs/07_conformer.html', 'notebook_07_conformer.png')):
        browser.get(site + page)
        assert browser.save_screenshot(str(SHOTS/name))
        assert (SHOTS/name).stat().st_size > 10_000
        print(f'screenshot: {SHOTS/name}')


def test_check_page_catches_defects(site, browser, tmp_path):
    "The checker itself fails on a missing image, a broken link, a broken anchor and a JavaScript error."
    bad = SITE/'_broken_test_page.html'
    bad.write_text('<html><body><img src="_images/nope.png"><a href="nope.html">x</a>'
                   '<a href="index.html#no-such-anchor">y</a><script>undefined_function()</script>'
                   '<script src="https://cdn.invalid/mathjax.js"></script></body></html>')
    try: problems, external = check_page(browser, site, bad.name)
    finally: bad.unlink()
    assert 'https://cdn.invalid/mathjax.js' in external, external
    text = '\n'.join(problems)
    for want in ('image does not load', 'broken link', 'broken anchor', 'console error'): assert want in text, text
