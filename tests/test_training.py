"""Training building blocks: targets, losses, one optimisation step, checkpoint resume.

Small and fast: tiny models on synthetic patches (no photo cache, no apt)."""

import time

import numpy as np
import pytest
import torch

from reason_restore.reasoner.analyzer import AnalyzerConfig, DegradationAnalyzer
from reason_restore.reasoner.synthesis import degrade
from reason_restore.reasoner.taxonomy import TYPE_NAMES, get_type, param_slots
from reason_restore.restorer.network import PriorRestorer, RestorerConfig
from reason_restore.restorer.prior import encode_prior_batch, prior_dim
from reason_restore.tools import training as T
from reason_restore.tools.train_analyzer import batch_crops, loss_fn, targets, two_hot
from reason_restore.tools.train_restorer import frequency_l1, perturb, restoration_loss


@pytest.fixture(scope="module")
def patches():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:128, 0:128]
    base = np.stack([(np.sin(x / 9) + 1) * 100, (np.cos(y / 13) + 1) * 90, (x + y) % 200], -1)
    return np.stack([np.clip(base + rng.normal(0, 3, base.shape), 0, 255)
                     for _ in range(4)]).astype(np.uint8)


def test_two_hot_expectation_recovers_the_value():
    grid = (0.0, 10.0, 20.0, 30.0)
    for v in (0.0, 7.5, 20.0, 30.0):
        t = two_hot(v, grid)
        assert t.sum() == pytest.approx(1.0) and float((t * np.array(grid)).sum()) == pytest.approx(v)
    wrapped = two_hot(170.0, (0.0, 30.0, 60.0, 90.0, 120.0, 150.0), circular_period=180.0)
    # 170 deg lies two thirds of the way from the last bin (150) to 180 = 0 deg
    assert wrapped[-1] == pytest.approx(1 / 3) and wrapped[0] == pytest.approx(2 / 3)


def test_targets_mark_present_types_and_mask_irrelevant_keys(patches):
    clean = patches[0].astype(np.float32) / 255
    _, truth = degrade(clean, "blur: width=2, motion_length=0; noise: sigma=20", seed=0)
    presence, slot_t, slot_m = targets([truth], "cpu")
    assert presence[0].tolist() == [float(n in ("blur", "noise")) for n in TYPE_NAMES]
    masks = {(t, p.key): float(m[0]) for (t, p), m in zip(param_slots(), slot_m)}
    assert masks[("noise", "sigma")] == 1.0 and masks[("jpeg", "quality")] == 0.0
    assert masks[("blur", "motion_angle")] == 0.0  # no motion: its angle means nothing


def test_restoration_losses_are_zero_only_at_the_target():
    clean = torch.rand(2, 3, 32, 32)
    assert float(restoration_loss(clean, clean, torch.zeros(2))) == 0.0
    noisy = clean + 0.1 * torch.randn_like(clean)
    assert float(frequency_l1(noisy, clean).mean()) > 0
    # severe samples weigh more
    assert float(restoration_loss(noisy, clean, torch.ones(2))) > float(
        restoration_loss(noisy, clean, torch.zeros(2)))


def test_perturbed_diagnosis_stays_valid_and_is_sometimes_dropped(patches):
    clean = patches[0].astype(np.float32) / 255
    _, truth = degrade(clean, "noise: sigma=20; jpeg: quality=30", seed=0)
    rng = np.random.default_rng(1)
    outs = [perturb(truth, rng) for _ in range(50)]
    assert any(o is None for o in outs) and any(o is not None for o in outs)
    for o in filter(None, outs):
        assert o.types == truth.types
        sigma = get_type("noise").param("sigma")
        assert sigma.low <= o.finding("noise").params["sigma"] <= sigma.high


def _fixed_batch(patches, n=4):
    rng = np.random.default_rng(3)
    return [T.sample_pair(patches, rng, crop=64) for _ in range(n)]


def test_training_pairs_are_8_bit_images_like_the_ones_users_have(patches):
    rng = np.random.default_rng(3)
    for _ in range(4):
        clean, degraded, _ = T.sample_pair(patches, rng, clean_fraction=0.0)
        levels = degraded * 255.0
        assert np.abs(levels - np.round(levels)).max() < 1e-3
        assert degraded.dtype == np.float32 and 0.0 <= degraded.min() <= degraded.max() <= 1.0


def test_one_restorer_step_lowers_the_loss(patches):
    torch.manual_seed(0)
    model = PriorRestorer(RestorerConfig(width=8, prior_dim=prior_dim(), enc_blocks=(1, 1),
                                         dec_blocks=(1, 1), middle_blocks=1))
    batch = _fixed_batch(patches)
    clean, deg = T.to_chw([c for c, _, _ in batch]), T.to_chw([d for _, d, _ in batch])
    prior = encode_prior_batch([t for _, _, t in batch])
    sev = torch.tensor([t.overall_severity for _, _, t in batch])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = float(restoration_loss(model(deg, prior), clean, sev))
    for _ in range(5):
        loss = restoration_loss(model(deg, prior), clean, sev)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(restoration_loss(model(deg, prior), clean, sev)) < before


def test_one_analyzer_step_lowers_the_loss(patches):
    torch.manual_seed(0)
    config = AnalyzerConfig(width=8, crop=64, max_crops=1)
    model = DegradationAnalyzer(config)
    rng = np.random.default_rng(5)
    batch = [T.sample_pair(patches, rng) for _ in range(4)]
    crops = batch_crops(T.to_chw([d for _, d, _ in batch]), config)
    tgt = targets([t for _, _, t in batch], "cpu")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    before = float(loss_fn(model(crops), *tgt))
    for _ in range(5):
        loss = loss_fn(model(crops), *tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss_fn(model(crops), *tgt)) < before


def test_checkpoint_resume_restores_model_and_optimiser(tmp_path):
    torch.manual_seed(0)
    model = DegradationAnalyzer(AnalyzerConfig(width=8, crop=64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model(torch.rand(1, 1, 3, 64, 64))["presence"].sum().backward()
    opt.step()
    T.save_checkpoint(tmp_path / "c.ckpt", model, opt, sched, 17, {"elapsed": 5.0})

    fresh = DegradationAnalyzer(AnalyzerConfig(width=8, crop=64))
    fopt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    fsched = torch.optim.lr_scheduler.LambdaLR(fopt, lambda s: 1.0)
    step, extra = T.load_checkpoint(tmp_path / "c.ckpt", fresh, fopt, fsched)
    assert step == 17 and extra == {"elapsed": 5.0}
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert fopt.state_dict()["state"].keys() == opt.state_dict()["state"].keys()


def _draw(rng):
    return torch.from_numpy(rng.random(3))


def test_batches_are_the_same_resumed_or_made_by_worker_processes():
    """Batch ``step`` depends on (seed, step) alone: a resumed run continues the same data
    stream, and worker processes change the speed, not the batches."""
    inline = [b.tolist() for b in T.batches(_draw, seed=7, start=0, stop=6)]
    assert len({tuple(b) for b in inline}) == 6  # no batch repeats
    resumed = [b.tolist() for b in T.batches(_draw, seed=7, start=4, stop=6)]
    assert resumed == inline[4:]
    in_workers = [b.tolist() for b in T.batches(_draw, seed=7, start=0, stop=6, workers=2)]
    assert in_workers == inline
    assert [b.tolist() for b in T.batches(_draw, seed=8, start=0, stop=1)] != inline[:1]


def test_a_sitting_ends_on_its_own_clock_not_the_schedule():
    args = T.trainer_arguments("t", minutes=30.0, steps=10, batch=1, lr=1.0, eval_images=1,
                               out=None).parse_args(["--minutes", "60", "--sitting", "0.5"])
    assert args.minutes == 60 and args.sitting == 0.5
    assert not T.sitting_over(args, start=time.time())
    assert T.sitting_over(args, start=time.time() - 31)
    no_sitting = T.trainer_arguments("t", minutes=30.0, steps=10, batch=1, lr=1.0,
                                     eval_images=1, out=None).parse_args([])
    assert not T.sitting_over(no_sitting, start=0.0)  # only --minutes ends the run


def test_cosine_lr_follows_whichever_budget_ends_first():
    assert T.cosine_lr(1.0, 0, 100, 0.0, 10.0, warmup=1) == pytest.approx(1.0)
    assert T.cosine_lr(1.0, 50, 100, 0.0, 1e9, warmup=1) == pytest.approx(0.5)
    assert T.cosine_lr(1.0, 1, 100, 5.0, 10.0, warmup=1) == pytest.approx(0.5, abs=0.01)
    assert T.cosine_lr(1.0, 100, 100, 0.0, 10.0) == pytest.approx(0.02)  # floor


def test_severity_reward_is_differentiable_into_the_restorer(patches):
    from reason_restore.tools.train_restorer import severity_reward
    torch.manual_seed(0)
    critic = DegradationAnalyzer(AnalyzerConfig(width=8, crop=64)).eval()
    critic.requires_grad_(False)
    model = PriorRestorer(RestorerConfig(width=8, prior_dim=prior_dim(), enc_blocks=(1, 1),
                                         dec_blocks=(1, 1), middle_blocks=1))
    batch = _fixed_batch(patches, 2)
    deg = T.to_chw([d for _, d, _ in batch])
    reward = severity_reward(critic, model(deg, encode_prior_batch([t for _, _, t in batch])))
    assert reward.shape == (2,) and ((reward >= 0) & (reward <= 1)).all()
    reward.mean().backward()
    assert model.ending.weight.grad is not None and model.ending.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())  # the critic stays frozen


def test_predicted_prior_is_what_the_reasoner_would_feed_the_restorer(patches):
    """``train_reference --predicted`` conditions on the analyzer's own diagnosis: the same
    vector ``Reasoner.diagnose`` -> ``encode_prior`` gives at run time."""
    from reason_restore.reasoner.engine import Reasoner
    from reason_restore.tools.train_restorer import predicted_prior
    torch.manual_seed(0)
    analyzer = DegradationAnalyzer(AnalyzerConfig(width=8, crop=64)).eval()
    with torch.no_grad():  # a presence bias that puts some types above the threshold
        analyzer.presence.bias.copy_(torch.linspace(-2, 2, len(TYPE_NAMES)))
    deg = T.to_chw([d for _, d, _ in _fixed_batch(patches, 3)])
    prior = predicted_prior(analyzer, deg)
    expected = encode_prior_batch(Reasoner(analyzer).diagnose(deg))
    assert prior.shape == (3, prior_dim())
    assert torch.allclose(prior, expected, atol=1e-5)
    assert (prior[:, 0] == 1).all() and prior.abs().sum() > 3  # a diagnosis, not blind zeros


def test_predicted_prior_keeps_scene_wide_types_and_blind_rows_from_the_truth(patches):
    from reason_restore.restorer.prior import type_slice
    from reason_restore.tools.train_restorer import SCENE_WIDE, predicted_prior
    torch.manual_seed(0)
    analyzer = DegradationAnalyzer(AnalyzerConfig(width=8, crop=64)).eval()
    with torch.no_grad():  # every type present
        analyzer.presence.bias.fill_(5.0)
    batch = _fixed_batch(patches, 3)
    deg = T.to_chw([d for _, d, _ in batch])
    truth = encode_prior_batch([batch[0][2], None, batch[2][2]])  # row 1: a dropped diagnosis
    plain = predicted_prior(analyzer, deg)
    mixed = predicted_prior(analyzer, deg, truth)
    assert torch.equal(mixed[1], truth[1])  # blind stays blind
    for row in (0, 2):
        for name in TYPE_NAMES:
            s = type_slice(name)
            want = truth[row, s] if name in SCENE_WIDE else plain[row, s]
            assert torch.equal(mixed[row, s], want), (row, name)
    with pytest.raises(KeyError, match="not a taxonomy type"):
        type_slice("fog")


def test_mixed_precision_only_on_gpu():
    """bfloat16 autocast on CUDA (recorded in the training record), float32 on the CPU."""
    import contextlib
    import warnings

    from reason_restore.tools import training as T
    assert isinstance(T.autocast(torch.device("cpu")), contextlib.nullcontext)
    assert T.precision_name(torch.device("cpu")) == "float32"
    with warnings.catch_warnings():  # building it without a GPU only warns
        warnings.simplefilter("ignore")
        ctx = T.autocast(torch.device("cuda"))
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    assert T.precision_name(torch.device("cuda")) == "bfloat16 autocast"


def test_loss_log_keeps_the_mean_of_each_window(capsys):
    running, extra = [], {"losses": []}
    for step, value in enumerate((1.0, 3.0, 5.0, 7.0), start=1):
        T.log_loss(running, torch.tensor(value), step, extra, start=0.0, every=2)
    assert extra["losses"] == [[2, 2.0], [4, 6.0]] and running == []
    assert "step 4 loss 6.0000" in capsys.readouterr().out
