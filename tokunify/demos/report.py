"""The demo's report: ``report.html`` with metrics, speech-LM benchmark tables, matplotlib figures
(per-task training loss, spectrograms) and the audio samples, all inlined in one file."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from tokunify.core.fsio import atomic_write_text

METRIC_KEYS = [
    "asr_wer", "asr_cer", "asr_wer_unseen_voice", "tts_roundtrip_wer", "resynth_unit_error", "baseline_resynth_unit_error",
    "resynth_frame_error", "baseline_resynth_frame_error", "s2s_exact_match", "s2s_wer", "train_loss_first", "train_loss_last",
    "train_steps", "n_train_utts", "n_test_utts", "elapsed_s",
]  # fmt: skip
SLM_KEYS = [
    ("lexical", "slm_lexical_acc"),
    ("syntactic", "slm_syntactic_acc"),
    ("topic", "slm_topic_acc"),
]


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot: no global state, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png_b64(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode()


def loss_figure(log: list[dict[str, Any]]) -> str | None:
    """Per-task training loss against the step, as base64 PNG (None without a loss log)."""
    rows = [r for r in log if "loss" in r]
    tasks = sorted({k[5:] for r in rows for k in r if k.startswith("loss/")})
    if not rows or not tasks:
        return None
    fig = _figure(7.5, 3.6)
    ax = fig.add_subplot()
    for t in tasks:
        pts = [(r["step"], r[f"loss/{t}"]) for r in rows if f"loss/{t}" in r]
        ax.plot(*zip(*pts, strict=True), label=t, linewidth=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title("Training loss per task")
    ax.grid(alpha=0.3)
    ax.legend(title="task", fontsize=8)
    return _png_b64(fig)


def spectrogram_figure(wav: np.ndarray, sr: int, title: str) -> str:
    """Log-magnitude STFT (dB, 80 dB range) with time (s) and frequency (kHz) axes, as base64 PNG."""
    import torch

    x = torch.from_numpy(np.asarray(wav, np.float32))
    n_fft, hop = 512, max(1, sr // 100)
    if len(x) < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - len(x)))
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    db = (20 * torch.log10(spec + 1e-5)).numpy()  # [F, T]
    db = np.maximum(db, db.max() - 80)
    fig = _figure(5.0, 2.6)
    ax = fig.add_subplot()
    im = ax.imshow(db, origin="lower", aspect="auto", cmap="magma",
                   extent=(0.0, db.shape[1] * hop / sr, 0.0, sr / 2000))  # fmt: skip
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (kHz)")
    ax.set_title(title[:60], fontsize=9)
    fig.colorbar(im, ax=ax, label="dB")
    return _png_b64(fig)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def slm_table(metrics: dict[str, Any]) -> str:
    """Trained vs untrained (same bundle before training) accuracies, with the per-phenomenon rows."""
    if "slm_lexical_acc" not in metrics:
        return "<p>no speech-LM benchmarks in this run</p>"
    rows = [
        f"<tr><td>{name}</td><td>{_fmt(metrics[key])}</td><td>{_fmt(metrics.get('baseline_' + key))}</td>"
        f"<td>{_fmt(metrics.get('slm_n_pairs', {}).get(name))}</td></tr>"
        for name, key in SLM_KEYS
    ]
    base = metrics.get("baseline_slm_syntactic_by_type", {})
    rows += [
        f"<tr><td>&nbsp;&nbsp;syntactic: {html.escape(t)}</td><td>{_fmt(v)}</td><td>{_fmt(base.get(t))}</td><td></td></tr>"
        for t, v in metrics.get("slm_syntactic_by_type", {}).items()
    ]
    conv = metrics.get("slm_conventions", {})
    return (
        "<table><tr><th>benchmark</th><th>trained</th><th>untrained (chance)</th><th>pairs</th></tr>"
        + "".join(rows)
        + f"</table><p>Pair accuracy P[LL(positive) &gt; LL(negative)], ties 0.5; conventions: {html.escape(str(conv))}</p>"
    )


def write_report(
    out: Path, metrics: dict[str, Any], log: list[dict[str, Any]], samples: list[dict[str, Any]]
) -> Path:
    import soundfile as sf

    rows = "".join(
        f"<tr><td>{k}</td><td>{_fmt(metrics[k])}</td></tr>" for k in METRIC_KEYS if k in metrics
    )
    spec_html, audio_html = [], []
    picked: set[str] = set()
    for smp in samples:
        data = (out / "samples" / smp["wav"]).read_bytes()
        asr = f" — ASR: {html.escape(smp['asr'])}" if smp.get("asr") is not None else ""
        audio_html.append(f"<p><b>{smp['kind']}</b>: {html.escape(smp['text'])}{asr}<br>"
                          f'<audio controls src="data:audio/wav;base64,{base64.b64encode(data).decode()}"></audio></p>')  # fmt: skip
        if smp["kind"] in ("input", "resynthesis", "tts") and smp["kind"] not in picked:
            picked.add(smp["kind"])
            wav, sr = sf.read(io.BytesIO(data), dtype="float32")
            png = spectrogram_figure(wav, sr, f"{smp['kind']}: {smp['text']}")
            spec_html.append(f"<figure><img src='data:image/png;base64,{png}' alt='spectrogram of {smp['kind']}'></figure>")  # fmt: skip
    loss = loss_figure(log)
    loss_html = f"<img src='data:image/png;base64,{loss}' alt='training loss per task'>" if loss else "<p>no loss log</p>"  # fmt: skip
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tokunify demo</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}td,th{{padding:2px 10px;border-bottom:1px solid #eee;text-align:left}}figure{{display:inline-block;margin:8px}}</style></head>
<body><h1>tokunify offline demo ({metrics.get("mode", "")})</h1>
<p>espeak-ng corpus; mel units (MFCC, ±4 frames spliced, LDA onto espeak's phone alignment, k-means); a from-scratch model
trained on six tasks; a CPU vocoder (unit → log-mel conv net, fast Griffin-Lim), compared with the untrained baseline
(mean log-mel per unit, the same Griffin-Lim).
ASR, TTS and resynthesis are measured on held-out sentences (test_seen: training voices; asr_wer_unseen_voice: a voice never
seen in training). S2S answers are facts (what color is an orange) that only training can teach, so test_s2s asks training
questions spoken by the held-out voice: the audio is unseen, the question text is not. The TTS round-trip WER is circular
(the model's own ASR scores the model's own TTS).</p>
<h2>Metrics</h2><table>{rows}</table>
<h2>Speech-LM minimal pairs (held-out words and sentences, synth-minimal-pairs)</h2>{slm_table(metrics)}
<h2>Training loss per task</h2>{loss_html}
<h2>Spectrograms</h2>{"".join(spec_html)}
<h2>Samples</h2>{"".join(audio_html)}
</body></html>"""
    return atomic_write_text(out / "report.html", page)
