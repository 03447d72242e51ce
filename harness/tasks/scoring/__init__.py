"""Pure scoring functions (no model needed): LongBench, L-Eval, PG19 perplexity and pass-key/needle aggregation."""
