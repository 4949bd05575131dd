"""Distribution shifts: determinism, ranges, severity ordering and closed forms."""

import difflib
import math

import pytest
import torch
import torch.nn.functional as F

from sharpness import SharpnessError
from sharpness.zoo.datasets import load
from sharpness.zoo.shifts import SHIFTS, apply, shifts_for

IMAGE = ["gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "contrast", "brightness", "pixelate",
         "jpeg", "rotate"]
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "rotate", "signal_noise", "translate", "scale",
          "char_noise", "word_noise"}


@pytest.fixture(scope="module")
def images() -> dict[str, torch.Tensor]:
    """Real strokes (digits upsampled to 28x28) and natural-image-like colour images (1/f spectrum, 32x32)."""
    gray = F.interpolate(load("digits", n_test=24).test.x, size=28, mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(0)
    f = torch.fft.fftfreq(32)
    radius = (f[:, None] ** 2 + f[None] ** 2).sqrt().clamp(min=1 / 32)
    z = torch.fft.ifft2(torch.fft.fft2(torch.randn(16, 3, 32, 32, generator=g)) / radius).real
    lo, hi = z.amin(dim=(2, 3), keepdim=True), z.amax(dim=(2, 3), keepdim=True)
    return {"gray28": gray.clamp(0, 1), "colour32": ((z - lo) / (hi - lo)).float()}


@pytest.fixture(scope="module")
def signals() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 40, generator=g).cumsum(-1)
    return (x - x.mean()) / x.std()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return load("bbc_news", n_test=12).test.x


def test_registry_lists_every_shift_with_five_levels():
    assert shifts_for("image") == IMAGE
    assert shifts_for("signal") == ["signal_noise", "translate", "scale"]
    assert shifts_for("text") == ["segment", "char_noise", "word_noise"]
    for name, info in SHIFTS.items():
        modality, description = info
        assert modality in ("image", "signal", "text") and description.count(",") >= 4, name
    with pytest.raises(SharpnessError, match="unknown modality 'audio'"):
        shifts_for("audio")


@pytest.mark.parametrize("kind", ["gray28", "colour32"])
@pytest.mark.parametrize("name", IMAGE)
def test_image_shifts(images, name, kind):
    x = images[kind]
    before = x.clone()
    outs = [apply(name, x, severity=s, seed=0) for s in range(1, 6)]
    assert torch.equal(x, before)  # the input is never modified
    for out in outs:
        assert out.shape == x.shape and out.dtype == x.dtype and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(apply(name, x, severity=5, seed=0), outs[-1])
    assert torch.equal(apply(name, x, severity=5, seed=1), outs[-1]) == (name not in RANDOM)
    distance = [float((out - x).abs().mean()) for out in outs]
    assert distance[0] > 0 and distance == sorted(distance), distance


@pytest.mark.parametrize("name", ["signal_noise", "translate", "scale"])
def test_signal_shifts(signals, name):
    before = signals.clone()
    outs = [apply(name, signals, severity=s, seed=0) for s in range(1, 6)]
    assert torch.equal(signals, before)
    assert all(out.shape == signals.shape and out.dtype == signals.dtype for out in outs)
    assert torch.equal(apply(name, signals, severity=5, seed=0), outs[-1])
    assert not torch.equal(apply(name, signals, severity=5, seed=1), outs[-1])
    distance = [float((out - signals).abs().mean()) for out in outs]
    assert distance[0] > 0 and distance == sorted(distance), distance


# --------------------------------------------------------------------------- closed forms


def assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> None:
    assert torch.allclose(a, b, rtol=0, atol=atol), float((a - b).abs().max())


def test_contrast_is_an_affine_pull_to_the_channel_mean(images):
    x = images["colour32"]
    m = x.mean(dim=(2, 3), keepdim=True)
    assert_close(apply("contrast", x, severity=5), m + 0.15 * (x - m))


def test_brightness_raises_the_hsv_value_and_keeps_hue_and_saturation(images):
    x = images["colour32"]
    out = apply("brightness", x, severity=3)
    v, v_out = x.amax(dim=1, keepdim=True), out.amax(dim=1, keepdim=True)
    assert_close(v_out, (v + 0.15).clamp(max=1))
    assert_close(out * v, x * v_out)  # channel ratios unchanged
    gray = images["gray28"]
    assert_close(apply("brightness", gray, severity=1), (gray + 0.05).clamp(max=1))


@pytest.mark.parametrize(("size", "severity", "sigma"), [(32, 5, 1.0), (28, 5, 0.875), (32, 4, 0.8)])
def test_gaussian_blur_of_a_point_has_the_scaled_width(size, severity, sigma):
    x = torch.zeros(1, 1, size, size, dtype=torch.float64)
    x[0, 0, 12, 14] = 1
    out = apply("gaussian_blur", x, severity=severity)[0, 0]
    t = torch.arange(size, dtype=torch.float64)
    assert float(out.sum()) == pytest.approx(1, abs=1e-12)
    for profile, centre in ((out.sum(1), 12), (out.sum(0), 14)):
        assert float((profile * t).sum()) == pytest.approx(centre, abs=1e-9)
        assert float((profile * (t - centre) ** 2).sum()) == pytest.approx(sigma**2, rel=1e-3)


@pytest.mark.parametrize("name", ["gaussian_blur", "contrast", "pixelate", "jpeg"])
def test_a_constant_image_is_kept(name):
    x = torch.full((2, 3, 28, 28), 0.4)
    assert_close(apply(name, x, severity=5), x, atol=1.5 / 255)


def test_rotate_turns_a_point_about_the_centre_by_the_angle():
    size, r = 32, 9.0
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    blob = lambda cx, width: torch.exp(-((xx - cx) ** 2 + yy**2) / width)  # noqa: E731
    x = torch.stack([blob(r, 4), blob(0.0, 32)])[:, None]
    out = apply("rotate", x, severity=5, seed=0)
    w = out[0, 0]
    angle = math.degrees(math.atan2(float((w * yy).sum()), float((w * xx).sum())))
    assert abs(angle) == pytest.approx(30, abs=0.5)
    assert math.hypot(float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())) == pytest.approx(r, abs=0.1)
    assert float((out[1] - x[1]).abs().max()) < 0.02  # a centred round blob barely changes (0.07 if off by 0.5 px)


def test_noise_statistics_match_their_parameters():
    x = torch.full((4, 1, 64, 64), 0.5, dtype=torch.float64)
    noise = apply("gaussian_noise", x, severity=5, seed=3) - 0.5
    assert float(noise.mean()) == pytest.approx(0, abs=0.003) and float(noise.std()) == pytest.approx(0.1, rel=0.02)
    shot = apply("shot_noise", x, severity=5, seed=3)
    assert_close(shot * 50, (shot * 50).round(), atol=1e-9)  # photon counts
    assert float(shot.mean()) == pytest.approx(0.5, abs=0.003)
    impulse = apply("impulse_noise", x, severity=5, seed=3)
    hit = impulse != 0.5
    assert set(impulse[hit].unique().tolist()) == {0.0, 1.0}
    assert float(hit.double().mean()) == pytest.approx(0.07, abs=0.006)


def test_jpeg_returns_8_bit_values(images):
    out = apply("jpeg", images["colour32"], severity=5) * 255
    assert_close(out, out.round(), atol=1e-4)


def test_translate_shifts_by_whole_samples_and_replicates_edges(signals):
    out = apply("translate", signals, severity=2, seed=0)  # 4 samples
    right = torch.cat([signals[..., :1].expand(-1, -1, 4), signals[..., :-4]], -1)
    left = torch.cat([signals[..., 4:], signals[..., -1:].expand(-1, -1, 4)], -1)
    is_right = (out == right).all(-1).squeeze(1)
    assert torch.equal(is_right | (out == left).all(-1).squeeze(1), torch.ones(len(out), dtype=torch.bool))
    assert 0 < int(is_right.sum()) < len(out)  # both directions occur


def test_scale_stretches_the_time_axis_about_the_centre():
    t = torch.arange(40, dtype=torch.float64) - 19.5
    out = apply("scale", t.expand(8, 1, 40).clone(), severity=5, seed=0)[:, 0]
    inner = t.abs() <= 19.5 / 1.5  # no clamping at the edges here
    for row in out:
        assert torch.allclose(row[inner], t[inner] / 1.5) or torch.allclose(row[inner], t[inner] * 1.5)


# --------------------------------------------------------------------------- text


def test_segment_keeps_the_later_part_of_each_article(texts):
    outs = [apply("segment", texts, severity=s) for s in range(1, 6)]
    for s, out in enumerate(outs):
        fraction = (0.2, 0.35, 0.5, 0.65, 0.8)[s]
        for text, part in zip(texts, out):
            assert text.endswith(part) and not part[0].isspace()
            assert len(part.split()) == len(text.split()) - int(fraction * len(text.split()))
    assert apply("segment", ["", "one"], severity=5) == ["", "one"]


@pytest.mark.parametrize("name", ["char_noise", "word_noise"])
def test_text_noise_grows_with_severity(texts, name):
    outs = [apply(name, texts, severity=s, seed=0) for s in range(1, 6)]
    assert apply(name, texts, severity=5, seed=0) == outs[-1] != apply(name, texts, severity=5, seed=1)
    unit = list if name == "char_noise" else str.split
    similarity = [
        sum(difflib.SequenceMatcher(None, unit(a[:600]), unit(b[:600]), autojunk=False).ratio() for a, b in
            zip(texts[:4], out[:4])) for out in outs
    ]  # fmt: skip
    assert similarity == sorted(similarity, reverse=True) and similarity[-1] < 0.95 * 4, similarity


def test_word_noise_only_uses_words_of_the_article(texts):
    for text, noisy in zip(texts, apply("word_noise", texts, severity=5, seed=2)):
        assert set(noisy.split()) <= set(text.split()) and noisy != " ".join(text.split())


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("shift", "x", "severity", "match"),
    [
        ("fog", torch.zeros(1, 1, 4, 4), 1, "unknown shift 'fog'"),
        ("contrast", torch.zeros(1, 1, 4, 4), 0, "severity must be an integer in 1..5, got 0"),
        ("contrast", torch.zeros(1, 1, 4, 4), 6, "got 6"),
        ("contrast", torch.zeros(1, 1, 4, 4), 2.0, "got 2.0"),
        ("contrast", torch.zeros(1, 1, 4, 4), True, "got True"),
        ("contrast", torch.zeros(1, 4, 4), 1, r"float tensor \(N, C, H, W\)"),
        ("contrast", torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 1, "torch.uint8"),
        ("translate", torch.zeros(1, 1, 4, 4), 1, r"\(N, C, L\)"),
        ("segment", "one text", 1, "list of strings"),
        ("jpeg", torch.zeros(1, 2, 8, 8), 1, "1 or 3 channels"),
    ],
)
def test_bad_requests_raise(shift, x, severity, match):
    with pytest.raises(SharpnessError, match=match):
        apply(shift, x, severity=severity)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", [*IMAGE, "signal_noise", "translate", "scale"])
def test_a_gpu_batch_gets_the_cpu_corruption(images, signals, name):
    x = signals if name in ("signal_noise", "translate", "scale") else images["colour32"]
    on_gpu = apply(name, x.cuda(), severity=4, seed=5)
    assert on_gpu.device.type == "cuda"
    assert_close(on_gpu.cpu(), apply(name, x, severity=4, seed=5), atol=1e-3)  # cuDNN may use TF32
