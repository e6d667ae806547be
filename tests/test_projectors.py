import pytest
import torch

from mmpeft.projectors import LinearProjector, MLPProjector, PerceiverResampler, PooledMLPProjector


@pytest.mark.parametrize(
    "projector,tokens_out",
    [
        (LinearProjector(32, 48), 16),
        (MLPProjector(32, 48), 16),
        (MLPProjector(32, 48, hidden_dim=20, num_layers=3, input_norm="layernorm"), 16),
        (PooledMLPProjector(32, 48, output_grid=2, input_norm="batchnorm"), 4),
        (PooledMLPProjector(32, 48, output_grid=2), 4),
        (PerceiverResampler(32, 48, num_queries=5, depth=1, num_heads=4), 5),
    ],
)
def test_projector_shapes(projector, tokens_out):
    x = torch.randn(3, 16, 32)
    out = projector(x)
    assert out.shape == (3, tokens_out, 48)
    assert projector.num_output_tokens(16) == tokens_out
    out.sum().backward()
    assert all(p.grad is not None for p in projector.parameters())


def test_mlp_projector_is_llava_mlp2x_gelu():
    p = MLPProjector(8, 16)
    assert [type(m).__name__ for m in p.mlp] == ["Linear", "GELU", "Linear"]
    assert p.mlp[0].out_features == 16


def test_pooled_projector_averages_grid_cells():
    p = PooledMLPProjector(1, 1, output_grid=2, num_layers=1)
    torch.nn.init.ones_(p.mlp[0].weight)
    torch.nn.init.zeros_(p.mlp[0].bias)
    grid = torch.arange(16.0).reshape(1, 16, 1)  # 4x4 grid, row-major
    out = p(grid)[0, :, 0]
    assert out.tolist() == [2.5, 4.5, 10.5, 12.5]


def test_projector_bad_input():
    with pytest.raises(ValueError, match="square token grid, got 17 tokens"):
        PooledMLPProjector(8, 8).num_output_tokens(17)
    with pytest.raises(ValueError, match=r"expects vision tokens \[B, N, 8\]"):
        MLPProjector(8, 8)(torch.randn(2, 4, 9))


def test_pooled_projector_position_embedding_marks_cells():
    """Zero-initialised (the same output as without it at start); once trained, identical cell contents in
    different cells give different tokens."""
    torch.manual_seed(0)
    plain = PooledMLPProjector(8, 16, output_grid=2)
    torch.manual_seed(0)
    placed = PooledMLPProjector(8, 16, output_grid=2, position_embedding=True)
    x = torch.ones(1, 16, 8)  # every cell holds the same features
    torch.testing.assert_close(placed(x), plain(x))
    assert placed.init_args["position_embedding"] and placed.position.requires_grad
    with torch.no_grad():
        placed.position.normal_()
    out = placed(x)[0]
    assert not torch.allclose(out[0], out[1])


def test_input_groups_give_each_feature_level_equal_variance():
    """A 2-channel level beside a 30-channel one: after batchnorm + group scales both carry half the variance
    the first Linear sees; the scales are rebuilt from init_args, never stored in the state dict."""
    torch.manual_seed(0)
    p = MLPProjector(32, 8, input_norm="batchnorm", input_groups=[2, 30])
    x = torch.randn(64, 4, 32) * torch.cat([torch.full((2,), 50.0), torch.full((30,), 0.1)])
    z = p.normalize(x)
    small, large = z[..., :2].pow(2).sum(-1).mean(), z[..., 2:].pow(2).sum(-1).mean()
    torch.testing.assert_close(small, large, rtol=0.05, atol=0)
    torch.testing.assert_close(small + large, torch.tensor(32.0), rtol=0.05, atol=0)
    assert "group_scale" not in p.state_dict() and p.init_args["input_groups"] == [2, 30]
    rebuilt = PooledMLPProjector(32, 8, output_grid=1, input_groups=[2, 30])
    assert rebuilt.init_args["input_groups"] == [2, 30]
    with pytest.raises(ValueError, match=r"input_groups=\[2, 29\] must be positive widths summing to .* 32"):
        MLPProjector(32, 8, input_groups=[2, 29])
