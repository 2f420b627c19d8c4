"""bench/peer_espnet.py's key table (ours -> ESPnet2) on our configs, and bench/bench_memory.py's one-case run.
Neither needs ESPnet2 installed: the table is plain data and the peer venv is an optional extra."""
import importlib.util, json, subprocess, sys
from pathlib import Path
import pytest
from asr_nb.core import load_config

ROOT = Path(__file__).resolve().parents[1]

def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m

pe = _load("peer_espnet")

def test_espnet_conf_of_the_4p6m_config():
    c = pe.espnet_conf(load_config(ROOT / "conf" / "espnet_4p6m.yaml"))
    e, d, m, s = c["encoder_conf"], c["decoder_conf"], c["model_conf"], c["specaug_conf"]
    assert (e["output_size"], e["attention_heads"], e["linear_units"], e["num_blocks"], e["cnn_module_kernel"]) == (144, 4, 576, 6, 15)
    assert (e["input_layer"], e["pos_enc_layer_type"], e["rel_pos_type"], e["macaron_style"], e["activation_type"]) == \
           ("conv2d", "rel_pos", "latest", True, "swish")
    assert (d["num_blocks"], d["linear_units"], d["attention_heads"]) == (3, 576, 4)  # heads 0 -> the encoder's 4
    assert (m["ctc_weight"], m["lsm_weight"], m["length_normalized_loss"]) == (0.3, 0.1, False)
    assert s["freq_mask_width_range"] == [0, 27] and s["time_mask_width_ratio_range"] == [0.0, 0.05]

def test_every_key_of_the_table_exists_in_our_config():
    cfg = load_config(None)
    for ours, *_ in pe.KEYMAP:
        root = cfg if ours.startswith("specaug.") else cfg.model
        pe._get(root, ours)  # AttributeError if a field was renamed

def test_unmappable_values_name_the_key():
    cfg = load_config(ROOT / "conf" / "espnet_4p6m.yaml")
    cfg.model.encoder.subsampling = 2  # our loader refuses it too; the table must not pass it through silently
    with pytest.raises(ValueError, match="encoder.subsampling=2"): pe.espnet_conf(cfg)
    with pytest.raises(ValueError, match="deepspeech2"):
        pe.espnet_conf(load_config(ROOT / "conf" / "deepspeech2_tiny.yaml"))

def test_peer_batch_equals_ours():
    "Both toolkits time identical tensors: the peer's make_batch is bench_model's, value for value."
    bm = _load("bench_model")
    import torch
    ours, theirs = bm.make_batch(3, 20, 4, 50, torch.device("cpu")), pe.make_batch(3, 20, 4, 50)
    for x, y in zip(ours[:4], theirs): assert torch.equal(x, y)

def test_memory_one_case(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_memory.py"), "--case", "conf/tiny.yaml", "train",
                          "--batch", "2", "--frames", "60", "--tokens", "5"], capture_output=True, text=True, cwd=ROOT)
    line = next(l for l in out.stdout.splitlines() if l.startswith("MEMORY_JSON "))
    r = json.loads(line[12:])
    assert r["config"] == "conf/tiny.yaml" and r["batch"] == 2 and r["torch_max_allocated_mib"] is None
    assert r["peak_rss_mib"] >= r["rss_before_mib"] > 50 and r["phase_added_mib"] == r["peak_rss_mib"] - r["rss_before_mib"]

def test_time_mask_width_when_no_ratio():
    s = pe.espnet_conf(load_config(ROOT / "conf" / "tiny.yaml"))["specaug_conf"]
    assert s["time_mask_width_range"] == [0, 15] and "time_mask_width_ratio_range" not in s

pt = _load("peer_train")

def test_peer_train_files(tmp_path):
    src = tmp_path / "src"; src.mkdir()
    (src / "wav.scp").write_text("u1 /a/1.wav\nu2 /a/2.wav\nu3 /a/3.wav\n")
    (src / "text").write_text("u2 ab a\nu1 ba\nu3 c\n")
    assert pt.prepare_split(src, tmp_path / "dst", 2) == ["u1", "u2"]
    assert (tmp_path / "dst" / "text").read_text() == "u1 ba\nu2 ab a\n"
    assert pt.token_list(tmp_path / "dst" / "text") == ["<blank>", "<unk>", "a", "b", "<space>", "<sos/eos>"]

def test_peer_train_cer(tmp_path):
    (tmp_path / "ref").write_text("u1 abc d\nu2 xy\n")
    (tmp_path / "hyp").write_text("u1 abd<space>d\n")
    r = pt.cer(tmp_path / "ref", tmp_path / "hyp")
    assert (r["errors"], r["chars"], r["missing"]) == (1 + 2, 6, 1) and r["cer"] == pytest.approx(50.0)

def test_peer_train_config_follows_ours():
    import dataclasses
    cfg = load_config(ROOT / "conf" / "tiny.yaml")
    c = pt.espnet_train_config(dataclasses.asdict(cfg), pe.espnet_conf(cfg), 3, Path("t.txt"), steps_per_epoch=56)
    assert (c["max_epoch"], c["optim_conf"]["lr"], c["scheduler"]) == (3, 0.003, "tristagelr")   # conf/tiny.yaml: tri_stage over the run
    assert c["scheduler_conf"] == dict(max_steps=168, warmup_ratio=0.15, hold_ratio=0.35, decay_ratio=0.5, init_lr_scale=0.01, final_lr_scale=0.02)
    with pytest.raises(SystemExit): pt.espnet_train_config(dataclasses.asdict(cfg), pe.espnet_conf(cfg), 3, Path("t.txt"))
    w = pt.espnet_train_config(dataclasses.asdict(load_config(ROOT / "conf" / "tiny_augment.yaml")), pe.espnet_conf(cfg), 3, Path("t.txt"))
    assert (w["scheduler"], w["scheduler_conf"]) == ("warmuplr", {"warmup_steps": 300})
    assert c["batch_bins"] == 6000 * 160 and c["best_model_criterion"] == [["valid", "loss", "min"]] and c["keep_nbest_models"] == 5
    assert c["encoder_conf"]["num_blocks"] == 4 and c["decoder_conf"]["num_blocks"] == 2
