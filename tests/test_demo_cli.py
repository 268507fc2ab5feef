"""``reptile demo`` (the static server) and ``reptile export-demo`` (the weights exporter)."""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reptile.checkpoint import save_checkpoint
from reptile.cli import main
from reptile.cli.demo import DEMO_DIR, make_server, safe_join

from bad_input_harness import serve_demo
from reptile.demo_export import FORMAT, decode_params, export_demo, random_init
from reptile.models import MLP, OmniglotCNN, model_spec

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ the server
def test_safe_join_refuses_everything_outside(tmp_path):
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (root / "a.js").write_text("x")
    (tmp_path / "secret.txt").write_text("secret")
    (root / "link").symlink_to(tmp_path / "secret.txt")
    assert safe_join(root, "/a.js") == (root / "a.js").resolve()
    assert safe_join(root, "/sub/") == (root / "sub").resolve()
    assert safe_join(root, "/") == root.resolve()
    for bad in ("/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt",
                "/sub/..%2F..%2Fsecret.txt", "/link", "/a.js%00.png", "/..\\secret.txt", "/~root/x"):
        assert safe_join(root, bad) is None, bad


@pytest.fixture
def server(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "sine.json").write_text('{"format": "x"}')
    (tmp_path / "outside.json").write_text("{}")
    with serve_demo(weights) as srv:
        yield srv


def get(srv, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)  # path sent verbatim
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def test_server_serves_the_page_and_weights(server):
    status, headers, body = get(server, "/")
    assert status == 200 and b"Reptile" in body and headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in headers["content-security-policy"]
    for name in ("main.js", "worker.js", "nn.js", "models.js", "weights.js", "raster.js", "draw.js", "plot.js"):
        status, headers, _ = get(server, f"/{name}")
        assert status == 200 and headers["content-type"].startswith("text/javascript"), name
    status, headers, body = get(server, "/weights/sine.json")
    assert status == 200 and headers["content-type"] == "application/json" and body == b'{"format": "x"}'
    assert get(server, "/weights/fewshot.json")[0] == 404  # --weights-dir replaces the shipped folder
    assert get(server, "/index.html?x=1")[0] == 200
    assert get(server, "/", "HEAD")[0] == 200


def test_server_serves_nothing_outside_its_folders(server):
    for path in ("/../outside.json", "/weights/../outside.json", "/weights/..%2foutside.json",
                 "/%2e%2e/%2e%2e/etc/passwd", "/../../../../etc/passwd", "//etc/passwd", "/weights/%2e%2e/outside.json"):
        status, _, body = get(server, path)
        assert status in (403, 404), path
        assert b"{}" != body and b"root:" not in body
    assert get(server, "/weights/")[0] == 404  # no directory listings
    assert get(server, "/", "POST")[0] == 405


def test_port_in_use_is_a_clear_error(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError, match="already in use"):
            make_server("127.0.0.1", port)
        assert main(["demo", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err and "Traceback" not in err


def test_missing_weights_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "--port", "0", "--weights-dir", str(tmp_path / "nope")]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_reptile_demo_prints_its_address_and_serves(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "reptile", "demo", "--port", "0"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("Reptile demo at http://127.0.0.1:"), line
        url = line.split()[3]
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/weights/fewshot.json")
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["format"] == FORMAT
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_shipped_weights_are_valid():
    for kind, name in (("fewshot", "omniglot"), ("sine", "mlp")):
        obj = json.loads((DEMO_DIR / "weights" / f"{kind}.json").read_text())
        assert obj["format"] == FORMAT and obj["kind"] == kind and obj["model"]["name"] == name
        params = decode_params(obj["params"])
        init = decode_params(obj["init"])
        assert set(params) == set(init) and all(torch.isfinite(v).all() for v in params.values())
        assert any(not torch.equal(params[k], init[k]) for k in params)


# ------------------------------------------------------------------------------ the exporter
def _checkpoint(model, **config) -> dict:
    return {"format": "reptile-lab", "iteration": 42, "params": {k: v.detach().clone() for k, v in model.named_parameters()},
            "config": {"seed": 3, **config}, "model_spec": model_spec(model), "extra": {"family": "x", "args": {}},
            "torch_version": str(torch.__version__)}


def test_export_demo_cli_round_trip(tmp_path, capsys):
    torch.manual_seed(0)
    model = OmniglotCNN(n_way=3, filters=4)
    ckpt = _checkpoint(model, inner_optimizer="adam", inner_lr=0.002)
    save_checkpoint(tmp_path / "run" / "checkpoints" / "ckpt-00000042.pt", ckpt)
    out = tmp_path / "w" / "fewshot.json"
    assert main(["export-demo", str(tmp_path / "run"), "--out", str(out), "--steps", "7"]) == 0
    assert "wrote" in capsys.readouterr().out
    obj = json.loads(out.read_text())
    assert obj["kind"] == "fewshot" and obj["version"] == 1
    assert obj["finetune"] == {"optimizer": "adam", "lr": 0.002, "steps": 7, "beta1": 0.0, "beta2": 0.999, "eps": 1e-8}
    assert obj["source"]["checkpoint"] == "ckpt-00000042.pt" and obj["source"]["iteration"] == 42
    back = decode_params(obj["params"], torch.float32)
    for k, v in ckpt["params"].items():
        assert torch.equal(back[k], v), k
    init = decode_params(obj["init"], torch.float32)
    for k, v in random_init(ckpt["model_spec"], 3).items():
        assert torch.equal(init[k], v), k
    assert oct(out.stat().st_mode & 0o777) == oct(0o644)


def test_export_sine_defaults_and_kind(tmp_path):
    torch.manual_seed(0)
    ckpt = _checkpoint(MLP((1, 8, 8, 1), "tanh"), inner_optimizer="sgd", inner_lr=0.02)
    ckpt["extra"]["args"]["test_lr"] = 0.05
    obj = export_demo(ckpt)
    assert obj["kind"] == "sine" and obj["finetune"] == {"optimizer": "sgd", "lr": 0.05, "record": [0, 8, 16, 32]}
    save_checkpoint(tmp_path / "c.pt", ckpt)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["export-demo", "c.pt"]) == 0
    finally:
        os.chdir(cwd)
    assert json.loads((tmp_path / "sine.json").read_text())["kind"] == "sine"


@pytest.mark.parametrize("model, kind, message", [
    (OmniglotCNN(n_way=5, filters=4), None, "n_way = 5 (the page has three classes: train with --ways 3)"),
    (OmniglotCNN(n_way=3, filters=4, norm="group"), None, "norm = 'group'"),
    (OmniglotCNN(n_way=3, filters=4), "sine", "--kind sine needs an MLP"),
    (MLP((1, 8, 1), "tanh"), "fewshot", "--kind fewshot needs an OmniglotCNN"),
    (MLP((2, 8, 1), "tanh"), None, "from 1 input to 1 output"),
    (MLP((1, 8, 1), "gelu"), None, "tanh and relu"),
])
def test_export_refuses_models_the_page_cannot_run(tmp_path, capsys, model, kind, message):
    save_checkpoint(tmp_path / "c.pt", _checkpoint(model, inner_optimizer="adam", inner_lr=1e-3))
    argv = ["export-demo", str(tmp_path / "c.pt"), "--out", str(tmp_path / "o.json")] + (["--kind", kind] if kind else [])
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o.json").exists()


def test_export_refuses_missing_and_non_finite(tmp_path, capsys):
    assert main(["export-demo", str(tmp_path / "none.pt")]) == 1
    assert "no checkpoint" in capsys.readouterr().err
    model = MLP((1, 8, 1), "tanh")
    ckpt = _checkpoint(model)
    ckpt["params"]["net.0.weight"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        export_demo(ckpt)
