import subprocess
import sys

import numpy as np
import pytest
import torch

from stylenet.export import Portable, export
from stylenet.model_file import save_model
from stylenet.transformer import TransformerNet

# Runs the ONNX file with onnxruntime alone: importing stylenet or torch there fails.
ONNX_ALONE = """
import sys
sys.modules["stylenet"] = None
sys.modules["torch"] = None
import numpy as np, onnxruntime as ort
x = np.load(sys.argv[2])
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
np.save(sys.argv[3], s.run(None, {"image": x})[0])
"""


@pytest.fixture
def net_and_file(tmp_path):
    torch.manual_seed(0)
    net = TransformerNet(channels=(4, 8, 8), num_residual=1).eval()
    return net, save_model(tmp_path / "model.pt", net, {"arch": net.config(),
                                                         "style": {"name": "t"}})


def test_onnx_matches_pytorch_for_any_size_without_stylenet(net_and_file, tmp_path):
    pytest.importorskip("onnxruntime")
    net, path = net_and_file
    onnx_file = export(path, "onnx")
    assert onnx_file == tmp_path / "model.onnx"
    for shape in [(2, 3, 37, 53), (1, 3, 64, 80)]:
        x = torch.rand(*shape)
        np.save(tmp_path / "x.npy", x.numpy())
        subprocess.run([sys.executable, "-c", ONNX_ALONE, str(onnx_file), str(tmp_path / "x.npy"),
                        str(tmp_path / "y.npy")], check=True)
        got = torch.from_numpy(np.load(tmp_path / "y.npy"))
        with torch.no_grad():
            expected = net(x).clamp(0, 1)
        assert got.shape == x.shape
        assert (got - expected).abs().max() < 1e-4


def test_torchscript_runs_any_size(net_and_file, tmp_path):
    net, path = net_and_file
    ts = export(path, "torchscript", tmp_path / "m.ts")
    loaded = torch.jit.load(str(ts))
    x = torch.rand(1, 3, 33, 30)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x).clamp(0, 1), atol=1e-5)


def test_portable_equals_the_net_and_bad_format_is_refused(net_and_file):
    net, path = net_and_file
    x = torch.rand(1, 3, 21, 26)
    with torch.no_grad():
        assert torch.equal(Portable(net)(x), net(x).clamp(0, 1))
    with pytest.raises(ValueError, match="format=tflite"):
        export(path, "tflite")
