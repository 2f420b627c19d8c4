"""Numbers in README come from generated files: the main job's table must equal bench/results/tiny_recipe.json."""
import json, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def generated_table_and_section(script: str, heading: str, *args: str) -> tuple[str, str]:
    "The table `bench/<script> *args` prints, and README's section under `## <heading>`."
    import subprocess, sys
    table = subprocess.run([sys.executable, str(ROOT/'bench'/script), *args], capture_output=True, text=True, check=True).stdout
    return table, (ROOT/'README.md').read_text().split(f'## {heading}', 1)[1].split('\n## ', 1)[0]

def test_readme_main_job_table_matches_its_generated_file():
    rows = json.loads((ROOT/'bench'/'results'/'tiny_recipe.json').read_text())['rows']
    readme = (ROOT/'README.md').read_text()
    section = readme.split('## What the main job prints', 1)[1].split('\n## ', 1)[0]
    got = {}
    for line in section.splitlines():
        m = re.match(r"\| (\w+)[^|]* \| \**([\d.]+)\** \| ([\d.]+) \| ([\d.]+) \|", line)
        if m: got[m.group(1)] = tuple(float(x) for x in m.groups()[1:])
    want = {r['method']: (r['cer_pct'], r['wer_pct'], r['rtf']) for r in rows}
    assert {k: v for k, v in got.items() if k in want} == want, (got, want)   # the section also holds the time-to-accuracy table

def test_readme_families_table_is_the_generated_one():
    table, section = generated_table_and_section('families_table.py', 'The model families')
    assert table.strip() in section, table
    assert table.count('\n') >= 7   # the Conformer, DeepSpeech2 (with and without the LM), Paraformer and wav2vec 2.0 rows

def test_readme_augmentation_table_is_the_generated_one():
    "#19's with/without-augmentation table in README is the one bench/augment_effect.py makes from its result file."
    table, section = generated_table_and_section('augment_effect.py', 'What augmentation buys', '--table')
    assert table.strip() in section, table
    res = json.loads((ROOT/'bench'/'results'/'augment_effect.json').read_text())
    assert len({(b['epochs'], b['updates']) for b in res['budget'].values()}) == 1   # every run had the same budget

def test_readme_time_to_accuracy_table_is_the_generated_one():
    "#15 part 5: README's time-to-accuracy table is the one bench/time_to_accuracy.py makes from its result file."
    table, section = generated_table_and_section('time_to_accuracy.py', 'What the main job prints', '--table')
    assert table.strip() in section, table
    res = json.loads((ROOT/'bench'/'results'/'time_to_accuracy.json').read_text())
    assert res['rows'][0]['run'] == 'before' and all(r['minutes_to_target'] for r in res['rows'])
