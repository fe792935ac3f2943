"""`nnc train` (`compiler/train_cli.py`) with a fake `nnc.train` that returns a
hand-written trainer (tests/tiny_trainers.py): output files, per-epoch
lines, shuffling by the seed, the kept last partial batch, resuming, and bad
data refused with exit 1 naming the array."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest

import nnc
from nnc.compiler import train_cli
from tiny_trainers import trainer_class

N_IN, N_OUT = 4, 3


@pytest.fixture
def fake(monkeypatch):
    """`nnc.train` replaced: records its calls and the trainers it made."""
    record = {"calls": [], "trainers": []}

    def train(model, loss="cross_entropy", optimizer=None, batch=32, weights=None, dims=None, target="numpy",
              seed=0, keep_gradients=False, capacity=None):
        record["calls"].append(dict(model=model, loss=loss, optimizer=optimizer, batch=batch, weights=weights,
                                    dims=dims, target=target, seed=seed))
        t = trainer_class(N_IN, N_OUT, loss)(optimizer, batch=batch, weights=weights, seed=seed,
                                            keep_gradients=keep_gradients)
        record["trainers"].append(t)
        return t

    monkeypatch.setattr(nnc, "train", train, raising=False)
    return record


def parse(argv):
    p = argparse.ArgumentParser(prog="nnc")
    sub = p.add_subparsers(dest="command", required=True)
    train_cli.add_parser(sub)
    return p.parse_args(["train", *map(str, argv)])


def main(argv):
    return train_cli.run(parse(argv))


def write_data(path, n=10, n_val=None, loss="cross_entropy", seed=0, **override):
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.standard_normal((n, N_IN)).astype(np.float32)}
    arrays["y"] = rng.integers(0, N_OUT, n) if loss == "cross_entropy" else rng.random((n, N_OUT)).astype(np.float32)
    if n_val:
        arrays["x_val"] = rng.standard_normal((n_val, N_IN)).astype(np.float32)
        arrays["y_val"] = (rng.integers(0, N_OUT, n_val) if loss == "cross_entropy"
                           else rng.random((n_val, N_OUT)).astype(np.float32))
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def test_training_writes_weights_and_optimizer_state_and_reports_each_epoch(fake, tmp_path, capsys):
    write_data(tmp_path / "d.npz", n=10, n_val=6)
    out, opt = tmp_path / "w.npz", tmp_path / "opt.npz"
    code = main(["m.nn", "--data", tmp_path / "d.npz", "--batch", 4, "--epochs", 2, "-o", out,
                 "--save-optimizer", opt, "--lr", "0.01"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0].startswith("epoch 1/2: train loss ") and "val loss" in lines[0] and "val accuracy" in lines[0]
    assert lines[1].startswith("epoch 2/2: ")
    assert lines[2:] == [str(out), str(opt)]
    assert "loss" in captured.err and "ex/s" in captured.err          # the progress bar
    trainer = fake["trainers"][0]
    with np.load(out) as w:
        assert sorted(w.files) == ["fc.bias", "fc.weight"]
        for k, v in trainer.state_dict().items():
            np.testing.assert_array_equal(w[k], v)
    with np.load(opt) as o:
        assert int(o["step"]) == 6                                     # 2 epochs of 3 steps (4, 4, 2)
        assert "fc.weight.exp_avg" in o.files
    call = fake["calls"][0]
    assert call["batch"] == 4 and call["loss"] == "cross_entropy" and call["optimizer"] == nnc.runtime.optim.Adam(lr=0.01)


def test_the_last_partial_batch_is_kept_and_every_example_is_seen_each_epoch(fake, tmp_path):
    data = write_data(tmp_path / "d.npz", n=10)
    assert main(["m.nn", "--data", tmp_path / "d.npz", "--batch", 4, "--epochs", 2, "-o", tmp_path / "w.npz"]) == 0
    seen = fake["trainers"][0].seen
    assert [len(b) for b in seen] == [4, 4, 2, 4, 4, 2]
    for epoch in (seen[:3], seen[3:]):
        rows = np.concatenate(epoch)
        np.testing.assert_array_equal(np.sort(rows, axis=0), np.sort(data["x"], axis=0))


def test_the_seed_fixes_the_shuffle(fake, tmp_path):
    write_data(tmp_path / "d.npz", n=12)

    def order(seed):
        assert main(["m.nn", "--data", tmp_path / "d.npz", "--batch", 12, "--epochs", 2, "--seed", seed,
                     "-o", tmp_path / "w.npz"]) == 0
        return [b.copy() for b in fake["trainers"][-1].seen]

    a, b, c = order(3), order(3), order(4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], a[1])          # each epoch draws a new order
    assert fake["calls"][-1]["seed"] == 4


def test_a_batch_larger_than_the_data_plans_for_the_data(fake, tmp_path):
    write_data(tmp_path / "d.npz", n=5)
    assert main(["m.nn", "--data", tmp_path / "d.npz", "-o", tmp_path / "w.npz"]) == 0
    assert fake["calls"][0]["batch"] == 5


def test_mse_with_validation_prints_no_accuracy(fake, tmp_path, capsys):
    write_data(tmp_path / "d.npz", n=8, n_val=3, loss="mse")
    assert main(["m.nn", "--data", tmp_path / "d.npz", "--loss", "mse", "--optimizer", "sgd", "--lr", "0.1",
                 "--momentum", "0.9", "-o", tmp_path / "w.npz", "--save-optimizer", tmp_path / "o.npz"]) == 0
    out = capsys.readouterr().out
    assert "val loss" in out and "accuracy" not in out
    with np.load(tmp_path / "o.npz") as o:
        assert sorted(o.files) == ["fc.bias.momentum_buffer", "fc.weight.momentum_buffer"]


def test_validation_loss_is_the_eval_mode_mean_over_the_validation_set(fake, tmp_path, capsys):
    data = write_data(tmp_path / "d.npz", n=8, n_val=7)
    assert main(["m.nn", "--data", tmp_path / "d.npz", "--batch", 3, "-o", tmp_path / "w.npz"]) == 0
    t = fake["trainers"][0]
    out = t.predict(data["x_val"][:3]), t.predict(data["x_val"][3:6]), t.predict(data["x_val"][6:])
    logits = np.concatenate(out)
    shifted = logits - logits.max(1, keepdims=True)
    expected = np.mean(np.log(np.exp(shifted).sum(1)) - shifted[np.arange(7), data["y_val"]])
    accuracy = np.mean(logits.argmax(1) == data["y_val"])
    line = capsys.readouterr().out.splitlines()[0]
    assert f"val loss {expected:.6g}" in line or f"val loss {np.float32(expected):.6g}" in line, line
    assert f"val accuracy {100 * accuracy:.2f}%" in line


def test_resume_continues_the_optimizer_state(fake, tmp_path, capsys):
    write_data(tmp_path / "d.npz", n=8)
    assert main(["m.nn", "--data", tmp_path / "d.npz", "--batch", 4, "-o", tmp_path / "w1.npz",
                 "--save-optimizer", tmp_path / "o1.npz"]) == 0
    assert main(["m.nn", "--data", tmp_path / "d.npz", "--batch", 4, "--weights", tmp_path / "w1.npz",
                 "--resume", tmp_path / "o1.npz", "-o", tmp_path / "w2.npz", "--save-optimizer", tmp_path / "o2.npz"]) == 0
    with np.load(tmp_path / "o2.npz") as o:
        assert int(o["step"]) == 4
    assert fake["calls"][1]["weights"] == str(tmp_path / "w1.npz")
    # another optimizer's state is refused, naming the file
    code = main(["m.nn", "--data", tmp_path / "d.npz", "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9",
                 "--resume", tmp_path / "o1.npz", "-o", tmp_path / "w3.npz"])
    err = capsys.readouterr().err
    assert code == 1 and "o1.npz" in err and "Traceback" not in err
    assert not (tmp_path / "w3.npz").exists()


BAD_DATA = {
    "missing_y": (dict(y=None), r"has no array `y`"),
    "x_val_without_y_val": (dict(x_val=np.zeros((2, N_IN), np.float32)), r"`x_val` but no `y_val`"),
    "length_mismatch": (dict(y=np.zeros(9, np.int64)), r"`y` has 9 entries but `x` has 10 examples"),
    "x_shape": (dict(x=np.zeros((10, 5), np.float32)), r"`x` must have shape \[N, 4\]"),
    "x_strings": (dict(x=np.array([["a"] * N_IN] * 10)), r"`x` holds <U1 values"),
    "x_nan": (dict(x=np.where(np.arange(40).reshape(10, 4) == 13, np.nan, 0).astype(np.float32)),
              r"`x` holds NaN or infinite values \(first in example 3\)"),
    "y_float_for_cross_entropy": (dict(y=np.zeros(10, np.float32)), r"`y` must hold integer class indices"),
    "y_out_of_range": (dict(y=np.full(10, 3)), r"`y` holds class index 3 at \[0\]"),
    "y_val_out_of_range": (dict(x_val=np.zeros((2, N_IN), np.float32), y_val=np.array([0, -1])),
                           r"`y_val` holds class index -1 at \[1\]"),
    "x_val_shape": (dict(x_val=np.zeros((2, 3), np.float32), y_val=np.array([0, 1])), r"`x_val` must have shape"),
    "no_examples": (dict(x=np.zeros((0, N_IN), np.float32), y=np.zeros(0, np.int64)), r"`x` holds no examples"),
    "scalar_y": (dict(y=np.array(3)), r"`y` is a single number"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_exits_1_naming_the_array(case, fake, tmp_path, capsys):
    override, pattern = BAD_DATA[case]
    write_data(tmp_path / "d.npz", n=10, **override)
    code = main(["m.nn", "--data", tmp_path / "d.npz", "-o", tmp_path / "w.npz"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(pattern, err), err
    assert not (tmp_path / "w.npz").exists()


def test_unreadable_data_files_exit_1_naming_the_file(fake, tmp_path, capsys):
    (tmp_path / "text.npz").write_text("hello")
    np.save(tmp_path / "one.npy", np.zeros(3))
    np.savez(tmp_path / "objects.npz", x=np.array([object(), 1], dtype=object), y=np.zeros(2))
    cases = [("missing.npz", "does not exist"), ("text.npz", "is not a readable .npz file"),
             ("one.npy", "holds a single array"), ("objects.npz", "array `x` in")]
    for name, text in cases:
        assert main(["m.nn", "--data", tmp_path / name, "-o", tmp_path / "w.npz"]) == 1
        err = capsys.readouterr().err
        assert text in err and name in err and "Traceback" not in err, err


def test_extra_arrays_are_ignored_with_a_warning(fake, tmp_path, capsys):
    write_data(tmp_path / "d.npz", n=4, classes=np.arange(3))
    assert main(["m.nn", "--data", tmp_path / "d.npz", "-o", tmp_path / "w.npz"]) == 0
    assert "ignoring array `classes`" in capsys.readouterr().err


@pytest.mark.parametrize("flags, text", [
    (["--optimizer", "sgd"], "--optimizer sgd needs --lr"),
    (["--momentum", "0.9"], "--momentum applies to --optimizer sgd only"),
    (["--lr", "-1"], "Invalid learning rate: -1.0"),
    (["--optimizer", "adamw", "--weight-decay", "-0.5"], "Invalid weight_decay value: -0.5"),
])
def test_bad_optimizer_flags_exit_2(flags, text, fake, tmp_path, capsys):
    write_data(tmp_path / "d.npz")
    assert main(["m.nn", "--data", tmp_path / "d.npz", "-o", tmp_path / "w.npz", *flags]) == 2
    assert text in capsys.readouterr().err
    assert fake["calls"] == []


def test_optimizer_defaults_follow_torch(fake, tmp_path):
    write_data(tmp_path / "d.npz", n=4)
    assert main(["m.nn", "--data", tmp_path / "d.npz", "--optimizer", "adamw", "-o", tmp_path / "w.npz"]) == 0
    assert fake["calls"][0]["optimizer"] == nnc.runtime.optim.AdamW()


def test_outputs_are_checked_before_training(fake, tmp_path, capsys):
    write_data(tmp_path / "d.npz")
    assert main(["m.nn", "--data", tmp_path / "d.npz", "-o", tmp_path / "nowhere" / "w.npz"]) == 1
    assert "does not exist" in capsys.readouterr().err and fake["calls"] == []
    assert main(["m.nn", "--data", tmp_path / "d.npz", "-o", tmp_path / "w.npz",
                 "--save-optimizer", tmp_path / "w.npz"]) == 2
    assert "same file" in capsys.readouterr().err


def test_usage_errors_from_argparse_exit_2(tmp_path):
    with pytest.raises(SystemExit) as e:
        parse(["m.nn", "--data", tmp_path / "d.npz"])          # no -o
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        parse(["m.nn", "--data", "d.npz", "-o", "w.npz", "--epochs", "0"])
    assert e.value.code == 2


def test_weights_with_the_wrong_keys_exit_1(fake, tmp_path, capsys):
    write_data(tmp_path / "d.npz")
    np.savez(tmp_path / "init.npz", other=np.zeros(2, np.float32))
    assert main(["m.nn", "--data", tmp_path / "d.npz", "--weights", tmp_path / "init.npz", "-o", tmp_path / "w.npz"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "`other`" in err


def test_nnc_main_runs_train_with_the_same_flags(fake, tmp_path, capsys):
    from nnc.compiler.cli import main as nnc_main
    write_data(tmp_path / "d.npz", n=6)
    code = nnc_main(["train", "m.nn", "--data", str(tmp_path / "d.npz"), "--batch", "4", "--seed", "5",
                     "-o", str(tmp_path / "w.npz")])
    assert code == 0 and (tmp_path / "w.npz").is_file()
    assert fake["calls"][0]["batch"] == 4 and fake["calls"][0]["seed"] == 5
    assert nnc_main(["train", "m.nn", "--data", str(tmp_path / "d.npz"), "--momentum", "0.5",
                     "-o", str(tmp_path / "w2.npz")]) == 2
    assert "nnc train: error: --momentum applies to --optimizer sgd only" in capsys.readouterr().err


def test_a_named_dimension_without_bound_is_sized_from_the_data(tmp_path, capsys):
    from nnc.compiler import cli
    model = tmp_path / "seq.nn"
    model.write_text("model seq(x: [T, 8]) {\n    lstm(12)\n    dense(5)\n}\n")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((6, 10, 8)).astype(np.float32),
             y=rng.integers(0, 5, (6, 10)), x_val=rng.standard_normal((2, 12, 8)).astype(np.float32),
             y_val=rng.integers(0, 5, (2, 12)))
    rc = cli.main(["train", str(model), "--data", str(tmp_path / "d.npz"), "-o", str(tmp_path / "w.npz")])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "w.npz").exists()


def test_nnc_train_plans_batch_32_by_default():
    trainer = nnc.train("model m(x: [4]) {\n    dense(3)\n}\n", optimizer=nnc.SGD(0.1))
    assert trainer.batch == 32
    trainer.step(np.zeros((32, 4), np.float32), np.zeros(32, np.int64))


def test_data_larger_than_the_machine_memory_is_refused_before_unpacking(fake, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_cli, "memory_bytes", lambda: 1 << 20)     # a machine with 1 MiB
    np.savez_compressed(tmp_path / "d.npz", x=np.zeros((1_000_000, 1), np.float32), y=np.zeros(1_000_000))
    assert main(["m.nn", "--data", tmp_path / "d.npz", "-o", tmp_path / "w.npz"]) == 1
    err = capsys.readouterr().err
    assert "more than this machine's memory" in err and "Traceback" not in err, err
