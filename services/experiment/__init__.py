"""The experiment service: A/B experiments on images (variants of a template
and their weights, the state machine draft -> running <-> paused -> completed
-> archived), visitors' assignment by weight epochs, exact counters of
impressions, clicks and conversions (a JetStream consumer), their statistics
(Beta-Bernoulli, Monte Carlo), the bandit and winner_ready."""
