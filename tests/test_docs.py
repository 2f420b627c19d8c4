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
    "#19's with/without-augmentation tables in README are the ones bench/augment_effect.py makes from its result files."
    for name in ('augment_effect.json', 'augment_effect_48.json'):
        out = str(ROOT/'bench'/'results'/name)
        table, section = generated_table_and_section('augment_effect.py', 'What augmentation buys', '--table', '--out', out)
        assert table.strip() in section, table
        res = json.loads(Path(out).read_text())
        assert len({(b['epochs'], b['updates']) for b in res['budget'].values()}) == 1   # every run had the same budget
    # the prose's claims at 48 epochs: new conditions at most 0.6x for every method, every clean interval contains 0
    cer, ci = res['cer'], res['cer_diff_vs_without']
    assert all(d['channel'] / d['without'] <= 0.6 for d in cer['new conditions'].values())
    assert all(c['channel']['low'] <= 0 <= c['channel']['high'] for c in ci['clean held-out voices'].values())
    assert all(c['channel']['high'] < 0 for c in ci['new conditions'].values())

def test_readme_time_to_accuracy_table_is_the_generated_one():
    "#15 part 5: README's time-to-accuracy table is the one bench/time_to_accuracy.py makes from its result file."
    table, section = generated_table_and_section('time_to_accuracy.py', 'What the main job prints', '--table')
    assert table.strip() in section, table
    res = json.loads((ROOT/'bench'/'results'/'time_to_accuracy.json').read_text())
    assert res['rows'][0]['run'] == 'before' and all(r['minutes_to_target'] for r in res['rows'])
    q = {r['run']: r for r in res['rows']}['quiet']   # the prose under the table quotes the quiet run's figures
    g = q['test_vs_reference']['ctc_greedy']
    for quoted in (f"{q['speedup_to_target']:.2f}x alone on the machine", f"({g['diff']:+.2f} points, interval [{g['low']:+.2f}, {g['high']:+.2f}])"):
        assert quoted in ' '.join(section.split()), quoted
    assert not any(r['test_vs_reference']['joint']['beyond_noise'] for r in res['rows'][1:])   # "within the test set's noise"

def test_readme_speed_and_paraformer_figures_come_from_their_files():
    "#15/#13: the figures README quotes in prose (decoding RTF, real training, the CTC predictor's ratios) are the result files'."
    readme = (ROOT/'README.md').read_text()
    res = lambda name: json.loads((ROOT/'bench'/'results'/f'{name}.json').read_text())
    dec = {r['method']: r['rtf'] for r in res('decode_tiny')['rows'] if r['threads'] == 2}
    rt, para = res('real_training'), res('paraformer_tiny')['target_cer']['ctc_predictor_tri_stage_s8']
    alt = res('real_training_alternated')
    rt2 = res('real_training_s10')                                 # the same benchmark run again (session 10)
    assert rt2['espnet2']['test'] == rt['espnet2']['test'] and rt2['asr_nb']['test'] == rt['asr_nb']['test']   # "the same test CERs"
    quoted = [f"real-time factor {dec['ctc_greedy']:.4f} (CTC greedy)", f"{dec['joint']:.4f} (joint CTC/attention",
              f"ESPnet2's training took {rt['espnet2']['train_s'] / 60:.1f} min, ours {rt['asr_nb']['train_s'] / 60:.1f} min ({rt['speedup_train']}x",
              f"ESPnet2 {rt['espnet2']['test']['cer']:.2f} %, asr_nb {rt['asr_nb']['test']['cer']:.2f} %",
              f"ESPnet2 {rt2['espnet2']['train_s'] / 60:.1f} min, ours {rt2['asr_nb']['train_s'] / 60:.1f} min ({rt2['speedup_train']}x)",
              f"ours took {min(rt2['asr_nb']['epoch_s'])} to {max(rt2['asr_nb']['epoch_s'])} s per epoch",
              f"ours trained at {alt['speedup_train_median']}x ESPnet2's input frames per second (rounds {alt['speedup_train_range'][0]}x to {alt['speedup_train_range'][1]}x)",
              f"{para['at_epoch_24_vs_greedy']}x the Conformer's CTC greedy and {para['at_epoch_24_vs_joint']}x its joint search"]
    prtf = {r['batch_size']: r for r in res('paraformer_rtf_s8')['rows'] if 'rtf_ratio' in r}
    quoted += [f"{prtf[1]['rtf_ratio']:.2f}x the joint search's (beam 10) at batch 1 and {prtf[8]['rtf_ratio']:.2f}x at batch 8",
               f"CTC greedy search (the same encoder, then an argmax) takes {prtf[8]['floor_ratio']:.2f}x"]
    assert prtf[8]['floor_ratio'] > 0.3   # the claim that the target is out of reach at batch 8
    missing = [q for q in quoted if q not in ' '.join(readme.split())]
    assert not missing, missing
