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
    assert net.config() == {"channels": [16, 32, 64], "num_residual": 3}
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
    norms = net.norms()
    for n in norms:
        n.record = []
    net(x)
    for n in norms:
        n.stats, n.record = n.record[0], None
    assert torch.allclose(net(x), plain, atol=1e-5)
