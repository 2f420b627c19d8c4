"""The AISHELL-1 and LibriSpeech recipes train with the augmentation pipeline (issue 19): 3-way speed perturbation, then
noise, room reverberation and volume, from the user's MUSAN / RIR folders when the config names them, else built in."""
import numpy as np
import pytest
import soundfile as sf
import torch

from asr_nb.augment import make_augmenter
from asr_nb.recipes import aishell_recipe, librispeech_recipe

RECIPES = {'aishell': aishell_recipe, 'librispeech': librispeech_recipe}


def _sine(seconds=1.0, sr=16000):
    t = torch.arange(int(seconds * sr)) / sr
    return 0.3 * torch.sin(2 * np.pi * 220 * t)


@pytest.mark.parametrize('name', RECIPES)
def test_recipe_config_has_the_pipeline(tmp_path, name):
    cfg = RECIPES[name](tmp_path).cfg()
    assert cfg.features.speed_perturb == [0.9, 1.0, 1.1] and cfg.augment.speed.prob == 0   # speed perturbed once, not twice
    a = cfg.augment
    assert (a.noise.dir, a.reverb.dir) == ('', '') and a.noise.prob > 0 and a.reverb.prob > 0 and a.volume.prob > 0
    aug = make_augmenter(cfg, seed=0)
    assert aug.on == ['reverb', 'noise', 'volume']
    assert aug.noises.files == [] and len(aug.rirs) == a.reverb.num_rooms                  # built in: coloured noise, simulated rooms
    x = _sine()
    outs = [aug(x, f'utt{i}', epoch=0) for i in range(12)]
    assert all(torch.isfinite(y).all() and y.numel() == x.numel() for y in outs)
    assert sum(not torch.equal(y, x) for y in outs) >= 6                                  # most utterances changed
    assert all(torch.equal(y, aug(x, f'utt{i}', epoch=0)) for i, y in enumerate(outs))      # seeded per (seed, epoch, key)


@pytest.mark.parametrize('name', RECIPES)
def test_recipe_uses_user_noise_and_rir_folders(tmp_path, name):
    musan, rirs = tmp_path/'musan'/'noise'/'free-sound', tmp_path/'RIRS_NOISES'/'simulated_rirs'/'smallroom'
    musan.mkdir(parents=True); rirs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(musan/'noise-free-sound-0000.wav', (0.1 * rng.standard_normal(8000)).astype('float32'), 16000)
    h = np.zeros(800, 'float32'); h[0], h[400] = 1.0, 0.5
    sf.write(rirs/'Room001-00001.wav', h, 16000)
    r = RECIPES[name](tmp_path, overrides=[f'augment.noise.dir={tmp_path/"musan"}', f'augment.reverb.dir={tmp_path/"RIRS_NOISES"}'])
    aug = make_augmenter(r.cfg(), seed=0)
    assert [p.rsplit('/', 1)[-1] for p in aug.noises.files] == ['noise-free-sound-0000.wav'] and len(aug.rirs) == 1
    assert all(torch.isfinite(aug(_sine(), f'u{i}', 0)).all() for i in range(4))
