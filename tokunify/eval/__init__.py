"""Evaluation yardsticks: generative metrics (WER, TTS round trip, resynthesis; :mod:`~tokunify.eval.generative`)
and likelihood benchmarks of spoken LMs (sWUGGY, sBLIMP, tStoryCloze; :mod:`~tokunify.eval.slm`)."""
