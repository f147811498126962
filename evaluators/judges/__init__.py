"""Judges: models that rate responses where no human did (config: `judges:`, `driftloop.core.config_judges`).

- `backends`: `make_judge(spec, base_dir)`, a judge that scores items: `hf` (a local causal LM,
  log-probability of the verdict words), `openai` (an OpenAI-compatible endpoint, the same
  scoring through its /completions log-probs), `reference` (lexical similarity to a correction);
- `scoring`: judge a window's events through the cache, within the call budget;
- `calibration`: agreement with the humans (Cohen's kappa with a bootstrap interval);
- `estimate`: prediction-powered estimates of the human metrics and the trust finding;
- `window_cache`: judged windows kept by key, so an unchanged reference is judged once.
"""
