import json

import pytest
import torch

from pbn.groups import resolve_groups
from pbn.model import StackedPBN
from pbn.skeleton import NUM_JOINTS

from .conftest import run_cli

STRATEGIES = [("shared", None), ("per-part", None), ("human", None), ("mi", 2), ("mi", 5), ("mi", 8)]


def tiny(groups, stacks=2, width=16, depth=1):
    return StackedPBN(groups, width=width, depth=depth, stacks=stacks, channels=32, hg_depth=2)


@pytest.mark.parametrize("strategy,k", STRATEGIES)
@pytest.mark.parametrize("stacks", [1, 2, 3])
def test_shapes_every_strategy_and_stack_count(strategy, k, stacks):
    model = tiny(resolve_groups(strategy, k), stacks=stacks)
    outs = model(torch.randn(2, 3, 64, 64))
    assert len(outs) == stacks
    assert all(o.shape == (2, NUM_JOINTS, 16, 16) for o in outs)


@pytest.mark.parametrize("strategy,k", STRATEGIES)
def test_backward_is_finite(strategy, k):
    model = tiny(resolve_groups(strategy, k), depth=2)
    loss = sum((o**2).mean() for o in model(torch.randn(2, 3, 64, 64)))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("strategy,k", [("human", None), ("per-part", None), ("mi", 5)])
@pytest.mark.parametrize("depth", [0, 2])
def test_branches_are_gradient_isolated(strategy, k, depth):
    """The loss of one group's heatmaps sends no gradient into any other group's branch."""
    groups = resolve_groups(strategy, k)
    model = tiny(groups, stacks=2, depth=depth)
    model.train()
    bank = model.branches[-1]
    for g, members in enumerate(groups):
        model.zero_grad()
        out = model(torch.randn(3, 3, 64, 64))[-1]
        out[:, list(members)].pow(2).mean().backward()
        touched = 0
        for name, p in bank.named_parameters():
            chunks = p.grad.chunk(len(groups), dim=0)
            for h, chunk in enumerate(chunks):
                if h != g:
                    assert torch.count_nonzero(chunk) == 0, f"group {g} loss reached group {h} via {name}"
            touched += int(torch.count_nonzero(chunks[g]) > 0)
        assert touched > 0  # and its own branch does learn


def test_groups_must_partition_joints():
    with pytest.raises(ValueError, match="partition"):
        tiny([(0, 1, 2)])


def test_paper_size_shared_8_stack_is_hourglass_sized():
    from pbn.model import count_params

    n = count_params(StackedPBN(resolve_groups("shared"), width=256, depth=1, stacks=8, channels=256, hg_depth=4))
    assert 20e6 <= n <= 30e6  # Newell's 8-stack hourglass: 25.1 M


def test_model_cli_json_and_text():
    r = run_cli("pbn.model", "--grouping", "human", "--width", "64", "--depth", "1", "--stacks", "3",
                "--preset", "small", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["output_shape"] == [1, 16, 16, 16] and info["num_outputs"] == 3  # small preset: 64x64 input
    assert info["params"] == sum(info["params_by_part"].values())
    assert info["flops"] > 1e8
    r = run_cli("pbn.model", "--grouping", "mi", "--clusters", "5", "--stacks", "1", "--preset", "small")
    assert r.returncode == 0 and "group 5:" in r.stdout and "FLOPs" in r.stdout


@pytest.mark.parametrize("args,msg", [
    (["--grouping", "bogus"], "grouping"),
    (["--grouping", "mi"], "clusters"),
    (["--grouping", "mi", "--clusters", "16"], "clusters"),
    (["--grouping", "human", "--clusters", "4"], "only grouping 'mi'"),
])
def test_model_cli_bad_input_is_one_clear_line(args, msg):
    r = run_cli("pbn.model", *args, "--preset", "small")
    assert r.returncode == 2
    assert msg in r.stderr and "Traceback" not in r.stderr


def test_bf16_autocast_keeps_batchnorm_in_fp32_and_branches_isolated():
    """Under bf16 autocast the outputs are bf16, BatchNorm statistics and parameters stay fp32 and close to an
    fp32 pass, and no gradient crosses groups (the grouped bank's independence holds in bf16 too)."""
    groups = resolve_groups("human")
    torch.manual_seed(0)
    ref, model = tiny(groups), tiny(groups)
    model.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 64, 64)
    ref(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = model(x)
    assert all(o.dtype == torch.bfloat16 for o in outs)
    for a, b in zip(ref.modules(), model.modules()):
        if isinstance(b, torch.nn.BatchNorm2d):
            assert b.running_mean.dtype == b.running_var.dtype == b.weight.dtype == torch.float32
            assert torch.allclose(a.running_mean, b.running_mean, rtol=0.05, atol=2e-3)
            assert torch.allclose(a.running_var, b.running_var, rtol=0.05, atol=2e-3)
    bank = model.branches[-1]
    model.zero_grad()
    outs[-1][:, list(groups[0])].float().pow(2).mean().backward()
    for name, p in bank.named_parameters():
        assert all(torch.count_nonzero(c) == 0 for c in p.grad.chunk(len(groups), dim=0)[1:]), name
