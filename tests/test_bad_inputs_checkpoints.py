"""Bad input at checkpoints (refused, never run): a clear error and nothing half-written (issue 9; split from the
former tests/test_bad_inputs.py, issue 16 item 6). Harness: tests/bad_input_harness.py."""
from __future__ import annotations

from bad_input_harness import *  # noqa: F401,F403  (fixtures ctx, sine_run, server and the helpers)


def test_cli_eval_folder_without_checkpoint(ctx):
    (ctx.tmp / "empty-run").mkdir()
    ctx.cli(["eval", ctx.tmp / "empty-run"], 1, "no checkpoint in", "checkpoints/ckpt-*.pt")


def test_cli_export_demo_non_checkpoint(ctx):
    png = ctx.tmp / "drawing.png"
    Image.new("L", (28, 28)).save(png)
    ctx.cli(["export-demo", png, "--out", ctx.tmp / "out.json"], 1, "is not a reptile-lab checkpoint",
            "written by `reptile train`")


def test_cli_eval_truncated_checkpoint(ctx):
    bad = ctx.tmp / "ckpt-00000002.pt"
    raw = _ckpt(ctx.sine_run).read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])  # cut mid-file
    ctx.cli(["eval", bad], 1, "fails its checksum", "truncated or corrupted", "use an earlier checkpoint")


def test_cli_eval_other_format_version(ctx):
    body = _ckpt(ctx.sine_run).read_bytes().split(b"\n", 2)[2]
    bad = ctx.tmp / "v2.pt"
    bad.write_bytes(_wrap(body, version=FORMAT_VERSION + 1))
    ctx.cli(["eval", bad], 1, f"format v{FORMAT_VERSION + 1}", f"reads v{FORMAT_VERSION}")


def test_cli_eval_checkpoint_of_another_model(ctx):
    ckpt = load_checkpoint(_ckpt(ctx.sine_run))
    other = MLP((1, 8, 1))
    ckpt["params"], ckpt["model_spec"] = params_of(other), model_spec(other)
    bad = save_checkpoint(ctx.tmp / "other.pt", ckpt)
    ctx.cli(["eval", bad], 1, "is of another model")


def test_cli_resume_with_another_model(ctx):
    run = ctx.tmp / "run"
    shutil.copytree(ctx.sine_run, run)
    args = ["train", "sine", "--iterations", "4", "--checkpoint-every", "1", "--out", run, *SINE]
    args[args.index("--hidden") + 1] = "8"
    ctx.cli(args + ["--resume"], 1, "other settings for hidden (saved '4', now '8')")  # and the run's files are untouched


def test_cli_eval_pickle_that_runs_code(ctx):
    marker = ctx.tmp / "MARKER"
    buf = io.BytesIO()
    torch.save({"params": RunsCode(marker)}, buf)
    bad = ctx.tmp / "evil.pt"
    bad.write_bytes(_wrap(buf.getvalue()))  # a valid header and checksum: only weights_only stops it
    ctx.cli(["eval", bad], 1, "refused by weights_only=True", "posix.system")
    assert not marker.exists()


def test_api_nan_loss_keeps_last_good_checkpoint(ctx):
    model, loss_fn, phi, (x, y) = _mlp_setup()
    calls = [0]

    def sampler(rng):  # clean data for two iterations, then a NaN
        calls[0] += 1
        return (x if calls[0] <= 2 else torch.full_like(x, float("nan"))), y

    out = ctx.tmp / "run"
    trainer = MetaTrainer(loss_fn, phi, sampler, TrainConfig(iterations=5, checkpoint_every=1), out)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss or update at iteration 3.*last good checkpoint "
                                               r"is .*ckpt-00000002.pt \(iteration 2\).*Lower the learning rates"):
        trainer.run(progress=False)
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["ckpt-00000001.pt", "ckpt-00000002.pt"]
    assert load_checkpoint(out / "checkpoints" / "ckpt-00000002.pt")["iteration"] == 2
    assert not _temporaries(ctx.tmp)


def test_ckpt_truncated_mid_file(ctx):
    p = ctx.tmp / "ckpt.pt"
    save_checkpoint(p, {"iteration": 1, "params": {"w": torch.randn(1000)}})
    p.write_bytes(p.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="fails its checksum: the file is truncated or corrupted"):
        load_checkpoint(p)
    p.write_bytes(p.read_bytes()[:30])  # cut inside the header (in the checksum line)
    with pytest.raises(CheckpointError, match="malformed header"):
        load_checkpoint(p)


def test_ckpt_other_format_version(ctx):
    buf = io.BytesIO()
    torch.save({"iteration": 1}, buf)
    (ctx.tmp / "v0.pt").write_bytes(_wrap(buf.getvalue(), version=0))
    with pytest.raises(CheckpointError, match=f"format v0; this reptile-lab reads v{FORMAT_VERSION}"):
        load_checkpoint(ctx.tmp / "v0.pt")


def test_ckpt_raw_pickle_runs_os_system(ctx):
    marker = ctx.tmp / "MARKER"
    (ctx.tmp / "evil.pt").write_bytes(_wrap(pickle.dumps({"params": RunsCode(marker)}, protocol=2)))
    with pytest.raises(CheckpointError, match=r"refused by weights_only=True, nothing in it was run.*posix.system"):
        load_checkpoint(ctx.tmp / "evil.pt")
    assert not marker.exists()


def test_ckpt_custom_class(ctx):
    buf = io.BytesIO()
    torch.save({"iteration": 1, "model": torch.nn.Linear(2, 2)}, buf)  # a whole module, not its weights
    (ctx.tmp / "module.pt").write_bytes(_wrap(buf.getvalue()))
    with pytest.raises(CheckpointError, match="objects other than tensors.*torch.nn.modules.linear.Linear.*"
                                              "do not load it with weights_only=False unless you trust"):
        load_checkpoint(ctx.tmp / "module.pt")


def test_ckpt_not_a_dict(ctx):  # a list payload gave an AttributeError traceback in `reptile eval`
    buf = io.BytesIO()
    torch.save([1, 2, 3], buf)
    (ctx.tmp / "list.pt").write_bytes(_wrap(buf.getvalue()))
    with pytest.raises(CheckpointError, match="holds a list, not the dict `reptile train` writes"):
        load_checkpoint(ctx.tmp / "list.pt")
    ctx.cli(["eval", ctx.tmp / "list.pt"], 1, "holds a list")


def test_ckpt_plain_torch_save(ctx):
    torch.save({"params": {}}, ctx.tmp / "plain.pt")
    with pytest.raises(CheckpointError, match="not a reptile-lab checkpoint.*written by `reptile train`"):
        load_checkpoint(ctx.tmp / "plain.pt")


def test_ckpt_of_another_model(ctx):
    model, loss_fn, phi, (x, y) = _mlp_setup()
    out = ctx.tmp / "run"
    MetaTrainer(loss_fn, phi, lambda rng: (x, y), TrainConfig(iterations=1), out,
                model_spec=model_spec(model)).run(progress=False)
    other = MLP((1, 8, 1))
    t = MetaTrainer(make_loss(other), params_of(other), lambda rng: (x, y), TrainConfig(iterations=1), out,
                    model_spec=model_spec(other))
    with ctx.unchanged(), pytest.raises(ValueError, match="the checkpoint is of another model"):
        t.resume()
