"""One test per shim in salrt/_torch.py: a torch release that moves a private API fails here, by name."""
import operator

import pytest
import torch

from salrt import _torch

aten = torch.ops.aten


def test_symbolic_batch_inputs_share_one_batch_symbol():
    image, target = _torch.symbolic_batch_inputs(((2, 3, 8, 8), torch.float32), ((2,), torch.int64))
    assert isinstance(image.shape[0], torch.SymInt) and image.shape[1:] == (3, 8, 8)
    assert _torch.known_equal(image.shape[0], target.shape[0])
    assert target.dtype == torch.int64


def test_fake_like_joins_the_inputs_fake_mode():
    (image,) = _torch.symbolic_batch_inputs(((2, 3, 4, 4), torch.float32))
    weight = _torch.fake_like(image, torch.ones(5, 3))
    assert weight.fake_mode is image.fake_mode and weight.shape == (5, 3)


def test_known_equal_is_false_when_unknown():
    a, b = _torch.symbolic_batch_inputs(((2, 3), torch.float32), ((2, 3), torch.float32))
    (c,) = _torch.symbolic_batch_inputs(((2, 3), torch.float32))  # another shape environment, another symbol
    assert _torch.known_equal(a.shape[0], b.shape[0]) and _torch.known_equal(3, 3)
    assert not _torch.known_equal(a.shape[0] * 2, a.shape[0])
    assert not _torch.known_equal(a.shape[0], 2), "a symbolic batch must not be assumed to be the traced size"
    del c


def test_trace_keeps_the_batch_symbolic_and_takes_real_weights():
    weight = torch.randn(4, 3)
    (x,) = _torch.symbolic_batch_inputs(((2, 3), torch.float32))
    gm = _torch.trace(lambda x: torch.nn.functional.linear(x, weight).relu(), {}, x)
    real = torch.randn(5, 3)
    torch.testing.assert_close(gm(real), (real @ weight.T).relu())


def test_trace_makes_tensors_from_symbolic_sizes():
    """A factory call on the input's shape (EdgeNeXt's position encoding) traces with the symbolic batch."""
    (x,) = _torch.symbolic_batch_inputs(((2, 3, 4), torch.float32))
    gm = _torch.trace(lambda x: x + torch.ones(x.shape).cumsum(1), {}, x)
    real = torch.randn(5, 3, 4)
    torch.testing.assert_close(gm(real), real + torch.ones(5, 3, 4).cumsum(1))


def test_outside_trace_computes_a_real_constant():
    """A constant computed from fixed sizes inside a traced function is real, and recorded as one constant."""
    def fn(x):
        matrix = _torch.outside_trace(lambda n: torch.eye(n).flip(0), x.shape[1])
        assert not isinstance(matrix, torch._subclasses.FakeTensor)
        return x @ matrix
    (x,) = _torch.symbolic_batch_inputs(((2, 3), torch.float32))
    gm = _torch.trace(fn, {}, x)
    assert not [n for n in gm.graph.nodes if n.target in (aten.eye.default, aten.flip.default)]
    real = torch.randn(4, 3)
    torch.testing.assert_close(gm(real), real.flip(1))


def test_torch_decompositions_give_a_make_fx_table():
    table = _torch.torch_decompositions([aten.threshold_backward])
    assert aten.threshold_backward.default in table and callable(table[aten.threshold_backward.default])


def _conv_node():
    graph = torch.fx.Graph()
    x, w = graph.placeholder("x"), graph.placeholder("w")
    return graph.call_function(aten.convolution.default, (x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1))


def test_op_arguments_by_schema_name_with_defaults():
    node = _conv_node()
    args = _torch.op_arguments(node)
    assert args["stride"] == [1, 1] and args["transposed"] is False and args["groups"] == 1
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    strided = graph.call_function(aten.as_strided.default, (x, [2], [1]))
    assert _torch.op_arguments(strided)["storage_offset"] is None  # a default the call left out
    with pytest.raises(TypeError, match="aten op overload"):
        _torch.op_arguments(graph.call_function(operator.add, (x, 1)))


def test_set_op_argument_by_schema_name():
    node = _conv_node()
    _torch.set_op_argument(node, "padding", [1, 1])
    _torch.set_op_argument(node, "transposed", True)
    assert node.args[4] == [1, 1] and node.args[6] is True


def test_overload_packet():
    assert _torch.overload_packet(aten.add.Tensor) is aten.add
    assert _torch.overload_packet(operator.add) is None


def test_aoti_compile_and_load(tmp_path):
    class Double(torch.nn.Module):
        def forward(self, x):
            return (x * 2,)

    program = torch.export.export(Double(), (torch.ones(2, 3),))
    _torch.aoti_compile(program, str(tmp_path / "double.pt2"))
    compiled = _torch.aoti_load(str(tmp_path / "double.pt2"))
    torch.testing.assert_close(compiled(torch.full((2, 3), 1.5))[0], torch.full((2, 3), 3.0))
