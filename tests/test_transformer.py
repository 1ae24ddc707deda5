import pytest
import torch

from stylenet.transformer import TransformerNet


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (33, 30), (1 + 4 * 5, 2 + 4 * 6)])
def test_output_shape_equals_input_shape(size):
    net = TransformerNet(channels=(8, 16, 32), num_residual=2)
    x = torch.rand(2, 3, *size)
    assert net(x).shape == x.shape


def test_widths_and_depth_come_from_config():
    net = TransformerNet(channels=(16, 32, 64), num_residual=3)
    assert len(net.res) == 3
    assert net.conv1.conv.out_channels == 16 and net.conv3.conv.out_channels == 64
    assert net.config() == {"channels": [16, 32, 64], "num_residual": 3, "pixel_scale": 255.0,
                            "edge_kernel": 9}
    full = TransformerNet()
    assert sum(p.numel() for p in full.parameters()) > 4 * sum(p.numel() for p in net.parameters())


def test_architecture_of_the_paper():
    net = TransformerNet()
    assert net.conv1.conv.kernel_size == (9, 9) and net.conv_out.conv.kernel_size == (9, 9)
    assert net.conv2.conv.stride == (2, 2) and net.conv3.conv.stride == (2, 2)
    assert len(net.res) == 5
    assert all(
        isinstance(m.pad, torch.nn.ReflectionPad2d) for m in [net.conv1, net.conv2, net.up1.conv]
    )
    assert all(n.affine for n in net.norms())


def test_given_norm_statistics_reproduce_own_statistics():
    net = TransformerNet(channels=(8, 16, 32), num_residual=1).eval()
    x = torch.rand(1, 3, 24, 24)
    plain = net(x)
    own = [torch.var_mean(net(x, upto=k), dim=(2, 3), keepdim=True, correction=0)[::-1]
           for k in range(len(net.norms()))]
    assert [f[0].shape[1] for f in own] == [n.num_features for n in net.norms()]
    assert torch.allclose(net(x, own), plain, atol=1e-5)


def test_the_forward_is_one_graph_under_torch_compile():
    """Straight-line code: torch.compile captures the whole forward in one graph (fullgraph
    raises on a graph break), with and without upto."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    net = TransformerNet(channels=(8, 16, 32), num_residual=2).eval()
    x = torch.rand(2, 3, 32, 36)
    counter = CompileCounter()
    compiled = torch.compile(net, backend=counter, fullgraph=True)
    torch.testing.assert_close(compiled(x), net(x))
    assert counter.frame_count == 1 and counter.op_count > 20
    torch._dynamo.reset()
    counter = CompileCounter()
    tap = torch.compile(lambda x: net(x, upto=4), backend=counter, fullgraph=True)
    torch.testing.assert_close(tap(x), net(x, upto=4))
    assert counter.frame_count == 1


def test_model_files_from_before_the_pixel_scale_still_stylize_as_they_did(tmp_path):
    """Files written when the net worked on 0..1 pixels have no pixel_scale in their arch: they
    load at scale 1 and give the output they gave then."""
    from stylenet.model_file import load_model, save_model

    torch.manual_seed(0)
    old = TransformerNet(channels=(8, 16, 32), num_residual=1, pixel_scale=1.0).eval()
    arch = {"channels": [8, 16, 32], "num_residual": 1}  # as such files store it
    path = save_model(tmp_path / "old.pt", old, {"arch": arch})
    net, meta = load_model(path)
    assert net.pixel_scale == 1.0
    x = torch.rand(1, 3, 20, 24)
    torch.testing.assert_close(net(x), old(x))
    # the same weights at 0..255 compute something else: the scale must not be lost
    now = TransformerNet(channels=(8, 16, 32), num_residual=1).eval()
    now.load_state_dict(old.state_dict())
    assert (now(x) - old(x)).abs().max() > 1e-3


def test_multiply_adds_per_pixel_by_hand():
    """The paper's net: 9x9 3->32, 3x3 32->64 /2, 3x3 64->128 /4, 10 convs 128->128 at /4,
    3x3 128->64 at /2, 3x3 64->32, 9x9 32->3: 153,792 per input pixel."""
    from stylenet.transformer import macs_per_pixel

    hand = (81 * 3 * 32 + 9 * 32 * 64 / 4 + 9 * 64 * 128 / 16 + 10 * 9 * 128 * 128 / 16
            + 9 * 128 * 64 / 4 + 9 * 64 * 32 + 81 * 32 * 3)
    assert macs_per_pixel(TransformerNet()) == hand == 153_792
    small_edges = TransformerNet((8, 16, 32), 5, edge_kernel=5)
    assert macs_per_pixel(TransformerNet((8, 16, 32), 5)) == 12_528  # width 0.25
    assert macs_per_pixel(small_edges) == 12_528 - 2 * (81 - 25) * 3 * 8


def test_the_edge_kernel_is_part_of_the_model_file(tmp_path):
    from stylenet.model_file import load_model, save_model

    torch.manual_seed(0)
    net = TransformerNet((8, 16, 32), num_residual=1, edge_kernel=5).eval()
    path = save_model(tmp_path / "m.pt", net, {"arch": net.config()})
    loaded, meta = load_model(path)
    assert meta["arch"]["edge_kernel"] == 5 and loaded.conv1.conv.kernel_size == (5, 5)
    x = torch.rand(1, 3, 20, 28)
    torch.testing.assert_close(loaded(x), net(x))


def test_start_grey_starts_the_output_at_mid_grey():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    assert TransformerNet((8, 16, 32), 1)(x).mean().abs() < 0.1  # the reference: near black
    grey = TransformerNet((8, 16, 32), 1, start_grey=True)
    assert (grey(x).mean() - 0.5).abs() < 0.1
    assert "start_grey" not in grey.config()  # init only: model files do not carry it
