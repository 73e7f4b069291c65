"""The experiment service: A/B experiments on images (variants of a template
and their weights, the state machine draft -> running <-> paused -> completed
-> archived), the counters of impressions, clicks and conversions that a later
step fills, and their statistics (Beta-Bernoulli, Monte Carlo)."""
