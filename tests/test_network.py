"""PriorRestorer (shapes, checks, neutral-at-init branches, save/load) and tiled inference."""

import pytest
import torch
import torch.nn.functional as F

from reason_restore.restorer.network import (
    PriorRestorer, RestorerConfig, detect_restorer, infer_config, load_restorer, save_restorer)
from reason_restore.restorer.tiling import tile_starts, tiled_apply

PRIOR_DIM = 35


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _model(**kw) -> PriorRestorer:
    return PriorRestorer(RestorerConfig(prior_dim=PRIOR_DIM, **kw)).eval()


def _wake(model: PriorRestorer, std: float = 0.2) -> PriorRestorer:
    """Perturb every zero-initialised parameter so the model behaves like a trained one."""
    with torch.no_grad():
        for p in model.parameters():
            if torch.count_nonzero(p) == 0:
                p.normal_(0.0, std)
    return model


# ------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------

def test_config_round_trip_and_unknown_keys():
    cfg = RestorerConfig(prior_dim=12, text_dim=8, use_reference=True, enc_blocks=[1, 2, 1])
    assert cfg.enc_blocks == (1, 2, 1)
    assert RestorerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown key.*bogus"):
        RestorerConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="prior_dim"):
        RestorerConfig.from_dict({"width": 8})
    with pytest.raises(ValueError, match="dec_blocks"):
        RestorerConfig(prior_dim=3, enc_blocks=(1, 1), dec_blocks=(1,))


def test_default_size_is_small():
    model = _model()
    n = model.num_parameters()
    assert 300_000 <= n <= 1_200_000, n
    assert model.multiple_of == 8 and model.size_requirement()["multiple_of"] == 8


# ------------------------------------------------------------------------------------------
# forward
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (1, 3, 16, 9), (1, 3, 33, 47),
                                   (4, 3, 20, 24), (2, 3, 5, 70)])
def test_forward_keeps_shape_any_size(shape):
    model = _wake(_model())
    x = torch.rand(shape)
    with torch.no_grad():
        y = model(x, torch.rand(shape[0], PRIOR_DIM))
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_prior_none_is_zero_vector_and_batch_one_broadcasts():
    model = _wake(_model())
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        a = model(x, None)
        b = model(x, torch.zeros(3, PRIOR_DIM))
        c = model(x, torch.zeros(1, PRIOR_DIM))
    assert torch.equal(a, b) and torch.equal(a, c)


def test_prior_changes_output_only_once_film_is_trained():
    model = _model()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        base = model(x, torch.zeros(1, PRIOR_DIM))
        assert torch.equal(base, model(x, torch.rand(1, PRIOR_DIM)))
        _wake(model)
        assert not torch.allclose(model(x, torch.zeros(1, PRIOR_DIM)),
                                  model(x, torch.rand(1, PRIOR_DIM)))


def test_shape_errors_name_the_argument():
    model = _model()
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"prior: expected shape \[B, 35\].*got \[B, 12\]"):
        model(x, torch.zeros(2, 12))
    with pytest.raises(ValueError, match="prior"):
        model(x, torch.zeros(3, PRIOR_DIM))
    with pytest.raises(ValueError, match="image"):
        model(torch.rand(2, 4, 8, 8), torch.zeros(2, PRIOR_DIM))
    with pytest.raises(ValueError, match="image"):
        model(torch.rand(3, 8, 8), torch.zeros(1, PRIOR_DIM))
    with pytest.raises(ValueError, match="text_tokens"):
        model(x, torch.zeros(2, PRIOR_DIM), text_tokens=torch.zeros(2, 4, 16))
    with pytest.raises(ValueError, match="reference"):
        model(x, torch.zeros(2, PRIOR_DIM), reference=torch.rand(2, 3, 8, 8))
    rich = _model(text_dim=16, use_reference=True)
    with pytest.raises(ValueError, match=r"text_tokens: expected shape \[B, T, 16\]"):
        rich(x, None, text_tokens=torch.zeros(2, 4, 10))
    with pytest.raises(ValueError, match="text_mask"):
        rich(x, None, text_tokens=torch.zeros(2, 4, 16), text_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="reference"):
        rich(x, None, reference=torch.rand(2, 1, 8, 8))


def test_text_and_reference_branches_neutral_at_init_but_wired():
    model = _model(text_dim=16, use_reference=True)
    x = torch.rand(2, 3, 24, 20)
    prior = torch.rand(2, PRIOR_DIM)
    tokens = torch.randn(2, 5, 16)
    ref = torch.rand(2, 3, 40, 31)  # other size: resized to the input
    with torch.no_grad():
        base = model(x, prior)
        assert torch.equal(base, model(x, prior, text_tokens=tokens))
        assert torch.equal(base, model(x, prior, reference=ref))
        assert torch.equal(base, model(x, prior, text_tokens=tokens, reference=ref))

        # text: perturb the content block's zero-initialised output projection
        torch.nn.init.normal_(model.content.attn.proj.weight, std=0.2)
        with_text = model(x, prior, text_tokens=tokens)
        assert not torch.allclose(base, with_text, atol=1e-5)
        assert torch.equal(base, model(x, prior))  # still identity without tokens
        # a sample whose tokens are all masked out is as if it had no tokens
        mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
        masked = model(x, prior, text_tokens=tokens, text_mask=mask)
        assert torch.isfinite(masked).all()
        assert torch.allclose(masked[1], base[1], atol=1e-6)
        assert not torch.allclose(masked[0], with_text[0], atol=1e-5)

        # reference: gated fusion at every level ...
        for fusion in model.ref_fusions:
            fusion.gate.fill_(0.1)
        with_ref = model(x, prior, reference=ref)
        assert not torch.allclose(base, with_ref, atol=1e-5)
        # ... and the lowest-level cross-attention on its own
        for fusion in model.ref_fusions:
            fusion.gate.zero_()
        torch.nn.init.normal_(model.ref_fusions[-1].attn.proj.weight, std=0.2)
        assert not torch.allclose(base, model(x, prior, reference=ref), atol=1e-5)
        assert torch.equal(base, model(x, prior))


def test_gradients_reach_every_parameter_path():
    model = _model(text_dim=8, use_reference=True).train()
    x = torch.rand(1, 3, 16, 16)
    out = model(x, torch.rand(1, PRIOR_DIM), text_tokens=torch.randn(1, 3, 8),
                reference=torch.rand(1, 3, 16, 16))
    out.square().mean().backward()
    # the zero-initialised gates / projections get gradient, so training can open them
    assert model.content.attn.proj.weight.grad.abs().sum() > 0
    assert model.ref_fusions[0].gate.grad.abs().sum() > 0
    assert model.encoders[0][0].beta.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------
# save / load
# ------------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    model = _wake(_model(text_dim=8, use_reference=True))
    path = tmp_path / "restorer.safetensors"
    save_restorer(model, path, {"step": 1234, "note": "unit test"})
    loaded = load_restorer(path)
    assert loaded.config == model.config
    assert loaded.metadata == {"step": "1234", "note": "unit test"}
    assert not loaded.training
    x, prior = torch.rand(2, 3, 19, 23), torch.rand(2, PRIOR_DIM)
    tokens, ref = torch.randn(2, 4, 8), torch.rand(2, 3, 19, 23)
    with torch.no_grad():
        assert torch.equal(model(x, prior, tokens, None, ref), loaded(x, prior, tokens, None, ref))
    with pytest.raises(ValueError, match="reserved"):
        save_restorer(model, tmp_path / "x.safetensors", {"config": "{}"})


def test_load_rejects_corrupt_files(tmp_path):
    path = tmp_path / "good.safetensors"
    save_restorer(_model(), path, {})
    data = path.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.safetensors: not a valid restorer"):
        load_restorer(truncated)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(ValueError, match="garbage.safetensors: not a valid restorer"):
        load_restorer(garbage)

    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_restorer(tmp_path / "missing.safetensors")


def test_load_reports_key_and_shape_mismatches(tmp_path):
    import json

    from safetensors.torch import save_file

    small = _model(width=16)
    state = {k: v.contiguous() for k, v in small.state_dict().items()}
    del state["ending.bias"]
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "mismatch.safetensors"
    config = RestorerConfig(prior_dim=PRIOR_DIM).to_dict()  # claims width 24
    save_file(state, str(path), metadata={"config": json.dumps(config),
                                          "arch": "reason_restore.PriorRestorer"})
    with pytest.raises(ValueError) as err:
        load_restorer(path)
    msg = str(err.value)
    assert "mismatch.safetensors" in msg and "ending.bias" in msg and "extra.weight" in msg
    assert "shape mismatch" in msg and "intro.weight" in msg

    other = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(3, 3)}, str(other))
    with pytest.raises(ValueError, match="other.safetensors: not a ReasonRestore"):
        load_restorer(other)


def test_detect_and_infer_config():
    model = _model(text_dim=8, use_reference=True, enc_blocks=(1, 2), dec_blocks=(2, 1),
                   middle_blocks=3, width=8)
    sd = model.state_dict()
    assert detect_restorer(sd)
    assert not detect_restorer({"conv_first.weight": torch.zeros(1)})
    assert not detect_restorer(None)
    assert infer_config(sd) == model.config


# ------------------------------------------------------------------------------------------
# tiling
# ------------------------------------------------------------------------------------------

def _conv3x3():
    weight = torch.randn(3, 3, 3, 3)
    weight = weight / weight.abs().sum(dim=(1, 2, 3), keepdim=True)  # |output| <= max |input|
    return lambda t: F.conv2d(t, weight, padding=1)


def test_tile_starts_cover_with_overlap():
    for size in (1, 63, 64, 65, 130, 500, 1031):
        for tile, overlap in ((64, 0), (64, 16), (64, 31), (100, 20)):
            starts = tile_starts(size, tile, overlap)
            assert starts[0] == 0
            assert min(size, starts[-1] + tile) == size
            for a, b in zip(starts, starts[1:]):
                assert 0 < b - a <= tile - overlap


def test_tiled_matches_untiled_small_receptive_field():
    fn = _conv3x3()
    x = torch.rand(2, 3, 150, 173)
    full = fn(x)
    tiled = tiled_apply(fn, x, tile=64, overlap=16)
    assert tiled.shape == full.shape and tiled.dtype == torch.float32
    assert (tiled - full).abs().max() < 1 / 255


def test_tiled_scale_two_nearest():
    x = torch.rand(1, 3, 97, 130)
    fn = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
    out = tiled_apply(fn, x, tile=48, overlap=8, scale=2)
    assert out.shape == (1, 3, 194, 260)
    assert torch.allclose(out, fn(x), atol=1e-6)


def test_tiled_progress_and_small_image_whole():
    x = torch.rand(1, 3, 100, 150)
    calls = []
    tiled_apply(lambda t: t, x, tile=64, overlap=16, progress=lambda d, n: calls.append((d, n)))
    total = len(tile_starts(100, 64, 16)) * len(tile_starts(150, 64, 16))
    assert total > 1
    assert calls == [(i, total) for i in range(1, total + 1)]

    seen = []

    def fn(t):
        seen.append(tuple(t.shape))
        return t * 2

    small = torch.rand(1, 3, 40, 50)
    calls.clear()
    out = tiled_apply(fn, small, tile=64, overlap=16, progress=lambda d, n: calls.append((d, n)))
    assert seen == [(1, 3, 40, 50)] and calls == [(1, 1)]
    assert torch.allclose(out, small * 2)


def test_tiled_interrupt_propagates():
    class Stop(Exception):
        pass

    state = {"checks": 0, "tiles": 0}

    def check():
        state["checks"] += 1
        if state["checks"] == 3:
            raise Stop("interrupted")

    def fn(t):
        state["tiles"] += 1
        return t

    with pytest.raises(Stop):
        tiled_apply(fn, torch.rand(1, 3, 200, 200), tile=64, overlap=8, check_interrupt=check)
    assert state["tiles"] == 2


def test_tiled_oom_halves_tile():
    sizes = []

    def fn(t):
        sizes.append(max(t.shape[-2:]))
        if max(t.shape[-2:]) > 64:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return t + 1

    x = torch.rand(1, 3, 150, 120)
    out = tiled_apply(fn, x, tile=256, overlap=32)
    assert torch.allclose(out, x + 1, atol=1e-6)
    assert sizes[0] == 150 and sizes[1] == 75 and sizes[-1] == 64

    def always_oom(t):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        tiled_apply(always_oom, x, tile=128, overlap=16)

    def other_error(t):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        tiled_apply(other_error, x, tile=128, overlap=16)


def test_tiled_argument_validation():
    x = torch.rand(1, 3, 32, 32)
    ident = lambda t: t  # noqa: E731
    with pytest.raises(ValueError, match="tile"):
        tiled_apply(ident, x, tile=8, overlap=0)
    with pytest.raises(ValueError, match="overlap"):
        tiled_apply(ident, x, tile=64, overlap=32)
    with pytest.raises(ValueError, match="overlap"):
        tiled_apply(ident, x, tile=64, overlap=-1)
    with pytest.raises(ValueError, match="scale"):
        tiled_apply(ident, x, scale=0)
    with pytest.raises(ValueError, match="image"):
        tiled_apply(ident, torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="fn returned"):
        tiled_apply(ident, x, tile=16, overlap=4, scale=2)


def test_tiled_restorer_close_to_whole_image():
    model = _wake(_model(width=8), std=0.05)
    x = torch.rand(1, 3, 80, 100)
    prior = torch.rand(1, PRIOR_DIM)
    with torch.no_grad():
        full = model(x, prior)
        tiled = tiled_apply(lambda t: model(t, prior), x, tile=64, overlap=24)
    assert tiled.shape == full.shape
    assert torch.isfinite(tiled).all()
    # not bit-identical (global channel attention, padding), but close
    assert (tiled - full).abs().mean() < 0.05
