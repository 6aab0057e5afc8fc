"""oracle.audio: decoding, channel averaging, resampling (soxr, as MC), user-error messages, hostile files, and libsndfile's int16 rule."""

from __future__ import annotations

import io
import os
import signal
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import soxr

from oracle.audio import is_int16_exact, load_audio, quantize_int16, resample, write_wav_int16
from oracle.errors import OracleError


def sine(freq, rate, seconds=1.0, amp=0.5):
    return amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def peak_hz(x, rate):
    # 1 s of signal -> 1 Hz bins; a Hann window keeps leakage from moving the peak.
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * rate / len(x)


def soundfile_pcm16_round_trip(x):
    """What MC ``Audio.to_base64("wav")`` does to an array: soundfile's default WAV subtype, PCM_16."""
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="WAV")
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float64")
    return y


# --- decoding ----------------------------------------------------------------------------------


def test_wav_int16_exact(tmp_path):
    k = np.random.default_rng(1).integers(-32768, 32768, 4000).astype(np.int16)
    p = tmp_path / "a.wav"
    sf.write(p, k, 16000, subtype="PCM_16")
    x = load_audio(p)
    assert x.dtype == np.float64 and x.shape == (4000,)
    assert np.array_equal(x, k / 32768.0)
    assert is_int16_exact(x)


def test_wav_float32_exact(tmp_path):
    v = np.random.default_rng(2).uniform(-1.5, 1.5, 3000).astype(np.float32)  # floats are not clipped
    p = tmp_path / "f.wav"
    sf.write(p, v, 16000, subtype="FLOAT")
    assert np.array_equal(load_audio(p), v.astype(np.float64))


def test_flac_exact(tmp_path):
    k = np.random.default_rng(3).integers(-32768, 32768, 5000).astype(np.int16)
    p = tmp_path / "a.flac"
    sf.write(p, k, 16000, format="FLAC", subtype="PCM_16")
    assert np.array_equal(load_audio(p), k / 32768.0)


def test_ogg_vorbis_lossy_but_faithful(tmp_path):
    x = sine(440.0, 16000)
    p = tmp_path / "a.ogg"
    sf.write(p, x, 16000, format="OGG", subtype="VORBIS")
    y = load_audio(p)
    assert y.shape == x.shape
    assert peak_hz(y, 16000) == 440.0
    assert np.corrcoef(x, y)[0, 1] > 0.99


def test_16k_passes_through_untouched(tmp_path):
    x = np.random.default_rng(4).uniform(-1, 1, 1601).astype(np.float32)
    p = tmp_path / "f.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    assert np.array_equal(load_audio(p), x.astype(np.float64))


@pytest.mark.parametrize("rate", [8000, 44100, 22050, 48000])
def test_resampled_length_and_frequency(tmp_path, rate):
    x = sine(440.0, rate)  # 1 s
    p = tmp_path / f"s{rate}.wav"
    sf.write(p, x, rate, subtype="FLOAT")
    y = load_audio(p)
    assert y.shape == (16000,)
    assert peak_hz(y, 16000) == 440.0
    # amplitude kept away from the ends (the filter's edge transients live within ~10 ms of them)
    mid = y[1600:-1600]
    assert np.abs(mid).max() == pytest.approx(0.5, abs=5e-3)
    np.testing.assert_allclose(mid, sine(440.0, 16000)[1600:-1600], rtol=0, atol=5e-3)
    # and it is MC's Audio.resample: soxr HQ, float32, one shot
    assert np.array_equal(y, soxr.resample(x.astype(np.float32), rate, 16000, quality="HQ").astype(np.float64))


def test_resample_is_soxr_hq_float32():
    x = np.random.default_rng(8).uniform(-1, 1, 12345).astype(np.float32)
    y = resample(x, 44100, 16000)
    assert y.dtype == np.float32 and y.shape == (round(12345 * 160 / 441),)
    assert np.array_equal(y, soxr.resample(x, 44100, 16000, quality="HQ"))
    assert resample(x, 16000, 16000) is x


def test_soxr_stream_equals_one_shot():
    """The loader resamples block by block with soxr.ResampleStream; for any block sizes that is the
    one-shot soxr.resample MC calls (the conformance grid checks whole files against MC itself)."""
    rng = np.random.default_rng(9)
    for rate in (8000, 11025, 22050, 44100, 48000, 96000, 7):
        for n in (1, 2, 17, 999, int(rng.integers(1000, 40000))):
            x = (0.3 * rng.standard_normal(n)).astype(np.float32)
            block = int(rng.integers(1, 5000))
            stream = soxr.ResampleStream(rate, 16000, 1, dtype="float32", quality="HQ")
            parts = [stream.resample_chunk(x[i:i + block], last=False) for i in range(0, n, block)]
            parts.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
            one = soxr.resample(x, rate, 16000, quality="HQ")
            assert np.array_equal(np.concatenate(parts), one), (rate, n, block)


def test_stereo_averaged_in_float32(tmp_path):
    rng = np.random.default_rng(5)
    lr = rng.uniform(-1, 1, (2000, 2)).astype(np.float32)
    p = tmp_path / "st.wav"
    sf.write(p, lr, 16000, subtype="FLOAT")
    y = load_audio(p)
    assert np.array_equal(y, lr.mean(axis=1).astype(np.float64))  # float32 mean, widened (as MC)
    assert not np.array_equal(y, lr.astype(np.float64).mean(axis=1))  # not a float64 mean


def test_pcm24_and_pcm32_read_as_float32(tmp_path):
    """libsndfile's float32 read is the reference's: 24-bit PCM is exact in float32, 32-bit PCM is rounded."""
    k = np.random.default_rng(10).integers(-2**31, 2**31, 3000, dtype=np.int64).astype(np.int32)
    p = tmp_path / "pcm32.wav"
    sf.write(p, k, 16000, subtype="PCM_32")
    assert np.array_equal(load_audio(p), sf.read(p, dtype="float32")[0].astype(np.float64))
    assert not np.array_equal(load_audio(p), k / 2.0**31)


# --- user errors: one line, starting with the path --------------------------------------------


def assert_one_line(err, prefix):
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(prefix), msg


def test_missing_file(tmp_path):
    p = tmp_path / "nope.wav"
    with pytest.raises(OracleError) as err:
        load_audio(p)
    assert str(err.value) == f"{p}: no such file"


def test_directory(tmp_path):
    with pytest.raises(OracleError) as err:
        load_audio(tmp_path)
    assert str(err.value) == f"{tmp_path}: not a regular file"


def test_text_file_named_wav(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is not audio\nsecond line\n")
    with pytest.raises(OracleError) as err:
        load_audio(p)
    assert_one_line(err, f"{p}: not a readable audio file (")


def test_empty_wav(tmp_path):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0, dtype=np.int16), 16000, subtype="PCM_16")
    with pytest.raises(OracleError) as err:
        load_audio(p)
    assert str(err.value) == f"{p}: empty audio (zero samples)"


@pytest.mark.parametrize("bad", ["NaN", "Inf"])
def test_non_finite_float_wav(tmp_path, bad):
    x = np.zeros(100, dtype=np.float32)
    x[3] = np.nan if bad == "NaN" else -np.inf
    x[7] = np.inf  # the NaN case also has an Inf later: NaN is reported first
    p = tmp_path / f"{bad}.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(OracleError) as err:
        load_audio(p)
    assert str(err.value) == f"{p}: contains {bad} samples (first at sample 3)"


def test_bad_sampling_rate(tmp_path):
    with pytest.raises(OracleError) as err:
        load_audio(tmp_path / "x.wav", sampling_rate=0)
    assert_one_line(err, f"{tmp_path / 'x.wav'}: sampling rate must be a positive integer")


# --- int16 quantization ------------------------------------------------------------------------


def _quantization_probe():
    rng = np.random.default_rng(6)
    steps = np.arange(-40, 40, dtype=np.float64)
    return np.concatenate(
        [
            rng.uniform(-2.0, 2.0, 20000),  # a quarter out of range: clipping
            rng.standard_normal(20000),
            1e-5 * rng.standard_normal(5000),  # tiny: a handful of LSBs either side of 0
            (steps + 0.5) / 32768.0,  # exact half steps: round(x*32768) and libsndfile disagree
            steps / 32768.0 - 2.0**-17,  # just below a step
            steps / 32768.0 + 1e-12,
            (steps + 0.5) / 2.0**31,  # rint ties at the int32 scale
            [1.0, -1.0, 32767.5 / 32768, -32768.5 / 32768, 1e30, -1e30, 2.0**-31, -(2.0**-31), 0.0, -0.0],
        ]
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_quantize_int16_equals_soundfile_round_trip(dtype):
    x = _quantization_probe().astype(dtype)
    q = quantize_int16(x)
    assert q.dtype == np.float64
    assert np.array_equal(q, soundfile_pcm16_round_trip(x))
    # and it is not the naive rule
    naive = np.clip(np.round(x.astype(np.float64) * 32768.0), -32768, 32767) / 32768.0
    assert (naive != q).sum() > 1000


def test_is_int16_exact():
    k = np.arange(-32768, 32768, 7) / 32768.0
    assert is_int16_exact(k) and is_int16_exact(k.astype(np.float32))
    assert not is_int16_exact(np.array([1.0]))  # +1.0 clips to 32767/32768
    assert not is_int16_exact(np.array([0.5 / 32768]))
    assert not is_int16_exact(np.array([np.nan]))
    assert is_int16_exact(quantize_int16(_quantization_probe()))


def test_write_wav_int16_round_trip(tmp_path):
    x = _quantization_probe()
    p = tmp_path / "q.wav"
    write_wav_int16(p, x)
    info = sf.info(p)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert np.array_equal(load_audio(p), quantize_int16(x))
    # byte for byte what soundfile's own float -> PCM_16 write produces
    q = tmp_path / "sf.wav"
    sf.write(q, x, 16000, format="WAV", subtype="PCM_16")
    assert p.read_bytes() == q.read_bytes()


def test_write_wav_int16_bad_path(tmp_path):
    p = tmp_path / "no_such_dir" / "x.wav"
    with pytest.raises(OracleError) as err:
        write_wav_int16(p, np.zeros(10))
    assert_one_line(err, f"{p}: cannot write WAV (")


# --- hostile input: one line, bounded memory, no hang ------------------------------------------


def test_fifo_does_not_hang(tmp_path):
    """A named pipe given as the audio file is refused at once (opened non-blocking, then fstat)."""
    p = tmp_path / "pipe.wav"
    os.mkfifo(p)
    old = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("load_audio hung on a FIFO")))
    signal.alarm(5)
    try:
        with pytest.raises(OracleError) as err:
            load_audio(p)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert str(err.value) == f"{p}: not a regular file"


def test_one_hz_wav_bounded_before_resampling(tmp_path):
    """32 KB declaring 16000 frames at 1 Hz would resample to 256 M samples: refused from the header."""
    p = tmp_path / "1hz.wav"
    sf.write(p, np.zeros(16000, np.int16), 1, subtype="PCM_16")
    assert p.stat().st_size < 33000
    tracemalloc.start()
    try:
        with pytest.raises(OracleError) as err:
            load_audio(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(err.value) == (f"{p}: audio is 16000.0 s long (16000 frames at 1 Hz), over the limit of 7200 s "
                              "(raise it with --max-audio-seconds)")
    assert peak < 1 << 20, peak  # nothing was decoded or resampled
    # the limit is the flag's: lowered, a 3 s file is refused too; a short 1 Hz file is fine
    q = tmp_path / "3s.wav"
    sf.write(q, np.zeros(48000, np.int16), 16000, subtype="PCM_16")
    with pytest.raises(OracleError) as err:
        load_audio(q, max_seconds=2.5)
    assert "over the limit of 2.5 s" in str(err.value)
    r = tmp_path / "10frames_1hz.wav"
    sf.write(r, np.zeros(10, np.int16), 1, subtype="PCM_16")
    assert load_audio(r).shape == (160000,)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "7200"])
def test_bad_max_seconds(tmp_path, bad):
    with pytest.raises(OracleError) as err:
        load_audio(tmp_path / "x.wav", max_seconds=bad)
    assert_one_line(err, f"{tmp_path / 'x.wav'}: maximum audio duration must be a positive number of seconds")


def test_raw_file_name(tmp_path):
    """soundfile guesses RAW from a ``.raw`` name and then demands its parameters (a TypeError); the
    loader detects the format from the bytes, as MC's in-memory read does."""
    good = tmp_path / "speech.raw"
    k = np.arange(-50, 50, dtype=np.int16)
    sf.write(good, k, 16000, format="WAV", subtype="PCM_16")
    assert np.array_equal(load_audio(good), k / 32768.0)
    junk = tmp_path / "junk.raw"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(OracleError) as err:
        load_audio(junk)
    assert str(err.value) == f"{junk}: not a readable audio file (Format not recognised.)"


def test_channel_mean_overflow(tmp_path):
    """Finite float32 samples whose float32 channel mean overflows (the reference averages in float32)."""
    p = tmp_path / "loud.wav"
    x = np.zeros((100, 2), np.float32)
    x[40:] = 3.0e38
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(OracleError) as err:
        load_audio(p)
    assert str(err.value) == (f"{p}: the channel average overflows float32 at sample 40 "
                              "(samples near ±3.4e38; the reference averages in float32)")


def test_resampler_overflow(tmp_path):
    p = tmp_path / "loud44k.wav"
    sf.write(p, np.full(1000, 3.3e38, np.float32), 44100, subtype="FLOAT")  # the filter's overshoot overflows
    with pytest.raises(OracleError) as err:
        load_audio(p)
    assert str(err.value) == f"{p}: resampling overflows float32 (samples near ±3.4e38; the reference resamples in float32)"


def test_double_beyond_float32(tmp_path):
    p = tmp_path / "d.wav"
    x = np.zeros(100)
    x[5] = 1e300
    sf.write(p, x, 16000, subtype="DOUBLE")
    with pytest.raises(OracleError) as err:
        load_audio(p)
    assert str(err.value) == f"{p}: contains Inf samples (first at sample 5; a 64-bit value beyond ±3.4e38 reads as Inf in float32)"


def test_rates_soxr_and_the_loader_refuse(tmp_path):
    # 0 Hz in the header: libsndfile itself refuses the file
    p = tmp_path / "r0.wav"
    sf.write(p, np.zeros(10, np.int16), 8000, subtype="PCM_16")
    b = bytearray(p.read_bytes())
    b[24:32] = bytes(8)  # fmt chunk: sample rate and byte rate 0
    p.write_bytes(bytes(b))
    with pytest.raises(OracleError) as err:
        load_audio(p)
    assert_one_line(err, f"{p}: not a readable audio file (")
    # above the accepted range
    q = tmp_path / "1mhz.wav"
    sf.write(q, np.zeros(100, np.int16), 1_000_000, subtype="PCM_16")
    with pytest.raises(OracleError) as err:
        load_audio(q)
    assert str(err.value) == f"{q}: sample rate 1000000 Hz is outside the accepted 1 .. 768000 Hz"
    # one sample at 44.1 kHz resamples to nothing
    r = tmp_path / "one.wav"
    sf.write(r, np.zeros(1, np.int16), 44100, subtype="PCM_16")
    with pytest.raises(OracleError) as err:
        load_audio(r)
    assert str(err.value) == f"{r}: too short to resample: 1 frame(s) at 44100 Hz give no sample at 16000 Hz"


def test_reader_blocks_are_bounded(tmp_path):
    """A 20 s, 6-channel 96 kHz file is read in blocks of 2^20 values: the loader's traced peak is the
    16 kHz result plus a few blocks, far below the 46 MB the whole float32 file would take."""
    p = tmp_path / "long96k6ch.wav"
    rng = np.random.default_rng(11)
    sf.write(p, (0.1 * rng.standard_normal((96000 * 20, 6))).astype(np.float32), 96000, subtype="FLOAT")
    tracemalloc.start()
    try:
        y = load_audio(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert y.shape == (320000,)
    assert peak < 24 << 20, peak


@pytest.mark.parametrize("stream", [False, True])
def test_cli_limits_and_fifo(tmp_path, capsys, stream):
    """Through ``voxtral-oracle transcribe``: the duration flag and a FIFO give one line, exit 2, no output."""
    from oracle import builtin
    from oracle_tools.cli import main

    mode = ["--stream"] if stream else []
    p = tmp_path / "3s.wav"
    sf.write(p, np.zeros(48000, np.int16), 16000, subtype="PCM_16")
    assert main(["transcribe", str(builtin.tiny_checkpoint()), str(p), "--max-audio-seconds", "2", *mode]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.strip().endswith("over the limit of 2 s (raise it with --max-audio-seconds)"), err
    fifo = tmp_path / "live.wav"
    os.mkfifo(fifo)
    assert main(["transcribe", str(builtin.tiny_checkpoint()), str(fifo), *mode]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"voxtral-oracle transcribe: error: {fifo}: not a regular file\n"


def test_offline_memory_is_checked_before_the_stft(tmp_path):
    """Fuzz case 7525 (seed 0): a 0.5 s WAV whose header says 3 Hz is 44 minutes at 16 kHz. Under a 3 GiB
    address-space cap, offline transcription would need ~4 GiB: one line before the STFT allocates it,
    pointing at --stream, instead of a MemoryError."""
    import subprocess
    import sys

    from oracle import builtin

    p = tmp_path / "3hz.wav"
    sf.write(p, (np.sin(np.arange(8000) / 7.0) * 8000).astype(np.int16), 3, subtype="PCM_16")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30));"
            "from oracle_tools.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "transcribe", str(builtin.tiny_checkpoint()), str(p), "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert "offline transcription of 44 min of audio needs about" in r.stderr and "use --stream" in r.stderr
